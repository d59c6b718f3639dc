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
region : array of 4 numbers, required
    ``[ra_min, ra_max, dec_min, dec_max]`` in ICRS degrees, with ra_min and ra_max in
    [0, 360] and different (``ra_min > ra_max`` is a region crossing RA = 0) and
    ``-90 <= dec_min < dec_max <= 90``.
data_dir, out, run_dir, residual_png : string (path)
    Survey data folder, output catalog, run (checkpoint) directory, residual
    image to write.
threads : integer >= 1
    Threads per process.
box_arcsec : number > 0
    Side of the inference boxes in arcseconds.
overlap_arcsec : number >= 0
    Overlap of neighbouring boxes in arcseconds; less than ``box_arcsec``.
init : string
    How to get the initial catalog.  A bare lower-case word (letters, digits,
    ``_``, ``-``; e.g. ``"sep"``) is passed on unchanged as a method name; anything
    else (containing ``/`` or ``.``) is taken as a catalog path and resolved by
    the path rule below.
bands : string or array of strings
    Subset of ``"ugriz"``, e.g. ``"gri"`` or ``["g", "r", "i"]``; returned as a
    tuple in wavelength order.
overwrite : boolean
max_passes : integer >= 1
time_limit : number of seconds > 0, or a Slurm-style string
    ``"MM:SS"``, ``"HH:MM:SS"`` or ``"D-HH:MM:SS"``; returned as seconds (float).

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
import math
import os
import re
import tomllib
from pathlib import Path

from celeste import BANDS
from celeste.errors import ConfigError

#: every key a job file may hold, with the kind of value expected
JOB_KEYS = {
    "region": "array of 4 numbers [ra_min, ra_max, dec_min, dec_max] (deg)",
    "data_dir": "path",
    "out": "path",
    "run_dir": "path",
    "residual_png": "path",
    "threads": "integer >= 1",
    "box_arcsec": "number > 0",
    "overlap_arcsec": "number >= 0",
    "init": "method name or catalog path",
    "bands": "subset of 'ugriz'",
    "overwrite": "boolean",
    "time_limit": "seconds > 0 or 'HH:MM:SS'",
    "max_passes": "integer >= 1",
}

_PATH_KEYS = ("data_dir", "out", "run_dir", "residual_png")
_METHOD_RE = re.compile(r"^[a-z][a-z0-9_-]*$")
_TIME_RE = re.compile(r"^(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+(?:\.\d*)?)$")


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
        The options present in the file, keyed as in :data:`JOB_KEYS`, with
        checked values: ``region`` a tuple of 4 floats (deg); paths absolute
        ``str`` (resolved by the relative-path rule); ``threads`` and
        ``max_passes`` int; ``box_arcsec``, ``overlap_arcsec`` and
        ``time_limit`` (seconds) float; ``bands`` a tuple of band names in
        wavelength order; ``overwrite`` bool; ``init`` a method name or an
        absolute path.  Keys absent from the file are absent from the dict.

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

    unknown = sorted(set(raw) - set(JOB_KEYS))
    if unknown:
        raise ConfigError(
            f"job file {where}: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"allowed keys: {', '.join(JOB_KEYS)}"
        )
    if "region" not in raw:
        raise ConfigError(f"job file {where}: missing required key 'region' "
                          "= [ra_min, ra_max, dec_min, dec_max]")

    root = project_root(path)
    opts = {}
    for key, value in raw.items():
        opts[key] = _CHECKS[key](value, key, where, root)
    if "box_arcsec" in opts and "overlap_arcsec" in opts:
        if opts["overlap_arcsec"] >= opts["box_arcsec"]:
            raise ConfigError(
                f"job file {where}: key 'overlap_arcsec' ({opts['overlap_arcsec']}) "
                f"must be less than 'box_arcsec' ({opts['box_arcsec']})"
            )
    return opts


