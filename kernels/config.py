"""The one place numba compiler options are set for every kernel."""
import numba

#: options for serial kernels that release the GIL so threads can run them together;
#: error_model="numpy": a division by zero gives inf/nan (checked by callers), never an exception
JIT = dict(nogil=True, cache=True, fastmath=False, error_model="numpy")

njit = numba.njit


def kernel(fn):
    """Decorate ``fn`` as a cached, GIL-free numba kernel."""
    return numba.njit(**JIT)(fn)
