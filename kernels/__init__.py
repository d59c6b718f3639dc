"""numba kernels of the Celeste model: pure functions on arrays (no objects, no I/O).

Compiler flags live in :mod:`kernels.config`; parameter indices in :mod:`kernels.params`.
"""