def parse_time_limit(value, key="time_limit", where="argument"):
    """Convert a time limit to seconds.

    Parameters
    ----------
    value : int, float or str
        Seconds (a number, or a string of digits such as ``"3600"`` as given
        on the command line), or ``"MM:SS"``, ``"HH:MM:SS"``, ``"D-HH:MM:SS"``
        (the forms Slurm's ``--time`` accepts with seconds).
    key, where : str
        Names used in the error message (option and file).

    Returns
    -------
    float
        Seconds, > 0.

    Raises
    ------
    ConfigError
        Not a positive finite number of seconds or a recognised string.
    """
    if isinstance(value, str) and re.fullmatch(r"\s*\d+(?:\.\d*)?\s*", value):
        total = float(value)  # plain seconds, as given on the command line
    elif isinstance(value, str):
        m = _TIME_RE.match(value.strip())
        if not m:
            raise ConfigError(f"{where}: key {key!r} = {value!r} is not a time "
                              "(seconds, 'MM:SS', 'HH:MM:SS' or 'D-HH:MM:SS')")
        days, hours, minutes, seconds = m.groups()
        if days is not None and hours is None:
            raise ConfigError(f"{where}: key {key!r} = {value!r}: 'D-' needs 'HH:MM:SS'")
        if int(minutes) >= 60 and hours is not None or float(seconds) >= 60:
            raise ConfigError(f"{where}: key {key!r} = {value!r}: minutes and seconds must be < 60")
        total = (int(days or 0) * 86400 + int(hours or 0) * 3600
                 + int(minutes) * 60 + float(seconds))
    else:
        total = _number(value, key, where)
    if not total > 0:
        raise ConfigError(f"{where}: key {key!r} must be > 0 seconds, got {value!r}")
    return float(total)


# ---------------------------------------------------------------- checks ---

def _number(value, key, where):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: key {key!r} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{where}: key {key!r} must be finite, got {value!r}")
    return float(value)


def _integer(value, key, where, minimum):
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: key {key!r} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{where}: key {key!r} must be >= {minimum}, got {value}")
    return int(value)


def _resolve(value, key, where, root):
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: key {key!r} must be a non-empty path string, got {value!r}")
    p = Path(os.path.expanduser(value))
    if not p.is_absolute():
        p = root / p
    return os.path.normpath(p)


def _check_region(value, key, where, root):
    if not isinstance(value, list) or len(value) != 4:
        raise ConfigError(f"{where}: key {key!r} must be [ra_min, ra_max, dec_min, dec_max], "
                          f"got {value!r}")
    ra_min, ra_max, dec_min, dec_max = (_number(v, key, where) for v in value)
    if not (0.0 <= ra_min <= 360.0 and 0.0 <= ra_max <= 360.0 and ra_min != ra_max):
        raise ConfigError(f"{where}: key {key!r}: need ra_min, ra_max in [0, 360] deg and different "
                          f"(ra_min > ra_max crosses RA = 0), got ra_min={ra_min}, ra_max={ra_max}")
    if not -90.0 <= dec_min < dec_max <= 90.0:
        raise ConfigError(f"{where}: key {key!r}: need -90 <= dec_min < dec_max <= 90 deg, "
                          f"got dec_min={dec_min}, dec_max={dec_max}")
    return (ra_min, ra_max, dec_min, dec_max)


def _check_positive(value, key, where, root):
    v = _number(value, key, where)
    if not v > 0:
        raise ConfigError(f"{where}: key {key!r} must be > 0, got {value!r}")
    return v


def _check_nonneg(value, key, where, root):
    v = _number(value, key, where)
    if v < 0:
        raise ConfigError(f"{where}: key {key!r} must be >= 0, got {value!r}")
    return v


def _check_init(value, key, where, root):
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: key {key!r} must be a method name or a catalog path, "
                          f"got {value!r}")
    if _METHOD_RE.match(value):
        return value
    return _resolve(value, key, where, root)


def _check_bands(value, key, where, root):
    if isinstance(value, str):
        names = list(value)
    elif isinstance(value, list) and all(isinstance(b, str) for b in value):
        names = list(value)
    else:
        raise ConfigError(f"{where}: key {key!r} must be a string like 'gri' or a list of "
                          f"band names, got {value!r}")
    bad = [b for b in names if b not in BANDS]
    if bad or not names:
        raise ConfigError(f"{where}: key {key!r}: bands must be among {''.join(BANDS)!r}, "
                          f"got {value!r}")
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: key {key!r}: repeated band in {value!r}")
    return tuple(b for b in BANDS if b in names)


def _check_bool(value, key, where, root):
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: key {key!r} must be true or false, got {value!r}")
    return value


_CHECKS = {
    "region": _check_region,
    "data_dir": _resolve,
    "out": _resolve,
    "run_dir": _resolve,
    "residual_png": _resolve,
    "threads": lambda v, k, w, r: _integer(v, k, w, 1),
    "max_passes": lambda v, k, w, r: _integer(v, k, w, 1),
    "box_arcsec": _check_positive,
    "overlap_arcsec": _check_nonneg,
    "init": _check_init,
    "bands": _check_bands,
    "overwrite": _check_bool,
    "time_limit": lambda v, k, w, r: parse_time_limit(v, k, w),
}
