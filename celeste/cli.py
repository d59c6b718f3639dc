"""``celeste-infer``: catalog a sky region from SDSS images.

    celeste-infer --region RA_MIN RA_MAX DEC_MIN DEC_MAX --data-dir DIR --out catalog.fits
                  [--init FILE] [--threads N] [--run-dir DIR] [--residual-png FILE] ...
    celeste-infer --job jobs/sample.toml [flags that override the job file]

The same command runs on a laptop, under ``mpiexec -n N`` and under ``srun``: with more
than one MPI rank, ranks claim boxes from a shared counter (see :mod:`celeste.run`).
Exit status: 0 complete; 2 bad input or options (one-line message naming the file or
argument); 3 stopped by the time limit with the catalog incomplete (rerun to continue).
"""
import argparse
import logging
import os
import shlex
import sys
import time

from . import BANDS, __version__
from .errors import CelesteError, ConfigError

log = logging.getLogger("celeste")

EXIT_INCOMPLETE = 3


def build_parser():
    p = argparse.ArgumentParser(
        prog="celeste-infer",
        description="Catalog every light source in a sky region by variational inference (Celeste model).",
        epilog="Coordinates are ICRS degrees; RA_MIN > RA_MAX means the region crosses RA = 0.")
    p.add_argument("--job", help="TOML run definition (jobs/*.toml); command-line flags override it")
    p.add_argument("--region", nargs=4, type=float, metavar=("RA_MIN", "RA_MAX", "DEC_MIN", "DEC_MAX"),
                   help="sky region, degrees")
    p.add_argument("--data-dir", help="SDSS data root: <dir>/<run>/<camcol>/<field>/frame-*.fits[.bz2]")
    p.add_argument("--out", help="output catalog (FITS binary table)")
    p.add_argument("--run-dir", help="run directory for per-box results, manifest and logs "
                                     "(default: <out without .fits>.run)")
    p.add_argument("--init", help="initial catalog FITS (ra, dec [deg], optional flux_<band> nmgy) instead of "
                                  "SEP detection")
    p.add_argument("--threads", type=int, help="threads per process (default 1, or SLURM_CPUS_PER_TASK)")
    p.add_argument("--bands", help="bands to use, e.g. ugriz (default) or gri")
    p.add_argument("--box-arcsec", type=float, help="box core size, arcsec (default 240)")
    p.add_argument("--overlap-arcsec", type=float, help="box overlap margin, arcsec (default 20)")
    p.add_argument("--max-passes", type=int, help="block-coordinate passes per box at most (default 3)")
    p.add_argument("--batch-size", type=int, help="sources per CYCLADES batch (default 64)")
    p.add_argument("--seed", type=int, help="seed of the batch order (default 0)")
    p.add_argument("--residual-rounds", type=int, help="rounds of detection in the model residuals, each followed "
                                                      "by more passes (default 1; 0 disables)")
    p.add_argument("--priors", help="priors JSON (default: the package's, fitted to Stripe 82)")
    p.add_argument("--time-limit", help="stop claiming boxes in time to finish within this many seconds "
                                        "(or HH:MM:SS); exit status 3 when incomplete")
    p.add_argument("--residual-png", help="write a data / model / residual PNG of the region")
    p.add_argument("--residual-band", default=None, help="band of the residual PNG (default r)")
    p.add_argument("--overwrite", action="store_true", default=None, help="replace an existing output catalog")
    p.add_argument("--restart", action="store_true", help="discard finished boxes of a run directory made with "
                                                          "other inputs or options")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    p.add_argument("--version", action="version", version=f"celeste {__version__}")
    return p


def _merge_job(args):
    """Job-file values where the command line gave none."""
    if not args.job:
        return args
    from .jobs import load_job

    job = load_job(args.job)
    mapping = {"region": "region", "data_dir": "data_dir", "out": "out", "run_dir": "run_dir", "init": "init",
               "threads": "threads", "box_arcsec": "box_arcsec", "overlap_arcsec": "overlap_arcsec",
               "max_passes": "max_passes", "overwrite": "overwrite", "time_limit": "time_limit",
               "residual_png": "residual_png"}
    for key, attr in mapping.items():
        if key in job and getattr(args, attr) is None:
            setattr(args, attr, job[key])
    if "bands" in job and args.bands is None:
        args.bands = "".join(job["bands"])
    return args


