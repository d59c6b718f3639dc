"""Accuracy against truth, beside SEP and photutils: simulated SDSS fields, the real field, the M2 core.

    python bench/accuracy.py                      # everything (about 30-45 min on 2 quiet cores)
    python bench/accuracy.py --seed-offset 1000   # the same fields with fresh seeds
    python bench/accuracy.py --only sim --tools celeste --fields bright-galaxies   # iterate on one part
    python bench/accuracy.py --quick              # one small field, celeste and SEP (the smoke test)

Parts (``--only``, comma-separated; default all)
------------------------------------------------
``sim`` -- simulated fields (:mod:`celeste.simulate`, GalSim; SDSS-format frames with the real
    psField PSF of another run, sources from the Stripe 82 coadd), ``SIM_FIELDS``:

    ============== ============================================================================
    ordinary-1     a full frame (1489 x 2048) of the coadd's own population (~800 sources to
                   r = 23.5) plus 25 blended pairs 1-3" apart; the psField's real variation
    ordinary-2     the same kind of sky, another seed, the psField's spatial variation doubled
    bright-gal     ordinary sky, 10 pairs, 3 galaxies r 12.5-14, half-light radius 4-10",
                   Sersic bulge + disk with indices away from 4 and 1, bulge redder than disk
    bright-stars   ordinary sky, 10 pairs, 8 stars r 12-15 (saturated, bleeding, in fpM SATUR)
    crowded        ordinary sky, 10 pairs, a Plummer cluster of 600 stars (a = 30") at the centre
    ============== ============================================================================

    Every field has the PSF's power-law wing beyond the psField stamp and saturation.  Fields
    are rendered into ``<out>/sim`` (or ``--sim-dir``) and reused while their spec and the
    simulator's code are unchanged.  The region given to every tool is the r frame's
    footprint shrunk by ``EDGE_PX``; truth and catalogs are cut to it.  Tools: the project
    (``celeste-infer`` as a user runs it, ``--threads``, extra options by ``--celeste-arg``),
    SEP and photutils (:mod:`bench.peers`) on the same frames.
    Scores (:func:`celeste.score.score`; true r <= 22 for recall and errors, catalog r <= 22
    for precision; one-to-one match within 1"): F1, recall, precision; the fraction of true
    stars called galaxies (is_star < 0.5) and of true galaxies called stars; 1- and 2-sd
    coverage of r flux, g-r colour and position (per coordinate, and by the 2-D chi^2) from the
    catalog's sds; mean absolute errors of position, r magnitude, the four colours, frac_dev,
    axis ratio, radius and angle (Regier et al. 2019, Table 2 rules).  Per field and pooled
    (all fields' truths and catalogs together), plus recall per kind of true source (field,
    blend, bright galaxy, bright star, cluster) and ``near-bright false``: unmatched catalog
    sources (r <= 22) within ``NEAR_BRIGHT_ARCSEC`` of a true source brighter than r = 15.

``real`` -- the real field 2583-2-136, ordinary-sky half (``--region 323.26 323.43 -0.73
    -0.62``), one ``celeste-infer`` run:

    (a) galaxies near bright sources (issue 11): around catalog sources brighter than r = 16.5
        whose 15" disc is inside the region, the mean number of other catalog galaxies within
        15", against the region's galaxy density times pi (15")^2
        (:func:`celeste.score.galaxies_near_bright`; also against the density away from bright
        sources).
    (b) residuals near bright stars (issue 12): the sd of (x - F)/sqrt(F) per band over the
        unmasked pixels within 10" of stars brighter than r = 17.  Stars are chosen without
        the project: SEP's detections on the frame that SEP calls stars (:func:`bench.peers.run_sep`)
        with Kron r < 17, at least 25" inside the region.  F is rendered from the catalog
        (:func:`celeste.plot.render_model`: every catalog source within 40" of a chosen star,
        each with the PSF mixture the pipeline fits (:func:`celeste.images.psf_mixture`, the
        default ``--psf-components``) to the psField at the centre of its 128 px cell, and the
        pipeline's refined sky, :func:`celeste.images.refine_sky`).

``m2`` -- the 100 x 100 pixel box of the r frame of 2583-2-136 at columns 310-409, rows
    630-729 (the box StarNet, PCAT and DAOPHOT were compared on).  Truth: tests/data/hsc_m2_ngc7089.csv,
    F606W MagAuto as r (:func:`celeste.score.truth_from_hsc_m2`), r < 22; truth and catalogs cut to
    sources more than 5 px inside the box (r frame's WCS); one-to-one match within 0.5 px
    (0.198") and 0.5 mag.  Published F1 on this box (Liu et al. 2021, "Variational inference for
    deblending crowded starfields"; slightly different matching rule): StarNet 0.549, PCAT
    0.469, DAOPHOT 0.303.

Outputs: ``<out>/accuracy.md``, ``accuracy.json``, ``accuracy_errors.png``, and ``RESULT`` lines
on stdout (one per field and tool, pooled, real-field metric and M2 tool).  A run of every
part with every tool (not ``--quick``) also writes them to ``--results-dir`` (bench/results).
"""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
import warnings
from dataclasses import replace

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
# bench/ holds scripts whose names can shadow the project's packages (bench/kernels.py): keep it off the
# import path (Python puts a script's own directory first) and load bench modules by file path instead
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != BENCH]
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def bench_module(name):
    """Import ``bench/<name>.py`` by file path (as module ``bench_<name>``), once."""
    import importlib.util

    key = f"bench_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, os.path.join(BENCH, f"{name}.py"))
        mod = importlib.util.module_from_spec(spec)
        sys.modules[key] = mod
        spec.loader.exec_module(mod)
    return sys.modules[key]


