"""The main job: region -> fields -> initial catalog -> boxes -> per-box inference -> catalog.

This module only orchestrates: each stage is a function of its own module that can be
called and tested alone:

* :func:`fields_for_region` - the SDSS fields overlapping the region (field index);
* :func:`celeste.initcat.initial_catalog` - detections of every field (or the user's
  ``--init`` catalog), merged, with stable ``objid``;
* :func:`process_box` - one box: its images (:func:`celeste.images.box_images`), the
  optimization of every source of its extended region (:class:`celeste.infer.BoxModel`)
  with the residual rounds, and the rows of the sources its core owns inside the region;
* :func:`run_job` - the whole job through :func:`celeste.run.run_tasks` (one rank or
  many under MPI) and :func:`celeste.run.merge_results`.

Nothing here imports mpi4py: the communicator comes from :func:`celeste.run.get_comm`.
"""
import logging
import math
import os
import time
from dataclasses import dataclass

import numpy as np
from astropy.table import Table

from . import BANDS, __version__
from .catalog import empty_results, results_table
from .errors import ConfigError, DataError
from .fieldindex import find_fields
from .images import box_images
from .infer import BoxModel
from .initcat import add_residual_sources, initial_catalog
from .options import JobOptions  # noqa: F401 - the options of a job, imported from here by callers
from .partition import in_region, make_boxes, owner_box
from .priors import load_priors
from .run import get_comm, merge_results, open_run_dir, rank_size, run_tasks
from .sdss import field_paths

log = logging.getLogger("celeste.pipeline")

#: per-source timings: kept in the run directory's box files, not in the catalog (so that
#: identical runs give identical catalogs)
TIMING_COLUMNS = ("opt_seconds",)

# ---------------------------------------------------------------------------- fields

def fields_for_region(opts):
    """(run, camcol, field) of every field overlapping the region, sorted.

    Raises
    ------
    DataError
        If no field in ``data_dir`` overlaps the region (names both).
    """
    fields = find_fields(opts.data_dir, opts.region)
    if not fields:
        raise DataError(f"no SDSS field in {opts.data_dir} overlaps the region {tuple(opts.region)} "
                        "(ra_min ra_max dec_min dec_max, deg)")
    return fields


def input_files(opts, fields):
    """Every file the job reads (for the manifest)."""
    files = []
    for (run, camcol, fld) in fields:
        p = field_paths(opts.data_dir, run, camcol, fld)
        files += [p["frame"][b] for b in opts.bands] + [p["psfield"], p["photofield"]]
        files += [p["fpm"][b] for b in opts.bands if os.path.exists(p["fpm"][b])]
    if opts.init:
        files.append(opts.init)
    return sorted(set(files))


# ---------------------------------------------------------------------------- boxes

