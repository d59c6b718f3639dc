"""The package's exception hierarchy.

Which to raise:

* :class:`DataError` - an input file or its content is unusable (missing,
  truncated, corrupt, wrong shape, NaN where numbers are needed).  The message
  names the file (and the band or HDU when it helps).
* :class:`ConfigError` - the user's request is inconsistent (bad region, bad
  option values, an existing output without ``--overwrite``, a run directory
  made with other inputs).  The message names the argument.
* :class:`NumericalError` - the model or optimizer met a state it cannot
  continue from (non-finite ELBO at the starting point, a PSF mixture that
  degenerates with every number of components, :func:`celeste.images.psf_mixture`;
  a prior mixture covariance that loses positive definiteness, :mod:`celeste.gmm`).
  For one source's non-finite ELBO, :class:`celeste.infer.BoxModel` catches it,
  logs it and flags the source (catalog flag 32) instead of failing the box.

All derive from :class:`CelesteError`, which the command-line tools catch to
print a one-line message and exit with status 2.
"""


class CelesteError(Exception):
    """Base class of every error raised on purpose by celeste."""


class DataError(CelesteError):
    """An input file or its content cannot be used; the message names the file."""


class ConfigError(CelesteError):
    """The request (arguments, job file, run directory) is inconsistent."""


class NumericalError(CelesteError):
    """The model or optimizer cannot proceed from the current numbers."""
