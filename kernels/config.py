"""The one place numba compiler options are set for every kernel."""
import numba

#: options for serial kernels that release the GIL so threads can run them together
JIT = dict(nogil=True, cache=True, fastmath=False)

njit = numba.njit


def kernel(fn):
    """Decorate ``fn`` as a cached, GIL-free numba kernel."""
    return numba.njit(**JIT)(fn)