def options_from_args(args):
    """JobOptions and run settings from parsed arguments (after the job file is merged).

    Raises
    ------
    ConfigError
        Missing or invalid arguments, naming them.
    """
    from .infer import InferOptions
    from .pipeline import JobOptions

    if args.region is None:
        raise ConfigError("--region RA_MIN RA_MAX DEC_MIN DEC_MAX is required (or --job with a region)")
    ra_min, ra_max, dec_min, dec_max = (float(v) for v in args.region)
    if not (-90 <= dec_min < dec_max <= 90):
        raise ConfigError(f"--region: need -90 <= DEC_MIN < DEC_MAX <= 90, got DEC_MIN={dec_min} DEC_MAX={dec_max}")
    if not (0 <= ra_min <= 360 and 0 <= ra_max <= 360) or ra_min == ra_max:
        raise ConfigError(f"--region: RA_MIN and RA_MAX must lie in [0, 360] and differ, got {ra_min} {ra_max}")
    if not args.data_dir:
        raise ConfigError("--data-dir is required")
    if not os.path.isdir(args.data_dir):
        raise ConfigError(f"--data-dir {args.data_dir} is not a directory")
    if not args.out:
        raise ConfigError("--out is required")
    bands = tuple(range(5))
    if args.bands:
        bad = [c for c in args.bands if c not in BANDS]
        if bad or not args.bands:
            raise ConfigError(f"--bands {args.bands!r}: use letters from {''.join(BANDS)}")
        bands = tuple(sorted({BANDS.index(c) for c in args.bands}))
    threads = args.threads
    if threads is None:
        threads = int(os.environ.get("SLURM_CPUS_PER_TASK", "1") or 1)
    if threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {threads}")
    inf = InferOptions(threads=threads)
    if args.max_passes is not None:
        if args.max_passes < 1:
            raise ConfigError("--max-passes must be >= 1")
        inf.max_passes = args.max_passes
    if args.batch_size is not None:
        if args.batch_size < 1:
            raise ConfigError("--batch-size must be >= 1")
        inf.batch_size = args.batch_size
    if args.seed is not None:
        inf.seed = args.seed
    if args.residual_rounds is not None:
        if args.residual_rounds < 0:
            raise ConfigError("--residual-rounds must be >= 0")
        inf.residual_rounds = args.residual_rounds
    elif args.init:
        inf.residual_rounds = 0  # a user's catalog is kept as given unless residual rounds are asked for
    opts = JobOptions(region=(ra_min, ra_max, dec_min, dec_max), data_dir=args.data_dir, bands=bands,
                      init=args.init, priors=args.priors, infer=inf)
    if args.box_arcsec is not None:
        if args.box_arcsec <= 0:
            raise ConfigError("--box-arcsec must be positive")
        opts.box_arcsec = args.box_arcsec
    if args.overlap_arcsec is not None:
        if args.overlap_arcsec < 0:
            raise ConfigError("--overlap-arcsec must be >= 0")
        opts.overlap_arcsec = args.overlap_arcsec
    if opts.init in ("sep", "detect"):
        opts.init = None  # the default method: SEP detection
    if opts.init and not os.path.exists(opts.init):
        raise ConfigError(f"--init {opts.init} does not exist")
    return opts


def _setup_logging(verbose, rank):
    import astropy  # noqa: F401 - astropy installs its own logger class; import it first

    level = logging.WARNING if verbose < 0 else (logging.INFO if verbose < 2 else logging.DEBUG)
    fmt = "%(asctime)s celeste" + (f"[rank {rank}]" if rank else "") + " %(levelname)s %(message)s"
    logging.basicConfig(level=level, format=fmt, datefmt="%H:%M:%S", stream=sys.stderr)
    logging.getLogger("astropy").setLevel(logging.WARNING)
    import warnings

    from astropy.io.fits.verify import VerifyWarning
    from astropy.wcs import FITSFixedWarning

    warnings.simplefilter("ignore", FITSFixedWarning)
    warnings.simplefilter("ignore", VerifyWarning)


def write_residual_png(path, catalog, opts, band):
    """Render the catalog over the region in one band and write the three-panel PNG."""
    from .pipeline import box_images, fields_for_region
    from .partition import make_boxes
    from .plot import render_model, residual_png

    fields = fields_for_region(opts)
    whole = make_boxes(opts.region, 1e9, 0.0)[0]
    one = type(opts)(**{**opts.__dict__, "bands": (band,)})
    images, mixes = box_images(one, whole, fields)
    sds = []
    for k, (im, mix) in enumerate(zip(images, mixes)):
        model = render_model(im, mix, catalog)
        out = path if k == 0 else path.replace(".png", f"-{k}.png")
        sds.append(residual_png(out, im, model, catalog, title=os.path.basename(im.path)))
    return sds


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    rank = 0
    try:
        from .run import get_comm, rank_size

        rank = rank_size(get_comm())[0]
    except Exception:  # noqa: BLE001 - MPI problems surface later with a clear message
        pass
    _setup_logging(args.verbose + 1, rank)
    t0 = time.time()
    try:
        args = _merge_job(args)
        opts = options_from_args(args)
        out = args.out
        run_dir = args.run_dir or (out[:-5] if out.endswith(".fits") else out) + ".run"
        time_limit = None
        if args.time_limit is not None:
            from .jobs import parse_time_limit

            time_limit = parse_time_limit(args.time_limit, key="--time-limit")
        from .pipeline import run_job

        log.info("celeste %s: %s", __version__, " ".join(shlex.quote(a) for a in (argv or sys.argv)))
        meta = {"COMMAND": " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))}
        res = run_job(opts, out, run_dir, overwrite=bool(args.overwrite), restart=args.restart,
                      time_limit_s=time_limit, progress=not args.no_progress and rank == 0, meta=meta)
        if not res.complete:
            log.warning("time limit reached: %d of %d boxes remain; rerun the same command to continue",
                        len(res.summary.remaining), res.n_boxes)
            return EXIT_INCOMPLETE
        if rank == 0:
            log.info("done: %d fields, %d sources detected, %d boxes, %d sources in %s, %.1f s", res.n_fields,
                     res.n_detected, res.n_boxes, res.n_sources, out, time.time() - t0)
            if args.residual_png:
                band = BANDS.index(args.residual_band or "r")
                sds = write_residual_png(args.residual_png, res.catalog, opts, band)
                log.info("wrote %s (band %s residual sd %s)", args.residual_png, BANDS[band],
                         ", ".join(f"{s:.3f}" for s in sds))
        return 0
    except CelesteError as exc:
        print(f"celeste-infer: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("celeste-infer: interrupted; finished boxes are kept in the run directory", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
