"""Every option of a run, declared once.

An option is a field of one of the dataclasses below, declared with :func:`option`: the
field holds the default, and its metadata the kind of value (which parses it from the
command line and checks it from anywhere), the unit, a help sentence, and whether it
changes results (``manifest=True``: it is recorded in the run directory's manifest, so a
rerun with another value is refused unless ``--restart``).  The field's name is the
option's name: the key of a job file (:mod:`celeste.jobs`) and, with ``-`` for ``_``, the
command-line flag (``max_passes`` is ``--max-passes``).

Generated from these declarations:

* the ``celeste-infer`` flags, grouped as the dataclasses are (:func:`add_arguments`);
* the keys a job file may hold and their checks (:func:`celeste.jobs.load_job`);
* the merge of job file and flags (flags win), the defaults that depend on other values,
  and the checks that involve several options, done once per run (:func:`resolve`);
* the options each stage receives: :class:`ImageOptions` (the images of a box),
  :class:`DetectOptions` (the initial catalog), :class:`InferOptions` (inference in a box),
  gathered in :class:`JobOptions` with the region, data and box grid;
* the manifest (:meth:`JobOptions.manifest_options`).

Flags that act on the invocation rather than define the run (``--job``, ``--restart``,
``--no-progress``, ``-v``, ``--version``) are not options: a job file cannot hold them.

Adding an option means adding one field here and reading it where it is used;
``tests/test_options.py`` fails until the new option has a sample value there.
"""
import argparse
import math
import os
import re
from dataclasses import MISSING, dataclass, field, fields

from . import BANDS
from .errors import ConfigError
from .psf import MAX_COMPONENTS

#: values of ``init`` that mean "detect sources with SEP" rather than a catalog path
DETECTION_METHODS = ("sep", "detect")

_TIME_RE = re.compile(r"^(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+(?:\.\d*)?)$")


# ------------------------------------------------------------------ kinds of value

class Kind:
    """How values of an option are parsed from the command line and checked.

    ``label`` in the methods names where the value came from in error messages: the flag
    (``--max-passes``) or the job file and key (``job file jobs/x.toml: key 'max_passes'``).
    """

    #: what a valid value looks like (for job-file documentation and errors)
    doc = ""
    metavar = None
    nargs = None

    def from_text(self, text, label):
        """The value of a command-line argument (a string, or a list for ``nargs``)."""
        return self.check(text, label)

    def check(self, value, label, root=None):
        """The checked value (converted to its Python type).

        Parameters
        ----------
        value : object
            As given (TOML types from a job file, Python values from code).
        label : str
            Where the value came from, for messages.
        root : pathlib.Path or None
            Directory relative paths are resolved against (None keeps them as given).

        Raises
        ------
        ConfigError
            The value has the wrong type or range; the message starts with ``label``.
        """
        raise NotImplementedError


def _require(ok, label, what, value):
    """``value`` if ``ok``, else ConfigError "<label> must be <what>, got <value>"."""
    if not ok:
        raise ConfigError(f"{label} must be {what}, got {value!r}")
    return value


def _number(value, label):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{label} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{label} must be finite, got {value!r}")
    return float(value)


class Number(Kind):
    """A finite number within bounds: ``gt`` (>), ``ge`` (>=), ``le`` (<=) when given.

    ``Number(...)`` takes floats (integers become floats); :func:`Int` makes the integer kind,
    which refuses non-integers (``threads = 2.0`` in a job file is an error).
    """

    metavar = "X"

    def __init__(self, gt=None, ge=None, le=None, integer=False):
        self.gt, self.ge, self.le, self.integer = gt, ge, le, integer
        self.name = "an integer" if integer else "a number"
        bounds = [f"> {gt}" if gt is not None else "", f">= {ge}" if ge is not None else "",
                  f"<= {le}" if le is not None else ""]
        self.doc = " ".join(["integer" if integer else "number"] + [b for b in bounds if b])
        if integer:
            self.metavar = "N"

    def from_text(self, text, label):
        try:
            value = (int if self.integer else float)(text)
        except ValueError:
            raise ConfigError(f"{label} must be {self.name}, got {text!r}") from None
        return self.check(value, label)

    def check(self, value, label, root=None):
        if self.integer and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"{label} must be an integer, got {value!r}")
        v = int(value) if self.integer else _number(value, label)
        for bound, ok, op in ((self.gt, lambda b: v > b, ">"), (self.ge, lambda b: v >= b, ">="),
                              (self.le, lambda b: v <= b, "<=")):
            if bound is not None and not ok(bound):
                raise ConfigError(f"{label} must be {op} {bound}, got {value!r}")
        return v