def process_box(opts, box, boxes, catalog, fields, priors, progress=None):
    """Optimize one box and return the catalog rows of the sources it owns.

    Parameters
    ----------
    opts : JobOptions
    box : celeste.partition.Box
    boxes : list of Box (the whole grid, for ownership)
    catalog : astropy.table.Table
        The initial catalog of the whole region (with ``objid``).
    fields : list of (run, camcol, field)
    priors : celeste.priors.Priors

    Returns
    -------
    astropy.table.Table
        One row per owned source inside the region (:func:`celeste.catalog.results_table`).
    """
    ra = np.asarray(catalog["ra"], float)
    dec = np.asarray(catalog["dec"], float)
    in_ext = np.asarray(box.in_extended(ra, dec), bool)
    sub = catalog[in_ext]
    owned = (owner_box(boxes, np.asarray(sub["ra"], float), np.asarray(sub["dec"], float)) == box.box_id) & \
        np.asarray(in_region(opts.region, np.asarray(sub["ra"], float), np.asarray(sub["dec"], float)), bool)
    if not owned.any():
        return results_table(empty_results(), np.zeros(0, np.int64), box.box_id, 0)
    ext = (box.ext_ra_min, box.ext_ra_max, box.ext_dec_min, box.ext_dec_max)
    images, mixes = box_images(opts.data_dir, fields, opts.bands, ext, opts.images)
    if not images:
        raise DataError(f"box {box.box_id}: no image covers its extended region")
    model = BoxModel(images, mixes, sub, priors, opts.infer)
    t0 = time.time()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=model.n_src * opts.infer.max_passes, desc=f"box {box.box_id}: source updates",
                   unit="src", leave=False, dynamic_ncols=True)
    try:
        model.run(progress=bar.update if bar is not None else None)
        for rnd in range(opts.infer.residual_rounds):
            new_ra, new_dec, new_flux = model.residual_peaks(snr=opts.infer.residual_snr,
                                                             min_sep_px=opts.infer.residual_min_sep_px,
                                                             contrast=opts.infer.residual_contrast)
            if len(new_ra) == 0:
                break
            log.info("box %d: residual round %d adds %d sources", box.box_id, rnd + 1, len(new_ra))
            old, old_seconds = model.params, model.seconds
            sub = add_residual_sources(sub, new_ra, new_dec, new_flux)
            model = BoxModel(images, mixes, sub, priors, opts.infer,
                             params0=list(old) + [None] * len(new_ra))
            model.seconds[:len(old_seconds)] += old_seconds
            if bar is not None:
                bar.total += model.n_src * opts.infer.max_passes
            model.run(progress=bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    ra_s = np.asarray(sub["ra"], float)
    dec_s = np.asarray(sub["dec"], float)
    owned = (owner_box(boxes, ra_s, dec_s) == box.box_id) & np.asarray(in_region(opts.region, ra_s, dec_s), bool)
    log.info("box %d: %d sources (%d owned) optimized in %d passes, %.1f s", box.box_id, model.n_src,
             int(owned.sum()), model.passes_done, time.time() - t0)
    res = model.source_results()
    keep = np.nonzero(owned)[0]
    res = {k: v[keep] for k, v in res.items()}
    flags0 = np.asarray(sub["init_flags"])[keep] if "init_flags" in sub.colnames else None
    tab = results_table(res, np.asarray(sub["objid"])[keep], box.box_id, model.passes_done, flags0)
    tab.meta["CEL_NSRC"] = len(sub)
    tab.meta["CEL_OPT"] = round(time.time() - t0, 3)

    def inside(r, d):
        return np.asarray(box.contains(r, d), bool) & np.asarray(in_region(opts.region, r, d), bool)

    rss, npix = model.residual_stats(inside)
    for b in range(5):
        if npix[b] > 0:
            tab.meta[f"RSS_{BANDS[b].upper()}"] = float(rss[b])
            tab.meta[f"NPIX_{BANDS[b].upper()}"] = int(npix[b])
    return tab


# ---------------------------------------------------------------------------- the job

@dataclass
class JobResult:
    """What :func:`run_job` did: the catalog (None if incomplete), counts and timings."""

    catalog: Table
    complete: bool
    n_fields: int
    n_detected: int
    n_boxes: int
    n_sources: int
    wall_s: float
    summary: object = None


def residual_summary(rd, box_ids):
    """Residual sd per band over the region's pixels, from the boxes' RSS_/NPIX_ header keys.

    Returns
    -------
    dict band -> (sd, n_pixels)
    """
    from astropy.io import fits

    rss = np.zeros(5)
    npix = np.zeros(5, dtype=np.int64)
    for i in box_ids:
        hdr = fits.getheader(rd.box_path(i), 1)
        for b in range(5):
            key = BANDS[b].upper()
            if f"NPIX_{key}" in hdr:
                rss[b] += hdr[f"RSS_{key}"]
                npix[b] += hdr[f"NPIX_{key}"]
    return {b: (math.sqrt(rss[b] / npix[b]), int(npix[b])) for b in range(5) if npix[b] > 0}


def run_job(opts, out_path, run_dir, overwrite=False, restart=False, time_limit_s=None, progress=True,
            meta=None):
    """Run the whole job (every MPI rank calls this with the same arguments).

    Returns
    -------
    JobResult

    Raises
    ------
    ConfigError, DataError
        Bad options or inputs (names the argument or file).
    """
    t0 = time.time()
    comm = get_comm()
    rank, size = rank_size(comm)
    if os.path.exists(out_path) and not overwrite:
        raise ConfigError(f"output {out_path} exists; pass --overwrite to replace it")
    out_dir = os.path.dirname(os.path.abspath(out_path))
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {out_path}: cannot create its directory ({exc.strerror})") from None
    fields = fields_for_region(opts)
    if rank == 0:
        log.info("%d field(s) overlap the region: %s", len(fields),
                 ", ".join(f"{r}-{c}-{f}" for r, c, f in fields))
    rd = open_run_dir(run_dir, opts.manifest_options(), input_files(opts, fields), restart=restart, comm=comm)
    if restart and rank == 0:
        # the detection cache belongs to the run too
        import shutil

        shutil.rmtree(os.path.join(os.fspath(run_dir), "detect"), ignore_errors=True)
    if comm is not None and size > 1:
        comm.Barrier()
    priors = load_priors(opts.priors)
    catalog = initial_catalog(opts, fields, run_dir, comm)
    ra = np.asarray(catalog["ra"], float)
    dec = np.asarray(catalog["dec"], float)
    n_in = int(np.sum(in_region(opts.region, ra, dec)))
    if rank == 0:
        log.info("initial catalog: %d sources (%d inside the region)", len(catalog), n_in)
    boxes = make_boxes(opts.region, opts.box_arcsec, opts.overlap_arcsec)
    if rank == 0:
        log.info("%d box(es) of %.0f arcsec with %.0f arcsec overlap; %d rank(s) x %d thread(s)", len(boxes),
                 opts.box_arcsec, opts.overlap_arcsec, size, opts.infer.threads)

    show = bool(progress) and size == 1

    def task(i):
        return process_box(opts, boxes[i], boxes, catalog, fields, priors, progress=show)

    remaining_s = None
    if time_limit_s is not None:
        # the limit counts from the start of the job (detection included)
        remaining_s = time_limit_s - (time.time() - t0)
        if comm is not None and size > 1:
            remaining_s = comm.bcast(remaining_s, root=0)
        if remaining_s <= 0:
            if rank == 0:
                log.warning("time limit reached before the box stage")
            from .run import RunSummary

            ids = [b.box_id for b in boxes]
            done = rd.finished(ids)
            summ = RunSummary(n_tasks=len(ids), n_skipped=len(done), n_done=0, done_by_rank=[0] * size,
                              remaining=[i for i in ids if i not in done], stopped_by_time_limit=True)
            return JobResult(None, False, len(fields), len(catalog), len(boxes), 0, time.time() - t0, summ)
    summary = run_tasks([b.box_id for b in boxes], task, rd, comm=comm, time_limit_s=remaining_s,
                        progress=progress)
    if summary.failed:
        raise DataError("boxes failed (see the logs in %s): %s" % (
            rd.log_dir, "; ".join(f"box {k}: {v}" for k, v in summary.failed.items())))
    if not summary.complete:
        return JobResult(None, False, len(fields), len(catalog), len(boxes), 0, time.time() - t0, summary)
    cat = None
    hdr = dict(meta or {})
    hdr.update({"CEL_VER": __version__, "REGION": " ".join(f"{v:.6f}" for v in opts.region),
                "DATADIR": os.path.abspath(opts.data_dir), "NFIELDS": len(fields),
                "PRIORS": priors.path or "package", "BOXSIZE": opts.box_arcsec,
                "OVERLAP": opts.overlap_arcsec})
    for k, (r, c, f) in enumerate(fields[:99]):
        hdr[f"FIELD{k}"] = f"{r}-{c}-{f}"
    for k, path in enumerate(input_files(opts, fields)[:999]):
        hdr[f"INPUT{k}"] = os.path.relpath(path, opts.data_dir) if not opts.init or path != opts.init else path
    if rank == 0:
        resid = residual_summary(rd, [b.box_id for b in boxes])
        for b, (sd, npx) in resid.items():
            hdr[f"RESSD_{BANDS[b].upper()}"] = round(sd, 5)  # sd of (x - F) / sqrt(F) over the region
            hdr[f"RESNP_{BANDS[b].upper()}"] = npx
            log.info("band %s: residual sd %.4f over %d pixels of the region", BANDS[b], sd, npx)
        cat = merge_results(rd, [b.box_id for b in boxes], out_path, meta=hdr, overwrite=overwrite,
                            drop_columns=TIMING_COLUMNS)
        log.info("wrote %s: %d sources, %.1f s", out_path, len(cat), time.time() - t0)
    if comm is not None and size > 1:
        comm.Barrier()
    return JobResult(cat, True, len(fields), len(catalog), len(boxes), 0 if cat is None else len(cat),
                     time.time() - t0, summary)
