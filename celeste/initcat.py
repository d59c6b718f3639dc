"""The initial catalog stage: where inference starts from.

Either SEP detection on every field overlapping the region (:func:`detect_field`, with
:func:`celeste.detect.detect_sources`), the fields' catalogs merged with duplicates from
overlaps removed (:func:`dedupe`), or the user's catalog (``--init``,
:func:`read_init_catalog`).  Sources found later in a box's residuals join its catalog
through :func:`add_residual_sources`.
"""
import logging
import math
import os

import numpy as np
from astropy.table import Table, vstack

from . import ARCSEC_PER_DEG
from .catalog import FLAG_RESIDUAL, FLAG_USER_INIT, make_objid
from .detect import detect_sources
from .errors import DataError
from .run import RunDir, run_tasks
from .sdss import load_field

log = logging.getLogger("celeste.initcat")

#: detections from two overlapping fields closer than this are one source (arcsec)
DEDUPE_ARCSEC = 1.0


def detect_field(opts, run, camcol, fld):
    """Initial catalog of one field: SEP detection on its bands (:func:`celeste.detect.detect_sources`).

    Returns
    -------
    astropy.table.Table
        The detection table plus ``run``, ``camcol``, ``field`` columns.
    """
    d = opts.detect
    images = load_field(opts.data_dir, run, camcol, fld, bands=opts.bands)
    cat = detect_sources(images, detect_bands=d.detect_bands, thresh=d.detect_thresh, minarea=d.detect_minarea,
                         deblend_nthresh=d.detect_deblend_nthresh, deblend_cont=d.detect_deblend_cont,
                         bkg_mesh=d.detect_bkg_mesh_px)
    cat.meta.clear()
    for col in cat.itercols():
        col.unit = None  # a cache file for this package only; units are documented in celeste.detect
    cat["run"] = np.full(len(cat), run, np.int32)
    cat["camcol"] = np.full(len(cat), camcol, np.int16)
    cat["field"] = np.full(len(cat), fld, np.int32)
    return cat


def dedupe(cat):
    """Drop rows within DEDUPE_ARCSEC of an earlier row of another field (rows ordered by field)."""
    if len(cat) < 2:
        return cat
    from scipy.spatial import cKDTree

    dec0 = np.radians(np.median(cat["dec"]))
    xyz = np.stack([np.asarray(cat["ra"]) * math.cos(dec0), np.asarray(cat["dec"])], axis=1) * ARCSEC_PER_DEG
    pairs = cKDTree(xyz).query_pairs(DEDUPE_ARCSEC, output_type="ndarray")
    same_field = (cat["run"][pairs[:, 0]] == cat["run"][pairs[:, 1]]) & (
        cat["camcol"][pairs[:, 0]] == cat["camcol"][pairs[:, 1]]) & (cat["field"][pairs[:, 0]] == cat["field"][pairs[:, 1]])
    pairs = pairs[~np.asarray(same_field)]
    drop = np.zeros(len(cat), bool)
    drop[np.maximum(pairs[:, 0], pairs[:, 1])] = True
    return cat[~drop]


def read_init_catalog(path):
    """The user's initial catalog (--init): FITS table with at least ra, dec (deg).

    Raises
    ------
    DataError
        Unreadable file, missing ra/dec columns, no rows, or non-finite positions (names the file).
    """
    try:
        cat = Table.read(path)
    except FileNotFoundError:
        raise DataError(f"--init catalog {path} does not exist") from None
    except Exception as exc:  # astropy raises many types for bad files
        raise DataError(f"cannot read --init catalog {path}: {exc}") from None
    names = {}
    for c in cat.colnames:
        if c.lower() in names:
            raise DataError(f"--init catalog {path} has columns {names[c.lower()]!r} and {c!r} that differ only in case")
        names[c.lower()] = c
    for need in ("ra", "dec"):
        if need not in names:
            raise DataError(f"--init catalog {path} has no '{need}' column (columns: {', '.join(cat.colnames)})")
    for low, orig in names.items():
        if low != orig:
            cat.rename_column(orig, low)
    if len(cat) == 0:
        raise DataError(f"--init catalog {path} has no rows")
    ra = np.asarray(cat["ra"], float)
    dec = np.asarray(cat["dec"], float)
    if not (np.all(np.isfinite(ra)) and np.all(np.isfinite(dec)) and np.all(np.abs(dec) <= 90)):
        raise DataError(f"--init catalog {path} has non-finite or out-of-range ra/dec values")
    cat.meta.clear()
    return cat


