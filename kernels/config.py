"""The one place numba compiler options and the compilation cache are set for every kernel.

Cache: numba caches each compiled function keyed on its own source file, but inlines the
kernels it calls; after an edit to ``kl.py``, the cached ``newton.fit_source`` would keep
the old KL.  So the cache directory is keyed by a hash of every ``kernels/*.py`` source:
``$NUMBA_CACHE_DIR/celeste-<hash>`` (default base ``~/.cache/celeste/numba``).  Any change
to a kernel source starts a fresh cache; unchanged sources reuse it across runs, processes
and MPI ranks.
"""
import glob
import hashlib
import os

import numba


def _source_hash():
    h = hashlib.sha256()
    here = os.path.dirname(os.path.abspath(__file__))
    for path in sorted(glob.glob(os.path.join(here, "*.py"))):
        h.update(os.path.basename(path).encode())
        with open(path, "rb") as f:
            h.update(f.read())
    h.update(numba.__version__.encode())
    return h.hexdigest()[:16]


def _cache_dir():
    base = os.environ.get("NUMBA_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "celeste", "numba")
    return os.path.join(base, f"celeste-{_source_hash()}")


numba.config.CACHE_DIR = _cache_dir()

#: options for serial kernels that release the GIL so threads can run them together;
#: error_model="numpy": a division by zero gives inf/nan (checked by callers), never an exception
JIT = dict(nogil=True, cache=True, fastmath=False, error_model="numpy")

njit = numba.njit


def kernel(fn):
    """Decorate ``fn`` as a cached, GIL-free numba kernel."""
    return numba.njit(**JIT)(fn)


def inline_kernel(fn):
    """Decorate ``fn`` as a kernel that numba inlines into its callers (``inline="always"``).

    For the small helpers of the pixel loops (profiles, per-pixel terms): called as separate
    functions they pass their structured arguments by value on every pixel, which cost 60% of
    the likelihood's time (measured with ``python bench/kernels.py``).
    """
    return numba.njit(inline="always", **JIT)(fn)