from celeste import BANDS  # noqa: E402
from celeste.errors import CelesteError, ConfigError, DataError  # noqa: E402
from celeste.score import (ARCSEC_PER_PX, as_catalog, galaxies_near_bright, inside_pixel_box,  # noqa: E402
                           match, pixel_box_region, score, truth_from_hsc_m2)
from celeste.simulate import KIND_NAMES, FieldSpec, field_is_current, simulate_field  # noqa: E402

#: simulated fields: name -> spec (each at its own sky position so that pooled catalogs never cross-match)
SIM_FIELDS = (
    ("ordinary-1", FieldSpec(run=9901, camcol=1, field=1, seed=101, center_radec=(336.665, -0.93), n_blends=25)),
    ("ordinary-2", FieldSpec(run=9901, camcol=1, field=2, seed=102, center_radec=(336.965, -0.93), n_blends=25,
                             psf_variation=2.0)),
    ("bright-gal", FieldSpec(run=9901, camcol=1, field=3, seed=103, center_radec=(337.265, -0.93), n_blends=10,
                             n_bright_galaxies=3)),
    ("bright-stars", FieldSpec(run=9901, camcol=1, field=4, seed=104, center_radec=(337.565, -0.93), n_blends=10,
                               n_bright_stars=8)),
    ("crowded", FieldSpec(run=9901, camcol=1, field=5, seed=105, center_radec=(337.865, -0.93), n_blends=10,
                          cluster_stars=600, cluster_radius_arcsec=30.0)),
)
#: fields whose sky is ordinary (issue 11 asks precision >= 0.9 there)
ORDINARY_FIELDS = ("ordinary-1", "ordinary-2")
QUICK_FIELDS = (
    ("quick", FieldSpec(run=9902, camcol=1, field=1, seed=201, shape=(400, 400), center_radec=(336.665, -0.93),
                        n_blends=2, n_bright_stars=1, bright_star_r=(13.0, 14.0))),
)
#: region edge kept free of truth (pixels inside the frame edge)
EDGE_PX = 8.0
#: simulated-field scoring: match radius (arcsec), faintest r counted
MATCH_ARCSEC = 1.0
MAG_LIMIT = 22.0
#: unmatched catalog sources this close to a true source brighter than NEAR_BRIGHT_MAG are "near-bright false"
NEAR_BRIGHT_ARCSEC = 30.0
NEAR_BRIGHT_MAG = 15.0

REAL_DATA = os.path.join(ROOT, "data", "sdss")
REAL_FIELD = (2583, 2, 136)
#: the real field's ordinary-sky half (east of M2)
REAL_REGION = (323.26, 323.43, -0.73, -0.62)
BRIGHT_MAG = 16.5
NEAR_ARCSEC = 15.0
RESID_STAR_MAG = 17.0
RESID_RADIUS_ARCSEC = 10.0
#: chosen stars keep this far inside the region, so that every source shining on their pixels is in the catalog
RESID_EDGE_ARCSEC = 25.0
#: catalog sources rendered: within this distance of a chosen star
RESID_RENDER_ARCSEC = 40.0
#: PSF mixtures for the rendering are fitted at the centres of cells of this size (pixels)
PSF_CELL_PX = 128

M2_TRUTH = os.path.join(ROOT, "tests", "data", "hsc_m2_ngc7089.csv")
#: the M2 box in r-frame pixels, inclusive: columns 310-409, rows 630-729
M2_BOX = (310, 409, 630, 729)
M2_EDGE_PX = 5.0
M2_MATCH_PX = 0.5
M2_MAG_WINDOW = 0.5
M2_MAG_LIMIT = 22.0
#: cutout margin around the M2 box for the peers' background and neighbours (px)
M2_PEER_MARGIN = 64
PUBLISHED_M2_F1 = {"StarNet": 0.549, "PCAT": 0.469, "DAOPHOT": 0.303}

TOOLS = ("celeste", "SEP", "photutils")
PARTS = ("sim", "real", "m2")


def log(msg):
    print(f"[accuracy {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ----------------------------------------------------------------------- helpers
def _subset(cat, keep):
    return {k: np.asarray(v)[keep] for k, v in cat.items()}


def _concat(cats):
    keys = set.intersection(*[set(c) for c in cats])
    return {k: np.concatenate([np.asarray(c[k]) for c in cats]) for k in keys}


def _r(v, d=3):
    return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else round(float(v), d)


def _f(v, d=3):
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{d}f}"


def region_from_footprint(data_dir, run, camcol, field, edge_px=EDGE_PX):
    """Region (ra_min, ra_max, dec_min, dec_max) inside the r frame's footprint, shrunk by ``edge_px``.

    The footprint's corners (:func:`celeste.fieldindex.field_footprint`) are nearly
    axis-aligned for SDSS frames; the region is the box between the inner corners.
    """
    from celeste.fieldindex import field_footprint

    c = field_footprint(data_dir, run, camcol, field, band="r")
    ra = np.sort(c[:, 0])
    dec = np.sort(c[:, 1])
    m = edge_px * ARCSEC_PER_PX / 3600.0
    cosd = math.cos(math.radians(float(np.mean(dec))))
    return (float(ra[1] + m / cosd), float(ra[2] - m / cosd), float(dec[1] + m), float(dec[2] - m))


def in_region(cat, region):
    ra, dec = np.asarray(cat["ra"], float), np.asarray(cat["dec"], float)
    return (ra >= region[0]) & (ra <= region[1]) & (dec >= region[2]) & (dec <= region[3])


