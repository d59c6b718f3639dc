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
from .errors import CelesteError
from .options import add_arguments, resolve

log = logging.getLogger("celeste")

EXIT_INCOMPLETE = 3


def build_parser():
    """The ``celeste-infer`` argument parser: the options of :mod:`celeste.options`, and the
    flags that act on the invocation (``--job``, ``--restart``, ``--no-progress``, ``-v``)."""
    p = argparse.ArgumentParser(
        prog="celeste-infer",
        description="Catalog every light source in a sky region by variational inference (Celeste model).",
        epilog="Coordinates are ICRS degrees; RA_MIN > RA_MAX means the region crosses RA = 0. Every option "
               "can also be set in the --job file, as a key named like the flag with _ for -.")
    p.add_argument("--job", help="TOML run definition (jobs/*.toml); command-line flags override it")
    p.add_argument("--restart", action="store_true", help="discard finished boxes of a run directory made with "
                                                          "other inputs or options")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    p.add_argument("--version", action="version", version=f"celeste {__version__}")
    add_arguments(p)
    return p


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
    from .images import box_images
    from .pipeline import fields_for_region
    from .plot import render_model, residual_png

    images, mixes = box_images(opts.data_dir, fields_for_region(opts), (band,), opts.region, opts.images)
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
        run = resolve(args)
        opts, out = run.job, run.out
        from .pipeline import run_job

        log.info("celeste %s: %s", __version__, " ".join(shlex.quote(a) for a in (argv or sys.argv)))
        meta = {"COMMAND": " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))}
        res = run_job(opts, out, run.run_dir, overwrite=run.overwrite, restart=args.restart,
                      time_limit_s=run.time_limit, progress=not args.no_progress and rank == 0, meta=meta)
        if not res.complete:
            log.warning("time limit reached: %d of %d boxes remain; rerun the same command to continue",
                        len(res.summary.remaining), res.n_boxes)
            return EXIT_INCOMPLETE
        if rank == 0:
            log.info("done: %d fields, %d sources detected, %d boxes, %d sources in %s, %.1f s", res.n_fields,
                     res.n_detected, res.n_boxes, res.n_sources, out, time.time() - t0)
            if run.residual_png:
                band = BANDS.index(run.residual_band)
                sds = write_residual_png(run.residual_png, res.catalog, opts, band)
                log.info("wrote %s (band %s residual sd %s)", run.residual_png, BANDS[band],
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