def Int(lo=None, hi=None):  # noqa: N802 - reads as a kind, like Number
    """An integer in [lo, hi] (either bound optional)."""
    return Number(ge=lo, le=hi, integer=True)


class Flag(Kind):
    """true or false (``--name`` / ``--no-name`` on the command line)."""

    doc = "true or false"

    def check(self, value, label, root=None):
        return _require(isinstance(value, bool), label, "true or false", value)


class Path(Kind):
    """A file or directory path; relative paths of job files are resolved against ``root``."""

    doc = "path"
    metavar = "PATH"

    def check(self, value, label, root=None):
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{label} must be a non-empty path, got {value!r}")
        if root is None:
            return value
        p = os.path.expanduser(value)
        return os.path.normpath(p if os.path.isabs(p) else os.path.join(root, p))


class Init(Path):
    """A catalog path, or ``sep`` (also ``detect``) for detection, returned as None."""

    doc = "'sep' or a catalog path"
    metavar = "FILE"

    def check(self, value, label, root=None):
        if isinstance(value, str) and value.strip() in DETECTION_METHODS:
            return None
        return super().check(value, label, root)


class Region(Kind):
    """(ra_min, ra_max, dec_min, dec_max) in degrees; ra_min > ra_max crosses RA = 0."""

    doc = "[ra_min, ra_max, dec_min, dec_max] (deg)"
    metavar = ("RA_MIN", "RA_MAX", "DEC_MIN", "DEC_MAX")
    nargs = 4

    def from_text(self, text, label):
        try:
            values = [float(v) for v in text]
        except ValueError:
            raise ConfigError(f"{label} must be 4 numbers RA_MIN RA_MAX DEC_MIN DEC_MAX, got {text!r}") from None
        return self.check(values, label)

    def check(self, value, label, root=None):
        if not isinstance(value, (list, tuple)) or len(value) != 4:
            raise ConfigError(f"{label} must be [ra_min, ra_max, dec_min, dec_max], got {value!r}")
        ra_min, ra_max, dec_min, dec_max = (_number(v, label) for v in value)
        if not (0.0 <= ra_min <= 360.0 and 0.0 <= ra_max <= 360.0 and ra_min != ra_max):
            raise ConfigError(f"{label}: need RA_MIN, RA_MAX in [0, 360] deg and different (RA_MIN > RA_MAX "
                              f"crosses RA = 0), got RA_MIN={ra_min}, RA_MAX={ra_max}")
        if not -90.0 <= dec_min < dec_max <= 90.0:
            raise ConfigError(f"{label}: need -90 <= DEC_MIN < DEC_MAX <= 90 deg, "
                              f"got DEC_MIN={dec_min}, DEC_MAX={dec_max}")
        return (ra_min, ra_max, dec_min, dec_max)


class Bands(Kind):
    """A subset of u g r i z (``"gri"`` or ``["g", "r", "i"]``), as band indices in wavelength order."""

    doc = "subset of 'ugriz'"
    metavar = "BANDS"

    def check(self, value, label, root=None):
        if isinstance(value, str) or (isinstance(value, (list, tuple)) and all(isinstance(b, str) for b in value)):
            names = list(value)
        else:
            raise ConfigError(f"{label} must be a string like 'gri' or a list of band names, got {value!r}")
        if not names or any(b not in BANDS for b in names):
            raise ConfigError(f"{label} {value!r}: use letters from {''.join(BANDS)!r}")
        if len(set(names)) != len(names):
            raise ConfigError(f"{label}: repeated band in {value!r}")
        return tuple(sorted(BANDS.index(b) for b in names))


class Band(Kind):
    """One band letter of u g r i z."""

    doc = "one of u g r i z"
    metavar = "BAND"

    def check(self, value, label, root=None):
        return _require(isinstance(value, str) and value in BANDS, label, f"one of {' '.join(BANDS)}", value)