def run_celeste(region, data_dir, out, threads=2, extra=()):
    """Run ``celeste-infer`` as a user would; returns (catalog path, wall seconds, CPU seconds of the child).

    Raises
    ------
    DataError
        The command fails (its last output lines are in the message).
    """
    run_dir = out[:-5] + ".run"
    if os.path.isdir(run_dir):
        shutil.rmtree(run_dir)
    cmd = [sys.executable, "-m", "celeste.cli", "--region", *[f"{v:.7f}" for v in region], "--data-dir", data_dir,
           "--out", out, "--run-dir", run_dir, "--threads", str(threads), "--overwrite", "--no-progress", *extra]
    t0 = time.time()
    c0 = os.times()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    c1 = os.times()
    wall = time.time() - t0
    if p.returncode != 0:
        tail = "\n".join((p.stdout + p.stderr).strip().splitlines()[-5:])
        raise DataError(f"celeste-infer failed on {out} (exit {p.returncode}): {tail}")
    cpu = (c1.children_user - c0.children_user) + (c1.children_system - c0.children_system)
    return out, wall, cpu


def run_peers(tools, data_dir, field, box=None, photutils_colours=True):
    """SEP and/or photutils catalogs of one field (or a cutout); returns ({tool: catalog}, {tool: wall s})."""
    peers = bench_module("peers")
    cats, walls = {}, {}
    if not ({"SEP", "photutils"} & set(tools)):
        return cats, walls
    t0 = time.time()
    bands = peers.load_bands(data_dir, *field, box=box)
    t_load = time.time() - t0
    if "SEP" in tools:
        t0 = time.time()
        cats["SEP"] = peers.run_sep(bands)
        walls["SEP"] = t_load + time.time() - t0
    if "photutils" in tools:
        t0 = time.time()
        try:
            cats["photutils"] = peers.run_photutils(bands, colours=photutils_colours)
            walls["photutils"] = t_load + time.time() - t0
        except Exception as exc:  # noqa: BLE001 - a peer's internal failure is reported, not fatal
            log(f"photutils failed ({type(exc).__name__}: {exc}); its row is left out")
    return cats, walls


# ------------------------------------------------------------- simulated fields
def sim_specs(quick, seed_offset, names=None):
    """The (name, FieldSpec) list to run, seeds shifted by ``seed_offset``.

    Raises
    ------
    ConfigError
        ``names`` holds an unknown field name.
    """
    specs = QUICK_FIELDS if quick else SIM_FIELDS
    if names:
        known = {n for n, _ in specs}
        bad = [n for n in names if n not in known]
        if bad:
            raise ConfigError(f"--fields: unknown field(s) {bad}; known: {sorted(known)}")
        specs = tuple((n, s) for n, s in specs if n in names)
    return [(n, replace(s, seed=s.seed + int(seed_offset))) for n, s in specs]


def render(sim_dir, name, spec, processes):
    """Render ``spec`` into ``sim_dir`` unless a current rendering is there; returns its field directory."""
    fdir = os.path.join(sim_dir, str(spec.run), str(spec.camcol), str(spec.field))
    if field_is_current(fdir, spec):
        log(f"sim {name}: reusing {fdir}")
        return fdir
    log(f"sim {name}: rendering {spec.shape[0]} x {spec.shape[1]} px (seed {spec.seed})")
    res = simulate_field(sim_dir, spec, processes=processes)
    log(f"sim {name}: {res['info']['n_sources']} sources {res['info']['n_by_kind']}, "
        f"saturated pixels {res['info']['saturated_pixels']}")
    return fdir


def read_truth(fdir, region):
    """The truth catalog of a field (catalog columns plus ``kind``), cut to ``region``."""
    import fitsio

    path = os.path.join(fdir, "truth.fits")
    raw = fitsio.read(path)
    truth = as_catalog(raw, f"truth {path}")
    truth["kind"] = np.asarray(raw["kind"], float)
    return _subset(truth, in_region(truth, region))


def sim_field(sim_dir, run_dir, name, spec, tools, threads, extra, processes):
    """Render (or reuse) one field, run the tools on it; returns its truth, catalogs and timings."""
    fdir = render(sim_dir, name, spec, processes)
    with open(os.path.join(fdir, "sim.json")) as fh:
        info = json.load(fh)
    region = region_from_footprint(sim_dir, spec.run, spec.camcol, spec.field)
    truth = read_truth(fdir, region)
    cats, walls, cpu = {}, {}, {}
    if "celeste" in tools:
        log(f"sim {name}: celeste-infer on {tuple(round(v, 5) for v in region)}")
        out, walls["celeste"], cpu["celeste"] = run_celeste(region, sim_dir, os.path.join(run_dir, f"sim-{name}.fits"),
                                                            threads, extra)
        cats["celeste"] = as_catalog(out, "celeste")
    peer_cats, peer_walls = run_peers(tools, sim_dir, (spec.run, spec.camcol, spec.field))
    cats.update(peer_cats)
    walls.update(peer_walls)
    cats = {k: _subset(as_catalog(v, k), in_region(v, region)) for k, v in cats.items()}
    log(f"sim {name}: " + ", ".join(f"{k} {len(v['ra'])} sources" for k, v in cats.items())
        + f" (truth {len(truth['ra'])})")
    return {"name": name, "spec": spec.to_json(), "info": info, "region": region, "truth": truth, "cats": cats,
            "walls": walls, "cpu": cpu}


