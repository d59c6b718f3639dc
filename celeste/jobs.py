"""Job files: a run of ``celeste-infer`` written down as a small TOML file.

A job file holds the same options as the command line, one top-level key per
option (``region`` for ``--region``, ``run_dir`` for ``--run-dir``, ...)::

    # jobs/sample.toml
    region = [323.35, 323.38, -0.76, -0.72]   # ra_min, ra_max, dec_min, dec_max (deg)
    data_dir = "data/sdss"
    out = "out/sample.fits"
    threads = 2

Keys
----
Every option of ``celeste-infer`` (:data:`celeste.options.OPTIONS`; ``celeste-infer --help``
lists them with units and defaults) is a key: the flag's name with ``_`` for ``-``.  The
values are checked by the same code as the flags, and come back converted: ``region`` a
tuple of 4 floats (deg) with ra_min, ra_max in [0, 360] and different (``ra_min > ra_max``
is a region crossing RA = 0) and ``-90 <= dec_min < dec_max <= 90``; ``bands`` and
``detect_bands`` (``"gri"`` or ``["g", "r", "i"]``) a tuple of band indices in wavelength
order; ``init`` None for ``"sep"`` (detection), else a path; ``time_limit`` (seconds, or
``"MM:SS"``, ``"HH:MM:SS"``, ``"D-HH:MM:SS"``) seconds as a float; integers stay integers
(``threads = 2.0`` is refused) and numbers become floats.  ``region`` is required.

Any other key is an error (a misspelt option must not be silently ignored).

Relative paths
--------------
Job files live in ``<project>/jobs/``; a relative path in a job file is
resolved against the *parent of the job file's directory* (the project root),
not against the directory the command runs in.  So ``data_dir = "data/sdss"``
in ``jobs/sample.toml`` means ``<project>/data/sdss`` whether the run starts
from the project root, a Slurm submit directory or elsewhere.  ``~`` is
expanded; absolute paths are kept as written.

Options given on the command line override the job file's values (the CLI
merges them; this module only reads and checks the file).
"""
from pathlib import Path

import tomllib

from celeste.errors import ConfigError
from celeste.options import BY_NAME, check_job_values

#: every key a job file may hold, with the kind of value expected
JOB_KEYS = {name: opt.kind.doc for name, opt in BY_NAME.items()}


def project_root(job_path):
    """Directory that relative paths in a job file are resolved against.

    Parameters
    ----------
    job_path : str or os.PathLike
        Path of the job file (e.g. ``jobs/sample.toml``).

    Returns
    -------
    pathlib.Path
        The absolute parent of the job file's directory.
    """
    return Path(job_path).expanduser().resolve().parent.parent


def load_job(path):
    """Read and check a job file.

    Parameters
    ----------
    path : str or os.PathLike
        TOML job file (see the module docstring for the keys).

    Returns
    -------
    dict
        The options present in the file, by name, with checked values (see the module
        docstring); paths are absolute (resolved by the relative-path rule).  Keys absent
        from the file are absent from the dict.

    Raises
    ------
    ConfigError
        The file is missing, unreadable or not valid TOML, a key is unknown or
        ``region`` is missing, or a value has the wrong type or range.  The
        message names the file and the key.
    """
    path = Path(path)
    where = str(path)
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"job file {where}: not found") from None
    except IsADirectoryError:
        raise ConfigError(f"job file {where}: is a directory, not a TOML file") from None
    except OSError as e:
        raise ConfigError(f"job file {where}: cannot read ({e.strerror})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"job file {where}: not valid TOML ({e})") from None

    opts = check_job_values(raw, where, project_root(path))
    if "region" not in opts:
        raise ConfigError(f"job file {where}: missing required key 'region' "
                          "= [ra_min, ra_max, dec_min, dec_max]")
    return opts