class Seconds(Kind):
    """Seconds > 0, or a Slurm-style time ``MM:SS``, ``HH:MM:SS``, ``D-HH:MM:SS``; returned in seconds."""

    doc = "seconds > 0 or 'HH:MM:SS'"
    metavar = "S"

    def check(self, value, label, root=None):
        return parse_time_limit(value, label)


def parse_time_limit(value, label="time_limit"):
    """Convert a time limit to seconds.

    Parameters
    ----------
    value : int, float or str
        Seconds (a number, or a string of digits such as ``"3600"`` as given on the
        command line), or ``"MM:SS"``, ``"HH:MM:SS"``, ``"D-HH:MM:SS"`` (the forms Slurm's
        ``--time`` accepts with seconds).
    label : str
        Where the value came from, for messages.

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
        total = float(value)
    elif isinstance(value, str):
        m = _TIME_RE.match(value.strip())
        if not m:
            raise ConfigError(f"{label} = {value!r} is not a time (seconds, 'MM:SS', 'HH:MM:SS' or 'D-HH:MM:SS')")
        days, hours, minutes, seconds = m.groups()
        if days is not None and hours is None:
            raise ConfigError(f"{label} = {value!r}: 'D-' needs 'HH:MM:SS'")
        if int(minutes) >= 60 and hours is not None or float(seconds) >= 60:
            raise ConfigError(f"{label} = {value!r}: minutes and seconds must be < 60")
        total = int(days or 0) * 86400 + int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds)
    else:
        total = _number(value, label)
    if not total > 0:
        raise ConfigError(f"{label} must be > 0 seconds, got {value!r}")
    return float(total)


# ------------------------------------------------------------------ declarations

@dataclass(frozen=True)
class Option:
    """One option: its name, kind of value, default, unit, help and manifest membership.

    Attributes
    ----------
    name : str
        Job-file key and dataclass field name.
    kind : Kind
    default : object
        ``dataclasses.MISSING`` when the option is required.
    unit : str
        Unit of the value ("" for none).
    help : str
        One or two sentences, including where the default comes from.
    manifest : bool
        Whether the value changes results (recorded in the manifest).
    path : tuple of str
        Attribute path from :class:`RunOptions` to the value, e.g. ``("job", "infer", "max_passes")``.
    """

    name: str
    kind: Kind
    default: object
    unit: str
    help: str
    manifest: bool
    path: tuple = ()

    @property
    def flag(self):
        """The command-line flag, ``--`` + name with ``-`` for ``_``."""
        return "--" + self.name.replace("_", "-")

    def job_label(self, where):
        return f"job file {where}: key {self.name!r}"


def option(default=MISSING, kind=None, help="", unit="", manifest=True):
    """A dataclass field that is an option (see the module docstring)."""
    meta = {"option": Option("", kind, default, unit, help, manifest)}
    if isinstance(default, (list, dict, set)):
        raise TypeError("option defaults must be immutable")
    return field(default=default, metadata=meta)


def _group(cls):
    """A dataclass field holding a nested options dataclass (its defaults by default)."""
    return field(default_factory=cls, metadata={"group": cls})


@dataclass
class ImageOptions:
    """The images of a box (cutouts, sky, PSF mixtures): :func:`celeste.images.box_images`."""

    sky_refine: bool = option(True, Flag(), help=(
        "add SEP's mesh background of the sky-subtracted data to the SDSS sky (the SDSS sky sits low: "
        "+0.0044 nmgy per r pixel, 0.15 of the noise, on field 2583-2-136)"))
    sky_mesh_px: int = option(64, Int(16), unit="px", help=(
        "mesh of the sky refinement: larger than sources, smaller than sky gradients"))
    psf_components: int = option(4, Int(1, MAX_COMPONENTS), help=(
        "Gaussians in each PSF mixture (measured on the r PSF of field 2583-2-136: 1.08% of its light lies "
        "beyond 8 px; K = 3 puts 0.38% there and bright stars then fit as galaxies, K = 4 puts 0.84%)"))


@dataclass
class DetectOptions:
    """The initial catalog by SEP detection: :func:`celeste.detect.detect_sources`."""

    detect_bands: tuple = option((1, 2, 3), Bands(), help=(
        "bands combined into the detection image (measured, bench/detect_choice.py: g+r+i recovers 91% of "
        "injected r < 23 stars, per-band detection 79%)"))
    detect_thresh: float = option(5.0, Number(gt=0), unit="sigma", help=(
        "detection threshold in units of the combined image's pixel noise"))
    detect_minarea: int = option(5, Int(1), unit="px", help="connected pixels above the threshold at least")
    detect_deblend_nthresh: int = option(32, Int(1), help="SEP deblending: number of thresholds")
    detect_deblend_cont: float = option(0.005, Number(ge=0), help=(
        "SEP deblending: minimum flux fraction of a branch to be a separate source"))
    detect_bkg_mesh_px: int = option(32, Int(0), unit="px", help=(
        "mesh of the local background removed before detection (0: none); M2's glow otherwise hides its stars"))


@dataclass
class InferOptions:
    """Inference in a box: :class:`celeste.infer.BoxModel` and the residual rounds."""

    threads: int = option(1, Int(1), manifest=False, help=(
        "threads per process (default SLURM_CPUS_PER_TASK, else 1); results do not depend on it"))
    batch_size: int = option(64, Int(1), help="sources per CYCLADES batch")
    seed: int = option(0, Int(), help="seed of the batch order")
    max_passes: int = option(3, Int(1), help="block-coordinate passes over a box at most")
    pass_tol: float = option(1.0, Number(ge=0), unit="nat", help=(
        "stop the passes when no source's ELBO changed by more than this in a pass"))
    max_iter: int = option(50, Int(1), help="Newton iterations per source update at most")
    f_tol: float = option(1e-3, Number(ge=0), unit="nat", help="Newton stopping rule: ELBO change")
    g_tol: float = option(1e-4, Number(ge=0), help="Newton stopping rule: gradient norm")
    active_eps: float = option(0.1, Number(gt=0), help=(
        "active pixels: where a source's expected light exceeds this fraction of the sky noise"))
    min_radius_px: float = option(4.0, Number(gt=0), unit="px", help="active radius at least")
    max_radius_px: float = option(40.0, Number(gt=0), unit="px", help="active radius at most")
    residual_rounds: int = option(1, Int(0), help=(
        "rounds of detection in the model's residuals, each followed by more passes "
        "(default 1; 0 with --init unless given)"))
    residual_snr: float = option(6.0, Number(gt=0), unit="sigma", help=(
        "residual peaks: PSF-matched significance at least (a pure-noise image of 10^6 pixels has "
        "about 0.001 peaks above 6 sigma)"))
    residual_contrast: float = option(1.0, Number(ge=0), help=(
        "residual peaks: flux at least this multiple of the model's PSF-matched flux there (so that "
        "the PSF-shaped residuals of bright stars are not taken for new sources)"))
    residual_min_sep_px: float = option(2.0, Number(ge=0), unit="px", help=(
        "residual peaks: at least this far from every modelled source"))


@dataclass
class JobOptions:
    """The region, its data and everything that changes the catalog (the manifest's options)."""

    region: tuple = option(kind=Region(), unit="deg", help=(
        "sky region RA_MIN RA_MAX DEC_MIN DEC_MAX, ICRS degrees; RA_MIN > RA_MAX crosses RA = 0 (required)"))
    data_dir: str = option(kind=Path(), help=(
        "SDSS data root: <dir>/<run>/<camcol>/<field>/frame-*.fits[.bz2] (required)"))
    bands: tuple = option((0, 1, 2, 3, 4), Bands(), help="bands used, e.g. ugriz or gri")
    init: str = option(None, Init(), help=(
        "initial catalog FITS (ra, dec deg; optional flux_<band> nmgy, is_star_guess, a, b arcsec, theta deg) "
        "instead of SEP detection ('sep', the default)"))
    priors: str = option(None, Path(), help="priors JSON (default: the package's, fitted to Stripe 82)")
    box_arcsec: float = option(240.0, Number(gt=0), unit="arcsec", help="side of a box core")
    overlap_arcsec: float = option(20.0, Number(ge=0), unit="arcsec", help=(
        "margin around a box core whose sources and pixels the box also fits (less than --box-arcsec)"))
    images: ImageOptions = _group(ImageOptions)
    detect: DetectOptions = _group(DetectOptions)
    infer: InferOptions = _group(InferOptions)

    def manifest_options(self):
        """Every option that changes results, by name, plus the code hash (JSON-ready dict).

        Threads and the output options are left out: results do not depend on them.
        """
        out = {}
        for opt in OPTIONS:
            if opt.manifest:
                out[opt.name] = _json_value(_get(self, opt.path[1:]))
        out["data_dir"] = os.path.abspath(self.data_dir)
        out["code"] = code_hash()
        return out


@dataclass
class RunOptions:
    """Where results go and how long to run (not recorded in the manifest)."""

    job: JobOptions = field(metadata={"group": JobOptions})
    out: str = option(kind=Path(), manifest=False, help="output catalog, a FITS binary table (required)")
    run_dir: str = option(None, Path(), manifest=False, help=(
        "run directory of per-box results, manifest and logs (default: <out without .fits>.run)"))
    overwrite: bool = option(False, Flag(), manifest=False, help="replace an existing output catalog")
    time_limit: float = option(None, Seconds(), unit="s", manifest=False, help=(
        "stop claiming boxes in time to finish within this many seconds (or HH:MM:SS) from the start; "
        "exit status 3 when incomplete"))
    residual_png: str = option(None, Path(), manifest=False, help="write a data / model / residual PNG of the region")
    residual_band: str = option("r", Band(), manifest=False, help="band of the residual PNG")


def _walk(cls, path=()):
    for f in fields(cls):
        if "group" in f.metadata:
            yield from _walk(f.metadata["group"], path + (f.name,))
        else:
            o = f.metadata["option"]
            yield Option(f.name, o.kind, o.default, o.unit, o.help, o.manifest, path + (f.name,))


#: every option, in declaration order
OPTIONS = tuple(_walk(RunOptions))
#: options by name
BY_NAME = {o.name: o for o in OPTIONS}
assert len(BY_NAME) == len(OPTIONS), "option names must be unique"


def _get(obj, path):
    for name in path:
        obj = getattr(obj, name)
    return obj


def _json_value(v):
    return list(v) if isinstance(v, tuple) else v


def code_hash():
    """SHA-256 (16 hex digits) of the package's and the kernels' sources and the priors file.

    Recorded in the run directory's manifest, so that a resumed run never mixes boxes made
    by different code (a rerun after an upgrade or an edit needs ``--restart``).
    """
    import glob
    import hashlib

    h = hashlib.sha256()
    here = os.path.dirname(os.path.abspath(__file__))
    kdir = os.path.join(os.path.dirname(here), "kernels")
    for path in sorted(glob.glob(os.path.join(here, "*.py")) + glob.glob(os.path.join(kdir, "*.py"))
                       + glob.glob(os.path.join(here, "data", "*.json"))):
        h.update(os.path.basename(path).encode())
        with open(path, "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:16]


# ------------------------------------------------------------------ command line and resolution

def _help(opt):
    parts = [opt.help]
    extra = []
    if opt.unit:
        extra.append(opt.unit)
    if "(default" in opt.help:
        pass  # a default that depends on other values, explained in the help
    elif opt.default is not MISSING and opt.default is not None and not isinstance(opt.kind, Flag):
        d = opt.default
        if isinstance(opt.kind, Bands):
            d = "".join(BANDS[b] for b in d)
        extra.append(f"default {d}")
    elif isinstance(opt.kind, Flag):
        extra.append(f"default {'on' if opt.default else 'off'}")
    if extra:
        parts.append(f"[{'; '.join(extra)}]")
    return " ".join(parts).replace("%", "%%")  # argparse formats help strings with %


def add_arguments(parser):
    """Add one flag per option to an ``argparse`` parser, in groups as declared.

    Every flag defaults to None (a Flag to None as well), so that :func:`resolve` can tell
    given flags from defaults and let them override a job file.
    """
    groups = {}
    for opt in OPTIONS:
        cls = _owner(opt.path)
        if cls not in groups:
            title = re.sub(r":\w+:`([^`]+)`", r"\1", cls.__doc__.splitlines()[0].rstrip("."))
            groups[cls] = parser.add_argument_group(title)
        kw = {"default": None, "help": _help(opt), "dest": opt.name}
        if isinstance(opt.kind, Flag):
            kw["action"] = argparse.BooleanOptionalAction
        else:
            if opt.kind.metavar:
                kw["metavar"] = opt.kind.metavar
            if opt.kind.nargs:
                kw["nargs"] = opt.kind.nargs
        groups[cls].add_argument(opt.flag, **kw)


def _owner(path):
    cls = RunOptions
    for name in path[:-1]:
        cls = {f.name: f for f in fields(cls)}[name].metadata["group"]
    return cls


def check_job_values(raw, where, root):
    """Check a job file's values by their options (used by :func:`celeste.jobs.load_job`).

    Returns
    -------
    dict
        name -> checked value, for the keys present.

    Raises
    ------
    ConfigError
        An unknown key (listing the allowed ones) or a bad value; names the file and key.
    """
    unknown = sorted(set(raw) - set(BY_NAME))
    if unknown:
        raise ConfigError(f"job file {where}: unknown key(s) {', '.join(map(repr, unknown))}; "
                          f"allowed keys: {', '.join(BY_NAME)}")
    return {k: BY_NAME[k].kind.check(v, BY_NAME[k].job_label(where), root) for k, v in raw.items()}


def resolve(args, environ=None):
    """The run's options from parsed arguments: job file, then flags, then defaults.

    Parameters
    ----------
    args : argparse.Namespace
        From a parser with :func:`add_arguments` (and ``--job``).
    environ : mapping, optional
        Environment (default ``os.environ``) for the ``threads`` default.

    Returns
    -------
    RunOptions

    Raises
    ------
    ConfigError
        A bad job file or value, a missing required option, or inconsistent options; the
        message names the flag (and the job file and key when the value came from there).
    """
    given = {}
    if getattr(args, "job", None):
        from .jobs import load_job

        given.update(load_job(args.job))
    for opt in OPTIONS:
        raw = getattr(args, opt.name, None)
        if raw is not None:
            given[opt.name] = opt.kind.from_text(raw, opt.flag)
    return build(given, environ)


def build(given, environ=None):
    """:class:`RunOptions` from checked values by name (absent ones take their defaults).

    Derived defaults: ``threads`` from ``SLURM_CPUS_PER_TASK`` (else 1), ``residual_rounds``
    0 when ``init`` names a catalog, ``run_dir`` from ``out``.  Then :func:`validate`.

    Raises
    ------
    ConfigError
        As :func:`resolve`.
    """
    environ = os.environ if environ is None else environ
    values = dict(given)
    for name, what in (("region", "RA_MIN RA_MAX DEC_MIN DEC_MAX"), ("data_dir", "DIR"), ("out", "FILE")):
        if values.get(name) is None:
            raise ConfigError(f"{BY_NAME[name].flag} {what} is required (on the command line or in the --job file)")
    if "threads" not in values:
        text = environ.get("SLURM_CPUS_PER_TASK", "") or "1"
        values["threads"] = BY_NAME["threads"].kind.from_text(text, "SLURM_CPUS_PER_TASK")
    if "residual_rounds" not in values and values.get("init"):
        values["residual_rounds"] = 0  # a user's catalog is kept as given unless residual rounds are asked for
    if values.get("run_dir") is None:
        out = values["out"]
        values["run_dir"] = (out[:-5] if out.endswith(".fits") else out) + ".run"
    groups = {}
    for cls in (ImageOptions, DetectOptions, InferOptions):
        groups[cls] = cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})
    job = JobOptions(**{f.name: values[f.name] for f in fields(JobOptions) if f.name in values and
                        "group" not in f.metadata},
                     images=groups[ImageOptions], detect=groups[DetectOptions], infer=groups[InferOptions])
    run = RunOptions(job=job, **{f.name: values[f.name] for f in fields(RunOptions) if f.name in values})
    validate(run)
    return run


def validate(run):
    """Checks that involve several options or the file system.

    Raises
    ------
    ConfigError
        ``--data-dir`` not a directory, ``--init`` or ``--priors`` missing, or
        ``--overlap-arcsec`` not less than ``--box-arcsec``.
    """
    job = run.job
    if not os.path.isdir(job.data_dir):
        raise ConfigError(f"--data-dir {job.data_dir} is not a directory")
    for name in ("init", "priors"):
        path = getattr(job, name)
        if path is not None and not os.path.exists(path):
            raise ConfigError(f"--{name} {path} does not exist")
    if job.overlap_arcsec >= job.box_arcsec:
        raise ConfigError(f"--overlap-arcsec ({job.overlap_arcsec}) must be less than --box-arcsec "
                          f"({job.box_arcsec}): options 'overlap_arcsec' and 'box_arcsec'")