def kind_recall(cat, truth, mag_limit=MAG_LIMIT):
    """Recall per kind of true source (r <= mag_limit): {kind name: (recall or None, n)}."""
    _, it = match(cat, truth, MATCH_ARCSEC)
    hit = np.zeros(len(truth["ra"]), bool)
    hit[it] = True
    bright = truth["mag_r"] <= mag_limit
    out = {}
    for k, name in KIND_NAMES.items():
        sel = bright & (truth["kind"] == k)
        n = int(sel.sum())
        out[name] = (float(hit[sel].mean()) if n else None, n)
    return out


def near_bright_false(cat, truth, mag_limit=MAG_LIMIT):
    """Unmatched catalog sources (r <= mag_limit) within NEAR_BRIGHT_ARCSEC of a true source with r < NEAR_BRIGHT_MAG."""
    from celeste.score import angular_separation_arcsec

    ic, _ = match(cat, truth, MATCH_ARCSEC)
    spare = np.ones(len(cat["ra"]), bool)
    spare[ic] = False
    spare &= cat["mag_r"] <= mag_limit
    bright = np.flatnonzero(truth["mag_r"] < NEAR_BRIGHT_MAG)
    near = np.zeros(len(cat["ra"]), bool)
    for k in bright:
        near |= angular_separation_arcsec(cat["ra"], cat["dec"], truth["ra"][k], truth["dec"][k]) <= NEAR_BRIGHT_ARCSEC
    return int(np.sum(spare & near))


def score_tool(cat, truth):
    """:func:`celeste.score.score` plus per-kind recall and near-bright false detections."""
    s = score(cat, truth, MATCH_ARCSEC, None, MAG_LIMIT)
    s["kind_recall"] = kind_recall(cat, truth)
    s["near_bright_false"] = near_bright_false(cat, truth)
    return s