def _detect_rundir(run_dir):
    return RunDir(os.path.join(os.fspath(run_dir), "detect"))


def initial_catalog(opts, fields, run_dir, comm=None):
    """The initial catalog of the region: detections of every field, or the ``--init`` catalog.

    Detection runs one task per field through :func:`celeste.run.run_tasks` (ranks share the
    fields), each cached as ``<run_dir>/detect/box-<field index>.fits``; the field catalogs
    are merged (:func:`dedupe`).  Every rank gets the same table.

    Parameters
    ----------
    opts : celeste.options.JobOptions
    fields : list of (run, camcol, field)
    run_dir : str
    comm : mpi4py.MPI.Comm or None

    Returns
    -------
    astropy.table.Table
        Sorted by ``objid`` (int64 from the position, :func:`celeste.catalog.make_objid`), with
        ``init_flags`` (FLAG_USER_INIT for ``--init`` rows, else 0).

    Raises
    ------
    DataError
        Detection failed for a field, or the ``--init`` catalog is unusable (names the file).
    """
    if opts.init:
        cat = read_init_catalog(opts.init)
        cat["init_flags"] = np.full(len(cat), FLAG_USER_INIT, np.int32)
    else:
        rd = _detect_rundir(run_dir)

        def task(i):
            run, camcol, fld = fields[i]
            log.info("detecting sources in field %d-%d-%d", run, camcol, fld)
            return detect_field(opts, run, camcol, fld)

        summ = run_tasks(list(range(len(fields))), task, rd, comm=comm, progress=False)
        if summ.failed:
            raise DataError("detection failed: " + "; ".join(f"field {fields[k]}: {v}" for k, v in summ.failed.items()))
        parts = [rd.read_result(i) for i in range(len(fields))]
        for p in parts:
            for key in list(p.meta):
                del p.meta[key]
        cat = vstack(parts, metadata_conflicts="silent") if len(parts) > 1 else parts[0]
        cat = dedupe(cat)
        cat["init_flags"] = np.zeros(len(cat), np.int32)
    cat["objid"] = make_objid(cat["ra"], cat["dec"])
    # objid order makes the box contents independent of detection order
    cat.sort("objid")
    return cat


def add_residual_sources(sub, ra, dec, flux_r):
    """A box's catalog with the sources found in its residuals appended.

    Parameters
    ----------
    sub : astropy.table.Table
        The box's catalog (columns of :func:`initial_catalog`).
    ra, dec : ndarray (m,)
        Positions of the new sources, degrees.
    flux_r : ndarray (m,)
        Their r fluxes, nmgy.

    Returns
    -------
    astropy.table.Table
        ``sub`` and m new rows: ``objid`` from the position, ``is_star_guess`` 0.8,
        ``init_flags`` FLAG_RESIDUAL, NaN (or 0) in the other columns.
    """
    new = Table()
    for name in sub.colnames:
        col = sub[name]
        if name == "ra":
            new[name] = np.asarray(ra, float)
        elif name == "dec":
            new[name] = np.asarray(dec, float)
        elif name == "objid":
            new[name] = make_objid(ra, dec)
        elif name == "flux_r":
            new[name] = np.asarray(flux_r, float)
        elif name == "is_star_guess":
            new[name] = np.full(len(ra), 0.8)
        elif name == "init_flags":
            new[name] = np.full(len(ra), FLAG_RESIDUAL, np.int32)
        elif col.dtype.kind == "f":
            new[name] = np.full(len(ra), np.nan)
        else:
            new[name] = np.zeros(len(ra), dtype=col.dtype)
    if "init_flags" not in sub.colnames:
        sub = sub.copy()
        sub["init_flags"] = np.zeros(len(sub), np.int32)
        new["init_flags"] = np.full(len(ra), FLAG_RESIDUAL, np.int32)
    return vstack([sub, new], metadata_conflicts="silent")