# ------------------------------------------------------------- real field
def _psf_cells(image, xs, ys):
    """PSF mixture per 128 px cell, fitted as the pipeline fits them; returns the cell key of each (x, y)."""
    from celeste.images import psf_mixture
    from celeste.options import ImageOptions

    n_components = ImageOptions().psf_components
    mixes = {}
    keys = []
    H, W = image.shape
    for x, y in zip(xs, ys):
        key = (int(np.clip(x, 0, W - 1) // PSF_CELL_PX), int(np.clip(y, 0, H - 1) // PSF_CELL_PX))
        if key not in mixes:
            cx = min((key[0] + 0.5) * PSF_CELL_PX, W - 1)
            cy = min((key[1] + 0.5) * PSF_CELL_PX, H - 1)
            mixes[key] = psf_mixture(image, cx, cy, n_components).as_array()
        keys.append(key)
    return mixes, keys


def render_per_cell(image, catalog):
    """Expected counts F (electrons) of ``image`` under ``catalog``, each source with its cell's PSF mixture."""
    from celeste.plot import render_model

    sky_counts = np.asarray(image.iota)[None, :] * image.sky
    F = sky_counts.copy()
    if len(catalog) == 0:
        return F
    x, y = image.wcs.all_world2pix(np.asarray(catalog["ra"], float), np.asarray(catalog["dec"], float), 0)
    mixes, keys = _psf_cells(image, x, y)
    keys = np.array([k[0] * 100000 + k[1] for k in keys])
    for key in np.unique(keys):
        sub = catalog[keys == key]
        mix = mixes[(int(key // 100000), int(key % 100000))]
        F += render_model(image, mix, sub) - sky_counts
    return F


def _real_cutout_box(region, pad_px=48):
    """Pixel box (x0, x1, y0, y1) half-open of the real r frame covering ``region`` plus ``pad_px``."""
    from astropy.wcs import WCS

    from celeste.sdss import field_paths, read_frame_header

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hdr = read_frame_header(field_paths(REAL_DATA, *REAL_FIELD)["frame"][2])
        w = WCS(hdr)
    ra = np.array([region[0], region[1], region[0], region[1]])
    dec = np.array([region[2], region[2], region[3], region[3]])
    x, y = w.all_world2pix(ra, dec, 0)
    W, H = int(hdr["NAXIS1"]), int(hdr["NAXIS2"])
    return (int(max(math.floor(x.min()) - pad_px, 0)), int(min(math.ceil(x.max()) + pad_px + 1, W)),
            int(max(math.floor(y.min()) - pad_px, 0)), int(min(math.ceil(y.max()) + pad_px + 1, H)))


def residual_near_stars(catalog_path, stars, region):
    """Residual sd per band over unmasked pixels within RESID_RADIUS_ARCSEC of ``stars`` (module docstring (b)).

    Parameters
    ----------
    catalog_path : str
        celeste-infer output covering ``region``.
    stars : dict with ``ra``, ``dec`` (deg)
    region : tuple

    Returns
    -------
    dict band letter -> {"sd", "n_pixels"}
    """
    from astropy.table import Table

    from celeste.images import refine_sky
    from celeste.options import ImageOptions
    from celeste.plot import residuals_near
    from celeste.score import angular_separation_arcsec
    from celeste.sdss import load_field

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cat = Table.read(catalog_path)
    ra, dec = np.asarray(cat["ra"], float), np.asarray(cat["dec"], float)
    near = np.zeros(len(cat), bool)
    for sr, sd in zip(stars["ra"], stars["dec"]):
        near |= angular_separation_arcsec(ra, dec, sr, sd) <= RESID_RENDER_ARCSEC
    cat = cat[near]
    out = {}
    img_opts = ImageOptions()
    for im in load_field(REAL_DATA, *REAL_FIELD, box=_real_cutout_box(region)):
        if img_opts.sky_refine:
            refine_sky(im, img_opts.sky_mesh_px)
        F = render_per_cell(im, cat)
        sx, sy = im.wcs.all_world2pix(np.asarray(stars["ra"], float), np.asarray(stars["dec"], float), 0)
        res = residuals_near(im, F, sx, sy, RESID_RADIUS_ARCSEC / ARCSEC_PER_PX)
        out[BANDS[im.band]] = {"sd": float(np.std(res)) if len(res) else None, "n_pixels": int(len(res))}
    return out


def real_part(run_dir, threads, extra):
    """Issue 11 DoD 2 and issue 12 DoD 2 on the real field's ordinary-sky half (module docstring)."""
    region = REAL_REGION
    log(f"real: celeste-infer on {region}")
    out, wall, cpu = run_celeste(region, REAL_DATA, os.path.join(run_dir, "real-half.fits"), threads, extra)
    cat = as_catalog(out, "celeste")
    excess = galaxies_near_bright(cat, region, BRIGHT_MAG, NEAR_ARCSEC)
    log(f"real: {excess['n_bright']} sources r < {BRIGHT_MAG}; {_f(excess['mean_near'], 2)} galaxies within "
        f"{NEAR_ARCSEC:g}\" against {_f(excess['expected'], 2)} expected")
    peers = bench_module("peers")
    sep = peers.run_sep(peers.load_bands(REAL_DATA, *REAL_FIELD, box=_real_cutout_box(region)))
    cosd = math.cos(math.radians(0.5 * (region[2] + region[3])))
    m = RESID_EDGE_ARCSEC / 3600.0
    inner = (region[0] + m / cosd, region[1] - m / cosd, region[2] + m, region[3] - m)
    pick = (sep["is_star"] >= 0.5) & (sep["mag_r"] < RESID_STAR_MAG) & in_region(sep, inner)
    stars = _subset(sep, pick)
    log(f"real: residuals within {RESID_RADIUS_ARCSEC:g}\" of {len(stars['ra'])} SEP stars r < {RESID_STAR_MAG:g}")
    resid = residual_near_stars(out, stars, region)
    return {"region": list(region), "catalog": out, "n_sources": int(len(cat["ra"])), "wall_s": wall, "cpu_s": cpu,
            "galaxies_near_bright": excess, "residual_near_stars": {"n_stars": int(len(stars["ra"])),
                                                                     "bands": resid}}


# ---------------------------------------------------------------------- M2
def _m2_wcs():
    from astropy.wcs import WCS

    from celeste.sdss import field_paths, read_frame_header

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return WCS(read_frame_header(field_paths(REAL_DATA, *REAL_FIELD)["frame"][2]))


def m2_part(run_dir, tools, threads, extra):
    """Every tool on the M2 box; returns scores, catalogs' sizes and timings."""
    wcs = _m2_wcs()
    region = pixel_box_region(wcs, M2_BOX)
    truth = truth_from_hsc_m2(M2_TRUTH)
    truth = _subset(truth, inside_pixel_box(truth, wcs, M2_BOX, M2_EDGE_PX))
    cats, walls = {}, {}
    if "celeste" in tools:
        log(f"m2: celeste-infer on {tuple(round(v, 5) for v in region)}")
        out, walls["celeste"], _ = run_celeste(region, REAL_DATA, os.path.join(run_dir, "m2.fits"), threads, extra)
        cats["celeste"] = as_catalog(out, "celeste")
    x0, x1, y0, y1 = M2_BOX
    mg = M2_PEER_MARGIN
    peer_cats, peer_walls = run_peers(tools, REAL_DATA, REAL_FIELD, box=(x0 - mg, x1 + 1 + mg, y0 - mg, y1 + 1 + mg),
                                      photutils_colours=False)
    cats.update(peer_cats)
    walls.update(peer_walls)
    cats = {k: _subset(as_catalog(v, k), inside_pixel_box(v, wcs, M2_BOX, M2_EDGE_PX)) for k, v in cats.items()}
    r = M2_MATCH_PX * ARCSEC_PER_PX
    scores = {t: score(c, truth, r, M2_MAG_WINDOW, M2_MAG_LIMIT) for t, c in cats.items()}
    for t, s in scores.items():
        log(f"m2: {t} TPR {_f(s['recall'])} PPV {_f(s['precision'])} F1 {_f(s['f1'])}")
    return {"region": list(region), "scores": scores, "walls": walls, "published_f1": PUBLISHED_M2_F1}


# ------------------------------------------------------------------- report
COVERAGE = (("flux_r", "r flux"), ("colour_gr", "g-r"), ("position", "position"), ("position_2d", "position 2-D"))
ERRORS = (("position_px", "position (px)"), ("mag_r", "r mag"), ("colour_ug", "u-g"), ("colour_gr", "g-r"),
          ("colour_ri", "r-i"), ("colour_iz", "i-z"), ("gal_frac_dev", "frac_dev"), ("gal_axis_ratio", "axis ratio"),
          ("gal_radius_arcsec", "radius (\")"), ("gal_angle_deg", "angle (deg)"))


def detection_table(scores):
    """Markdown: detection, classification and coverage per tool."""
    head = ["tool", "F1", "recall", "precision", "n truth", "n cat", "stars called gal", "gals called star",
            "near-bright false"] + [f"{h} 1sd / 2sd" for _, h in COVERAGE]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for tool, s in scores.items():
        row = [tool, _f(s["f1"]), _f(s["recall"]), _f(s["precision"]), str(s["n_truth"]), str(s["n_catalog"]),
               _f(s["errors"]["missed_stars"]["mean"]), _f(s["errors"]["missed_galaxies"]["mean"]),
               str(s["near_bright_false"])]
        for key, _ in COVERAGE:
            c = s["calibration"][key]
            row.append(f"{_f(c['within_1sd'])} / {_f(c['within_2sd'])}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def error_table(scores):
    """Markdown: mean absolute errors per tool (matched sources, true r <= 22)."""
    head = ["tool"] + [h for _, h in ERRORS]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for tool, s in scores.items():
        lines.append("| " + " | ".join([tool] + [_f(s["errors"][k]["mean"]) for k, _ in ERRORS]) + " |")
    return "\n".join(lines)


def kind_table(scores):
    """Markdown: recall per kind of true source, per tool (n true sources in the header)."""
    kinds = [k for k in KIND_NAMES.values() if any(s["kind_recall"][k][1] for s in scores.values())]
    if not kinds:
        return ""
    first = next(iter(scores.values()))
    head = ["tool"] + [f"{k} (n={first['kind_recall'][k][1]})" for k in kinds]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for tool, s in scores.items():
        lines.append("| " + " | ".join([tool] + [_f(s["kind_recall"][k][0]) for k in kinds]) + " |")
    return "\n".join(lines)


def summary_table(per_field, pooled):
    """Markdown: one row per field (and pooled): the figures the issues' done-criteria name."""
    tools = list(pooled)
    head = ["field"] + [f"F1 {t}" for t in tools] + ["precision celeste", "recall celeste", "recall SEP",
                                                       "stars called gal (celeste / SEP)",
                                                       "gals called star (celeste / SEP)", "r flux 1sd / 2sd",
                                                       "g-r 1sd / 2sd", "position 1sd / 2sd", "d frac_dev",
                                                       "d axis ratio", "d angle"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    rows = list(per_field.items()) + [("pooled", pooled)]
    for name, sc in rows:
        c = sc.get("celeste")
        sp = sc.get("SEP")
        row = [name] + [_f(sc[t]["f1"]) if t in sc else "-" for t in tools]

        def g(s, *path):
            if s is None:
                return None
            v = s
            for p in path:
                v = v[p]
            return v

        row += [_f(g(c, "precision")), _f(g(c, "recall")), _f(g(sp, "recall")),
                f"{_f(g(c, 'errors', 'missed_stars', 'mean'))} / {_f(g(sp, 'errors', 'missed_stars', 'mean'))}",
                f"{_f(g(c, 'errors', 'missed_galaxies', 'mean'))} / {_f(g(sp, 'errors', 'missed_galaxies', 'mean'))}"]
        for key in ("flux_r", "colour_gr", "position"):
            row.append(f"{_f(g(c, 'calibration', key, 'within_1sd'))} / {_f(g(c, 'calibration', key, 'within_2sd'))}")
        row += [_f(g(c, "errors", "gal_frac_dev", "mean")), _f(g(c, "errors", "gal_axis_ratio", "mean")),
                _f(g(c, "errors", "gal_angle_deg", "mean"), 1)]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def result_line(prefix, field, tool, s):
    """One ``RESULT`` line of a simulated field's (or the pool's) score for a tool."""
    cal = s["calibration"]
    err = s["errors"]
    items = [f"field={field}", f"tool={tool}", f"f1={_r(s['f1'])}", f"recall={_r(s['recall'])}",
             f"precision={_r(s['precision'])}", f"star_as_gal={_r(err['missed_stars']['mean'])}",
             f"gal_as_star={_r(err['missed_galaxies']['mean'])}", f"near_bright_false={s['near_bright_false']}"]
    for key, short in (("flux_r", "flux_r"), ("colour_gr", "gr"), ("position", "pos"), ("position_2d", "pos2d")):
        items += [f"cov1_{short}={_r(cal[key]['within_1sd'])}", f"cov2_{short}={_r(cal[key]['within_2sd'])}"]
    for key in ("position_px", "mag_r", "colour_ug", "colour_gr", "colour_ri", "colour_iz", "gal_frac_dev",
                "gal_axis_ratio", "gal_radius_arcsec", "gal_angle_deg"):
        items.append(f"d_{key}={_r(err[key]['mean'], 4)}")
    return f"RESULT {prefix} " + " ".join(items)


def errors_figure(path, fields):
    """Position error and |d r mag| against true r magnitude per tool (pooled simulated fields)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from celeste.score import angular_separation_arcsec

    tools = list(fields[0]["cats"])
    colours = dict(zip(TOOLS, ["tab:blue", "tab:orange", "tab:green"]))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    bins = np.arange(12.0, 22.51, 1.0)
    centres = 0.5 * (bins[1:] + bins[:-1])

    def binned(mag, err):
        med = np.full(len(centres), np.nan)
        for k in range(len(centres)):
            s = (mag >= bins[k]) & (mag < bins[k + 1]) & np.isfinite(err)
            if s.sum() >= 3:
                med[k] = np.median(err[s])
        return med

    for tool in tools:
        mags, dpos, dmag = [], [], []
        for f in fields:
            cat, truth = f["cats"][tool], f["truth"]
            ic, it = match(cat, truth, MATCH_ARCSEC)
            mags.append(truth["mag_r"][it])
            dpos.append(angular_separation_arcsec(cat["ra"][ic], cat["dec"][ic], truth["ra"][it],
                                                  truth["dec"][it]) / ARCSEC_PER_PX)
            dmag.append(np.abs(cat["mag_r"][ic] - truth["mag_r"][it]))
        mag, dp, dm = np.concatenate(mags), np.concatenate(dpos), np.concatenate(dmag)
        c = colours.get(tool)
        for ax, v in ((axes[0], dp), (axes[1], dm)):
            ax.scatter(mag, v, s=4, alpha=0.3, color=c)
            ax.plot(centres, binned(mag, v), "-o", ms=3, color=c, label=tool)
    axes[0].set_ylabel("position error (px)")
    axes[1].set_ylabel("|d mag r|")
    for ax in axes:
        ax.set_xlabel("true r (mag)")
        ax.set_yscale("log")
        ax.set_title("simulated fields, pooled (lines: median per mag)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, (np.floating, float)):
        return None if not np.isfinite(o) else float(o)
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, np.ndarray):
        return _jsonable(o.tolist())
    return o


def sim_report(fields):
    """Scores per field and pooled; markdown lines; RESULT lines."""
    tools = [t for t in TOOLS if all(t in f["cats"] for f in fields)]
    per_field = {f["name"]: {t: score_tool(f["cats"][t], f["truth"]) for t in tools} for f in fields}
    pooled_truth = _concat([f["truth"] for f in fields])
    pooled = {t: score_tool(_concat([f["cats"][t] for f in fields]), pooled_truth) for t in tools}
    md = ["## Simulated fields\n",
          f"{len(fields)} field(s), {pooled[tools[0]]['n_truth'] if tools else 0} true sources with r <= 22 in the "
          f"scored regions; one-to-one match within {MATCH_ARCSEC:g}\"; errors are means of absolute errors over "
          "matched sources (Regier et al. 2019, Table 2 rules); coverage: fraction within 1 and 2 posterior sd "
          "(0.683 and 0.954 when calibrated).  Ordinary fields: " + ", ".join(ORDINARY_FIELDS) + ".\n",
          summary_table(per_field, pooled), "",
          "### Pooled\n", detection_table(pooled), "", error_table(pooled), "", kind_table(pooled), ""]
    for f in fields:
        sc = per_field[f["name"]]
        fw = f["info"]["psf_fwhm_arcsec"]["r"]
        md += [f"### {f['name']} ({f['spec']['run']}-{f['spec']['camcol']}-{f['spec']['field']}, seed "
               f"{f['spec']['seed']}; {f['info']['n_by_kind']}; r PSF FWHM {fw['min']:.2f}-{fw['max']:.2f}\"; "
               f"saturated r pixels {f['info']['saturated_pixels']['r']})\n",
               detection_table(sc), "", error_table(sc), "", kind_table(sc), "",
               "Wall time (s): " + ", ".join(f"{t} {w:.0f}" for t, w in f["walls"].items()), ""]
    results = [result_line("sim", name, t, s) for name, sc in per_field.items() for t, s in sc.items()]
    results += [result_line("sim", "pooled", t, s) for t, s in pooled.items()]
    return {"per_field": per_field, "pooled": pooled}, md, results


def real_report(real):
    e = real["galaxies_near_bright"]
    r = real["residual_near_stars"]
    md = ["## Real field 2583-2-136, ordinary-sky half\n",
          f"Region {tuple(real['region'])}; celeste catalog of {real['n_sources']} sources.\n",
          f"(a) Around the {e['n_bright']} catalog sources brighter than r = {BRIGHT_MAG} (15\" disc inside the "
          f"region): {_f(e['mean_near'], 2)} other catalog galaxies within {NEAR_ARCSEC:g}\" on average, against "
          f"{_f(e['expected'], 2)} expected from the region's galaxy density ({_f(e['density_per_arcmin2'], 2)} per "
          f"arcmin^2): ratio **{_f(e['ratio'], 2)}** (against the density away from bright sources: "
          f"{_f(e['expected_background'], 2)} expected, ratio {_f(e['ratio_background'], 2)}).\n",
          f"(b) Residual sd (x - F)/sqrt(F) over unmasked pixels within {RESID_RADIUS_ARCSEC:g}\" of the "
          f"{r['n_stars']} SEP stars brighter than r = {RESID_STAR_MAG:g}:\n",
          "| band | " + " | ".join(BANDS) + " |", "|---|" + "---:|" * len(BANDS),
          "| sd | " + " | ".join(_f(r["bands"][b]["sd"]) for b in BANDS) + " |",
          "| pixels | " + " | ".join(str(r["bands"][b]["n_pixels"]) for b in BANDS) + " |", ""]
    results = [f"RESULT real galaxies_near_bright ratio={_r(e['ratio'])} mean_near={_r(e['mean_near'])} "
               f"expected={_r(e['expected'])} n_bright={e['n_bright']} ratio_background={_r(e['ratio_background'])}",
               "RESULT real residual_near_stars " + " ".join(f"sd_{b}={_r(r['bands'][b]['sd'])}" for b in BANDS)
               + f" n_stars={r['n_stars']}"]
    return md, results


def m2_report(m2):
    lines = ["## M2 core (2583-2-136 r, columns 310-409, rows 630-729; Hubble truth)\n",
             "Truth: HSC F606W MagAuto as r, r < 22, more than 5 px inside the box; one-to-one match within "
             "0.5 px and 0.5 mag.  Published F1 (Liu et al. 2021) used a slightly different matching rule.\n",
             "| tool | TPR (recall) | PPV (precision) | F1 | n truth | n catalog | n matched |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for tool, s in m2["scores"].items():
        lines.append(f"| {tool} | {_f(s['recall'])} | {_f(s['precision'])} | {_f(s['f1'])} | {s['n_truth']} | "
                     f"{s['n_catalog']} | {s['n_matched']} |")
    for name, f1 in PUBLISHED_M2_F1.items():
        lines.append(f"| {name} (published) | - | - | {f1:.3f} | - | - | - |")
    lines.append("")
    results = [f"RESULT m2 tool={t} tpr={_r(s['recall'])} ppv={_r(s['precision'])} f1={_r(s['f1'])}"
               for t, s in m2["scores"].items()]
    return lines, results


def parse_args(argv):
    p = argparse.ArgumentParser(description="Accuracy of celeste against truth, beside SEP and photutils.")
    p.add_argument("--quick", action="store_true", help="one small simulated field, celeste and SEP (smoke test)")
    p.add_argument("--only", default=",".join(PARTS), help=f"parts to run, comma-separated from {','.join(PARTS)}")
    p.add_argument("--fields", default=None, help="simulated fields to run, comma-separated (default all)")
    p.add_argument("--tools", default=",".join(TOOLS), help=f"tools, comma-separated from {','.join(TOOLS)}")
    p.add_argument("--celeste-only", action="store_true", help="same as --tools celeste (fast iteration)")
    p.add_argument("--seed-offset", type=int, default=0, help="added to every simulated field's seed (fresh fields)")
    p.add_argument("--out-dir", default=os.path.join(ROOT, "bench", "out"), help="work and output directory")
    p.add_argument("--sim-dir", default=None, help="rendered fields (default <out-dir>/sim; reused when current)")
    p.add_argument("--results-dir", default=os.path.join(ROOT, "bench", "results"),
                   help="where a complete run also writes accuracy.md/json/png")
    p.add_argument("--threads", type=int, default=2, help="celeste-infer --threads")
    p.add_argument("--processes", type=int, default=2, help="processes rendering the bands of a field")
    p.add_argument("--celeste-arg", action="append", default=[], metavar="ARG",
                   help="extra celeste-infer argument (repeatable), e.g. --celeste-arg=--residual-rounds=2")
    a = p.parse_args(argv)
    a.parts = [s for s in a.only.split(",") if s]
    a.tool_list = ["celeste"] if a.celeste_only else [s for s in a.tools.split(",") if s]
    if a.quick:
        a.parts = ["sim"]
        a.tool_list = [t for t in a.tool_list if t != "photutils"]
    for v, known, name in ((a.parts, PARTS, "--only"), (a.tool_list, TOOLS, "--tools")):
        bad = [x for x in v if x not in known]
        if bad or not v:
            raise ConfigError(f"{name}: expected a comma-separated subset of {','.join(known)}, got {bad or v}")
    if a.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {a.threads}")
    if a.processes < 1:
        raise ConfigError(f"--processes must be >= 1, got {a.processes}")
    a.field_names = [s for s in a.fields.split(",") if s] if a.fields else None
    return a


def main(argv=None):
    t_start = time.time()
    try:
        a = parse_args(argv)
        os.makedirs(a.out_dir, exist_ok=True)
        run_dir = os.path.join(a.out_dir, "runs")
        os.makedirs(run_dir, exist_ok=True)
        sim_dir = a.sim_dir or os.path.join(a.out_dir, "sim")
        cmd = " ".join(["python bench/accuracy.py"] + list(sys.argv[1:] if argv is None else argv))
        md = ["# Accuracy against truth, beside SEP and photutils\n",
              f"Command: `{cmd.strip()}` ({time.strftime('%Y-%m-%d %H:%M')}; threads {a.threads}; load "
              f"{os.getloadavg()[0]:.1f}).\n"]
        doc = {"command": cmd.strip(), "threads": a.threads, "seed_offset": a.seed_offset, "tools": a.tool_list,
               "parts": a.parts, "celeste_args": a.celeste_arg}
        results = []
        if "sim" in a.parts:
            fields = [sim_field(sim_dir, run_dir, name, spec, a.tool_list, a.threads, a.celeste_arg, a.processes)
                      for name, spec in sim_specs(a.quick, a.seed_offset, a.field_names)]
            scores, lines, res = sim_report(fields)
            md += lines
            results += res
            doc["sim"] = {"fields": {f["name"]: {"spec": f["spec"], "info": f["info"], "region": f["region"],
                                                 "wall_s": f["walls"], "celeste_cpu_s": f["cpu"].get("celeste")}
                                     for f in fields}, **scores}
            errors_figure(os.path.join(a.out_dir, "accuracy_errors.png"), fields)
            md += ["![errors against magnitude](accuracy_errors.png)", ""]
        if "real" in a.parts:
            if "celeste" not in a.tool_list:
                raise ConfigError("--only real needs the celeste tool")
            real = real_part(run_dir, a.threads, a.celeste_arg)
            lines, res = real_report(real)
            md += lines
            results += res
            doc["real"] = real
        if "m2" in a.parts:
            m2 = m2_part(run_dir, a.tool_list, a.threads, a.celeste_arg)
            lines, res = m2_report(m2)
            md += lines
            results += res
            doc["m2"] = m2
        doc["wall_s"] = time.time() - t_start
        md += ["", f"Total wall time {doc['wall_s']:.0f} s.", ""]
        text = "\n".join(md)
        outs = [a.out_dir]
        complete = (not a.quick and set(a.parts) == set(PARTS) and set(a.tool_list) == set(TOOLS)
                    and a.field_names is None)
        if complete and os.path.abspath(a.results_dir) != os.path.abspath(a.out_dir):
            os.makedirs(a.results_dir, exist_ok=True)
            outs.append(a.results_dir)
        for d in outs:
            with open(os.path.join(d, "accuracy.md"), "w") as fh:
                fh.write(text)
            with open(os.path.join(d, "accuracy.json"), "w") as fh:
                json.dump(_jsonable(doc), fh, indent=1)
            png = os.path.join(a.out_dir, "accuracy_errors.png")
            if d != a.out_dir and os.path.exists(png):
                shutil.copyfile(png, os.path.join(d, "accuracy_errors.png"))
        print(text)
        for line in results:
            print(line)
    except CelesteError as exc:
        print(f"accuracy: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
