"""Simulated SDSS fields with known truth, rendered with GalSim.

Writes, in the layout the SDSS reader expects::

    <out>/<run>/<camcol>/photoField-<run:06d>-<camcol>.fits
    <out>/<run>/<camcol>/<field>/frame-<b>-<run:06d>-<camcol>-<field:04d>.fits[.bz2]
    <out>/<run>/<camcol>/<field>/psField-<run:06d>-<camcol>-<field:04d>.fits
    <out>/<run>/<camcol>/<field>/fpM-<run:06d>-<b><camcol>-<field:04d>.fits
    <out>/<run>/<camcol>/<field>/truth.fits

Frames mimic SDSS DR8+ ``frame`` files (SDSS data model, "frame"): HDU0 the
sky-subtracted calibrated image in nmgy with a TAN WCS copied from a real frame
(CRPIX moved to the image centre, CRVAL to a chosen sky position); HDU1 the
calibration vector (nmgy per DN, one value per column) cut from the real
frame's; HDU2 a one-row table ALLSKY (sky in DN on a grid binned 8x8),
XINTERP (W,), YINTERP (H,) with the real frame's semantics: the sky at pixel
(y, x) is ALLSKY bilinearly interpolated at grid position (YINTERP[y],
XINTERP[x]), clamped at the grid edges (:func:`celeste.sdss.interpolate_sky`); HDU3 the real frame's astrometry row
(run/camcol/field updated; its coefficients do not describe the simulated WCS,
use HDU0).  The psField is copied from a real one, fpM masks are written empty
in the real format, and photoField holds the template row of the real
photoField (GAIN, DARK_VARIANCE, ...) with RUN/CAMCOL/FIELD changed.

Sources are drawn (with replacement) from the SDSS Stripe 82 coadd catalog,
converted with :func:`celeste.score.truth_from_stripe82`: stars are the survey
PSF; galaxies are fracdev * de Vaucouleurs (Sersic n=4, truncated at 8
half-light radii, flux renormalized) + (1 - fracdev) * exponential with one
shared shape (axis ratio, angle east of north, circularized half-light radius),
convolved with the PSF.  The PSF is the real psField KL reconstruction at each
source's pixel position (:func:`celeste.sdss.read_psfield`, 51 x 51 stamp, the
same model the reader gives the inference), drawn as ``galsim.InterpolatedImage`` with
``method='no_pixel'`` (the psField stamps include the pixel response).

Caveat: the psField PSF stamps' first moments are off their centre pixel by
up to ~0.2 px (asymmetric wings); a source's truth position is the stamp centre,
as the reader's ``psf_at`` assumes, so a tool that centroids light will show a
position-error floor of about that size.

Noise: expected electrons (model / calibration + sky_DN) * gain, Poisson
draw, plus Gaussian read/dark noise of variance DARK_VARIANCE (DN^2); the frame
is then (counts_e / gain - sky_DN) * calibration -- the exact inverse of the
reader's counts_e = (frame / calibration + sky_DN) * gain.

CLI: ``python bench/simulate.py --out DIR --n-sources N --seed S --size H W``.
"""
import argparse
import bz2
import math
import os
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
import multiprocessing

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from celeste import BANDS  # noqa: E402
from celeste.errors import ConfigError, DataError  # noqa: E402
from celeste.sdss import interpolate_sky, read_psfield  # noqa: E402
from celeste.score import ARCSEC_PER_PX, flux_to_mag, truth_from_stripe82, write_catalog  # noqa: E402

DEFAULT_CATALOG = os.path.join(ROOT, "tests", "data", "stripe82_coadd_94_1_12.fits")
DEFAULT_PSFIELD = os.path.join(ROOT, "tests", "data", "psField-000094-1-0012.fits")
DEFAULT_TEMPLATE = os.path.join(ROOT, "data", "sdss", "2583", "2", "136")
TEMPLATE_RUN, TEMPLATE_CAMCOL, TEMPLATE_FIELD = 2583, 2, 136

#: allsky grid binning (pixels per grid cell), as in SDSS frames
SKY_BIN = 8

_TEMPLATE_CACHE = {}
_PSF_SIZE = 51


# ----------------------------------------------------------------- real inputs
def read_template(template_dir=DEFAULT_TEMPLATE):
    """Header, calibration, sky, gain and mask-format facts from a real SDSS field.

    Parameters
    ----------
    template_dir : str
        Directory holding ``frame-<b>-002583-2-0136.fits.bz2`` and fpM files;
        ``photoField-002583-2.fits`` is in its parent.

    Returns
    -------
    dict
        ``header[b]`` (fitsio header of HDU0), ``calibration[b]`` (2048,)
        nmgy/DN, ``sky_dn[b]`` mean ALLSKY (DN), ``astrom[b]`` HDU3 row,
        ``photofield_row`` (1,) structured, ``photofield_header``,
        ``fpm_header``, ``fpm_types`` (mask-type table).

    Raises
    ------
    DataError
        A template file is missing or unreadable.
    """
    import fitsio

    key = os.path.abspath(template_dir)
    if key in _TEMPLATE_CACHE:
        return _TEMPLATE_CACHE[key]
    tag = f"{TEMPLATE_RUN:06d}-{TEMPLATE_CAMCOL}-{TEMPLATE_FIELD:04d}"
    out = {"header": {}, "calibration": {}, "sky_dn": {}, "astrom": {}}
    try:
        for b in BANDS:
            path = os.path.join(template_dir, f"frame-{b}-{tag}.fits.bz2")
            with fitsio.FITS(path) as f:
                out["header"][b] = f[0].read_header()
                out["calibration"][b] = np.asarray(f[1].read(), np.float64)
                out["sky_dn"][b] = float(np.mean(f[2].read()["ALLSKY"][0]))
                out["astrom"][b] = f[3].read()
        pf = os.path.join(os.path.dirname(template_dir), f"photoField-{TEMPLATE_RUN:06d}-{TEMPLATE_CAMCOL}.fits")
        with fitsio.FITS(pf) as f:
            rows = f[1].read()
            out["photofield_row"] = rows[rows["FIELD"] == TEMPLATE_FIELD]
            out["photofield_header"] = f[0].read_header()
        fpm = os.path.join(template_dir, f"fpM-{TEMPLATE_RUN:06d}-r{TEMPLATE_CAMCOL}-{TEMPLATE_FIELD:04d}.fits")
        with fitsio.FITS(fpm) as f:
            out["fpm_header"] = f[0].read_header()
            out["fpm_types"] = f[len(f) - 1].read()
    except OSError as exc:
        raise DataError(f"{template_dir}: cannot read the template SDSS field ({exc})") from None
    if len(out["photofield_row"]) != 1:
        raise DataError(f"{pf}: no row for field {TEMPLATE_FIELD}")
    _TEMPLATE_CACHE[key] = out
    return out


# ----------------------------------------------------------------------- sky
def sky_grid(shape, sky_dn, slope=0.01):
    """ALLSKY grid and XINTERP/YINTERP vectors for an image of ``shape`` (H, W).

    Grid cell k covers columns 8k .. 8k+7 (centre 8k + 3.5), so XINTERP[x] =
    (x - 3.5) / 8 as in real frames; rows carry the real frames' one-cell
    margin, YINTERP[y] = (y - 3.5) / 8 + 1.  The sky is ``sky_dn`` (DN) with a
    linear ramp of +-``slope``/2 (fractional) along rows only.

    Returns
    -------
    allsky : ndarray (ny, nx) float32, DN
    xinterp : ndarray (W,) float32
    yinterp : ndarray (H,) float32
    """
    h, w = shape
    nx = int(math.ceil(w / SKY_BIN))
    ny = int(math.ceil((h + SKY_BIN) / SKY_BIN)) + 4
    xinterp = ((np.arange(w) - 3.5) / SKY_BIN).astype(np.float32)
    yinterp = ((np.arange(h) - 3.5) / SKY_BIN + 1.0).astype(np.float32)
    ramp = 1.0 + slope * (np.arange(ny) - (ny - 1) / 2.0) / max(ny - 1, 1)
    allsky = (sky_dn * ramp[:, None] * np.ones((1, nx))).astype(np.float32)
    return allsky, xinterp, yinterp


# ----------------------------------------------------------------- sources
def local_jacobian_arcsec(wcs, x, y):
    """d(east, north)/d(x, y) in arcsec per pixel at pixel (x, y), by central differences of ``wcs``.

    Returns
    -------
    ndarray (2, 2) float64
        [[de/dx, de/dy], [dn/dx, dn/dy]], east = dRA cos(dec) and north = dDec.
    """
    h = 0.5
    pts = np.array([[x + h, y], [x - h, y], [x, y + h], [x, y - h]], np.float64)
    ra, dec = wcs.all_pix2world(pts[:, 0], pts[:, 1], 0)
    cosd = math.cos(math.radians(float(np.mean(dec))))
    dra = (ra + 180.0) % 360.0 - 180.0
    east = dra * cosd * 3600.0
    north = dec * 3600.0
    return np.array(
        [[(east[0] - east[1]) / (2 * h), (east[2] - east[3]) / (2 * h)],
         [(north[0] - north[1]) / (2 * h), (north[2] - north[3]) / (2 * h)]]
    )


def draw_sources(rng, n, catalog_path=DEFAULT_CATALOG, r_mag_range=(14.0, 23.5)):
    """Draw ``n`` source descriptions (with replacement) from the Stripe 82 coadd catalog.

    Returns
    -------
    sources : dict of str -> ndarray (n,)
        is_star (0/1), flux_<b> (nmgy), gal_frac_dev, gal_axis_ratio
        (clipped to [0.1, 1]), gal_angle_deg (east of north), and
        gal_radius_arcsec (circularized, clipped to [0.1, 6]); galaxy
        entries are NaN for stars.
    n_eligible : int
        Catalog sources that passed the cuts.
    catalog : dict
        The whole converted catalog (:func:`celeste.score.truth_from_stripe82`).

    Raises
    ------
    ConfigError
        No catalog source lies in ``r_mag_range``.
    """
    cat = truth_from_stripe82(catalog_path)
    ok = np.ones(len(cat["ra"]), bool)
    for b in BANDS:
        ok &= np.isfinite(cat[f"flux_{b}"]) & (cat[f"flux_{b}"] > 0)
    ok &= (cat["mag_r"] >= r_mag_range[0]) & (cat["mag_r"] <= r_mag_range[1])
    gal = cat["is_star"] < 0.5
    shape_ok = np.isfinite(cat["gal_axis_ratio"]) & np.isfinite(cat["gal_angle_deg"]) & np.isfinite(
        cat["gal_radius_arcsec"]) & np.isfinite(cat["gal_frac_dev"])
    ok &= ~gal | shape_ok
    idx = np.flatnonzero(ok)
    if len(idx) == 0:
        raise ConfigError(f"r_mag_range: no catalog source of {catalog_path} within {r_mag_range}")
    pick = rng.choice(idx, size=n, replace=True)
    src = {"is_star": cat["is_star"][pick].copy()}
    for b in BANDS:
        src[f"flux_{b}"] = cat[f"flux_{b}"][pick].copy()
    star = src["is_star"] == 1
    src["gal_frac_dev"] = np.where(star, np.nan, cat["gal_frac_dev"][pick])
    q = np.clip(cat["gal_axis_ratio"][pick], 0.1, 1.0)
    src["gal_axis_ratio"] = np.where(star, np.nan, q)
    src["gal_angle_deg"] = np.where(star, np.nan, np.mod(cat["gal_angle_deg"][pick], 180.0))
    src["gal_radius_arcsec"] = np.where(star, np.nan, np.clip(cat["gal_radius_arcsec"][pick], 0.1, 6.0))
    return src, len(idx), cat


def _catalog_area_deg2(cat):
    dec0 = math.radians(float(np.mean(cat["dec"])))
    return (np.ptp(cat["ra"]) * math.cos(dec0)) * np.ptp(cat["dec"])


# ----------------------------------------------------------------- rendering
def render_band(task):
    """Render one band: model image (nmgy), then noisy sky-subtracted frame (nmgy).

    Parameters
    ----------
    task : dict
        band (int), shape (H, W), x, y (n,) pixel positions, flux (n,) nmgy,
        is_star, frac_dev, axis_ratio, angle_deg, radius_arcsec (n,),
        jac (n, 2, 2) arcsec/px, psfield (path), calibration (W,),
        sky_dn (H, W), gain, dark_variance, seed.

    Returns
    -------
    model : ndarray (H, W) float64, nmgy (noise-free, no sky)
    frame : ndarray (H, W) float32, nmgy
    """
    import galsim

    b = task["band"]
    h, w = task["shape"]
    image = galsim.ImageD(w, h, xmin=0, ymin=0, init_value=0.0)
    psf_model = read_psfield(task["psfield"], b, size=_PSF_SIZE)
    for k in range(len(task["x"])):
        x, y, flux = float(task["x"][k]), float(task["y"][k]), float(task["flux"][k])
        psf_arr = psf_model.psf_at(x, y)
        psf = galsim.InterpolatedImage(galsim.ImageD(psf_arr, scale=1.0))
        if task["is_star"][k] == 1:
            obj = psf.withFlux(flux)
            half = psf_arr.shape[0] // 2 + 2
        else:
            rc = float(task["radius_arcsec"][k])
            q = float(task["axis_ratio"][k])
            fd = float(task["frac_dev"][k])
            comps = []
            if fd > 0:
                comps.append(galsim.DeVaucouleurs(half_light_radius=rc, trunc=8 * rc, flux_untruncated=False,
                                                  flux=fd))
            if fd < 1:
                comps.append(galsim.Exponential(half_light_radius=rc, flux=1.0 - fd))
            gal = galsim.Add(comps) if len(comps) > 1 else comps[0]
            # shear angle is measured from +east towards +north: beta = 90 deg - (angle east of north)
            gal = gal.shear(q=q, beta=(90.0 - float(task["angle_deg"][k])) * galsim.degrees)
            j = task["jac"][k]
            wcs = galsim.JacobianWCS(j[0, 0], j[0, 1], j[1, 0], j[1, 1])
            obj = galsim.Convolve(wcs.toImage(gal), psf).withFlux(flux)
            px = rc / ARCSEC_PER_PX / math.sqrt(q)
            half = min(psf_arr.shape[0] // 2 + int(math.ceil(8 * px)) + 2, 512)
        ix, iy = int(round(x)), int(round(y))
        bounds = galsim.BoundsI(ix - half, ix + half, iy - half, iy + half)
        stamp = galsim.ImageD(bounds, init_value=0.0)
        obj.drawImage(image=stamp, method="no_pixel", center=galsim.PositionD(x, y), add_to_image=True)
        overlap = bounds & image.bounds
        if overlap.isDefined():
            image[overlap] += stamp[overlap]
    model = image.array.copy()
    rng = np.random.default_rng(task["seed"])
    cal = np.asarray(task["calibration"], np.float64)[None, :]
    sky_dn = task["sky_dn"]
    gain = task["gain"]
    expected_e = (model / cal + sky_dn) * gain
    counts_e = rng.poisson(np.clip(expected_e, 0, None)).astype(np.float64)
    counts_e += rng.normal(0.0, math.sqrt(task["dark_variance"]) * gain, counts_e.shape)
    frame = ((counts_e / gain - sky_dn) * cal).astype(np.float32)
    return model, frame


# ---------------------------------------------------------------------- writing
def _frame_header(template_header, band, run, camcol, field, crpix, crval, nmgy, seed):
    import fitsio

    skip = {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "BZERO", "BSCALE"}
    hdr = fitsio.FITSHDR()
    for rec in template_header.records():
        name = rec.get("name")
        if name is None or name.upper() in skip:
            continue
        hdr.add_record(rec)
    hdr["RUN"] = run
    hdr["CAMCOL"] = camcol
    hdr["FRAME"] = field
    hdr["FILTER"] = band
    hdr["CRPIX1"], hdr["CRPIX2"] = float(crpix[0]), float(crpix[1])
    hdr["CRVAL1"], hdr["CRVAL2"] = float(crval[0]), float(crval[1])
    hdr["NMGY"] = float(nmgy)
    hdr.add_record({"name": "SIMULATE", "value": True, "comment": "rendered by celeste bench/simulate.py"})
    hdr.add_record({"name": "SIMSEED", "value": int(seed), "comment": "simulation seed"})
    return hdr


def _write_frame(path, frame, header, calibration, allsky, xinterp, yinterp, astrom, compress):
    import fitsio

    h, w = frame.shape
    sky = np.zeros(1, dtype=[("ALLSKY", ">f4", allsky.shape), ("XINTERP", ">f4", (w,)), ("YINTERP", ">f4", (h,))])
    sky["ALLSKY"][0] = allsky
    sky["XINTERP"][0] = xinterp
    sky["YINTERP"][0] = yinterp
    plain = path[:-4] if path.endswith(".bz2") else path
    with fitsio.FITS(plain, "rw", clobber=True) as f:
        f.write(np.ascontiguousarray(frame, dtype=np.float32), header=header)
        f.write(np.asarray(calibration, dtype=np.float32))
        f.write(sky)
        f.write(astrom)
    if compress:
        with open(plain, "rb") as src, bz2.open(plain + ".bz2", "wb", compresslevel=9) as dst:
            shutil.copyfileobj(src, dst)
        os.remove(plain)


def _write_empty_fpm(path, template_header, types, run, camcol, field, shape):
    import fitsio

    hdr = fitsio.FITSHDR()
    for rec in template_header.records():
        if rec.get("name", "").upper() in {"SIMPLE", "BITPIX", "NAXIS", "EXTEND"}:
            continue
        hdr.add_record(rec)
    hdr["RUN"], hdr["CAMCOL"], hdr["FIELD"] = run, camcol, field
    hdr["MASKROWS"], hdr["MASKCOLS"] = int(shape[0]), int(shape[1])
    names = ["refcntr", "nspan", "row0", "col0", "rmin", "rmax", "cmin", "cmax", "npix", "s"]
    formats = ["1J"] * 9 + ["1PB()"]
    nplane = int(template_header.get("NPLANE", 10))
    with fitsio.FITS(path, "rw", clobber=True) as f:
        f.write(None, header=hdr)
        for _ in range(nplane):
            f.create_table_hdu(names=names, formats=formats)
        f.write(types)


def _write_photofield(path, template, run, camcol, field):
    """Write or update the photoField with one row per simulated field (template row, ids replaced)."""
    import fitsio

    row = template["photofield_row"].copy()
    row["RUN"] = run
    row["CAMCOL"] = camcol
    row["FIELD"] = field
    rows = row
    if os.path.exists(path):
        old = fitsio.read(path, ext=1)
        old = old[old["FIELD"] != field]
        rows = np.sort(np.concatenate([old, row]), order="FIELD")
    hdr = fitsio.FITSHDR()
    for rec in template["photofield_header"].records():
        if rec.get("name", "").upper() in {"SIMPLE", "BITPIX", "NAXIS", "EXTEND"}:
            continue
        hdr.add_record(rec)
    hdr["RUN"] = run
    hdr["CAMCOL"] = str(camcol)
    hdr["FIELD0"] = int(rows["FIELD"].min())
    hdr["NFIELDS"] = len(rows)
    with fitsio.FITS(path, "rw", clobber=True) as f:
        f.write(None, header=hdr)
        f.write(rows)


# ---------------------------------------------------------------------- driver
def simulate_field(out_dir, run=9999, camcol=1, field=1, n_sources=None, seed=0, crowding=1.0,
                   catalog=DEFAULT_CATALOG, psfield=DEFAULT_PSFIELD, shape=(1489, 2048),
                   center_radec=(336.665, -0.93), template_dir=DEFAULT_TEMPLATE, r_mag_range=(14.0, 23.5),
                   compress=True, processes=None):
    """Render one simulated SDSS field and its truth catalog.

    Parameters
    ----------
    out_dir : str
        Root of the SDSS-layout tree to write into.
    run, camcol, field : int
        Identifiers of the simulated field.
    n_sources : int or None
        Number of sources at ``crowding`` 1; None uses the catalog's own
        density (its sources in ``r_mag_range`` per square degree) times the
        image area.
    seed : int
        Seed of positions, sources and noise.
    crowding : float
        Multiplies the number of sources (density).
    catalog : str
        Stripe 82 coadd catalog the sources are drawn from.
    psfield : str
        Real psField file; copied into the field and used for the PSF.
    shape : (int, int)
        Image (H, W) pixels.
    center_radec : (float, float)
        Sky position (deg) of the image centre (CRVAL).
    template_dir : str
        Real field whose headers, calibration, sky and gains are reused.
    r_mag_range : (float, float)
        r magnitudes of catalog sources eligible for drawing.
    compress : bool
        Write frames as ``.fits.bz2`` (as SDSS distributes them).
    processes : int or None
        Render bands in this many spawned processes; None: 1 for images
        under a million pixels, else 2.

    Returns
    -------
    dict
        ``dir`` (field directory), ``truth`` (catalog dict with extra x, y
        columns: r-band pixel positions; other bands have their own WCS),
        ``frames`` (list of paths), ``model`` (5, H, W) noise-free nmgy images, ``sky_nmgy`` (5,) mean sky per pixel.

    Raises
    ------
    ConfigError
        Bad shape, crowding, counts or magnitude range.
    DataError
        Unreadable template, catalog or psField.
    """
    import fitsio
    from astropy.wcs import WCS

    h, w = (int(shape[0]), int(shape[1]))
    if h < 16 or w < 16:
        raise ConfigError(f"shape: image must be at least 16 x 16 pixels, got {shape}")
    if not crowding > 0:
        raise ConfigError(f"crowding: must be > 0, got {crowding}")
    if n_sources is not None and n_sources < 0:
        raise ConfigError(f"n_sources: must be >= 0, got {n_sources}")
    for p in (catalog, psfield):
        if not os.path.exists(p):
            raise DataError(f"{p}: no such file")
    tpl = read_template(template_dir)
    rng = np.random.default_rng(seed)

    # WCS of each band: that band's real CD matrix, centred on the chosen position.  Sources are placed
    # in r-band pixels; their sky positions give each band's own pixel positions (as in real SDSS,
    # where the band frames of one field are not pixel-registered).
    crpix = ((w + 1) / 2.0, (h + 1) / 2.0)
    wcs_keys = ("CTYPE1", "CTYPE2", "CUNIT1", "CUNIT2", "CRPIX1", "CRPIX2", "CRVAL1", "CRVAL2",
                "CD1_1", "CD1_2", "CD2_1", "CD2_2")
    wcs_b = {}
    for b in BANDS:
        hdr_b = _frame_header(tpl["header"][b], b, run, camcol, field, crpix, center_radec, 0.0, seed)
        wcs_b[b] = WCS({k: hdr_b[k] for k in wcs_keys})
    wcs = wcs_b["r"]

    _, n_eligible, cat = draw_sources(np.random.default_rng(0), 1, catalog, r_mag_range)
    if n_sources is None:
        area = h * w * (ARCSEC_PER_PX / 3600.0) ** 2
        n = int(round(n_eligible / _catalog_area_deg2(cat) * area * crowding))
    else:
        n = int(round(n_sources * crowding))
    src, _, _ = draw_sources(rng, n, catalog, r_mag_range)
    x = rng.uniform(-0.5, w - 0.5, n)
    y = rng.uniform(-0.5, h - 0.5, n)
    ra, dec = wcs.all_pix2world(x, y, 0) if n else (np.zeros(0), np.zeros(0))

    truth = {"objid": np.arange(1, n + 1), "ra": np.asarray(ra, np.float64), "dec": np.asarray(dec, np.float64),
             "is_star": src["is_star"]}
    for b in BANDS:
        truth[f"flux_{b}"] = src[f"flux_{b}"]
        truth[f"flux_{b}_sd"] = np.zeros(n)
        truth[f"mag_{b}"] = flux_to_mag(src[f"flux_{b}"])
    for k in ("gal_frac_dev", "gal_axis_ratio", "gal_angle_deg", "gal_radius_arcsec"):
        truth[k] = src[k]
    truth["x"], truth["y"] = x, y

    x0 = max((2048 - w) // 2, 0)
    tasks = []
    sky_meta = {}
    pf = tpl["photofield_row"][0]
    for bi, b in enumerate(BANDS):
        cal_real = tpl["calibration"][b]
        if w <= len(cal_real):
            cal = cal_real[x0:x0 + w]
        else:
            cal = np.interp(np.linspace(0, len(cal_real) - 1, w), np.arange(len(cal_real)), cal_real)
        allsky, xi, yi = sky_grid((h, w), tpl["sky_dn"][b])
        xb, yb = wcs_b[b].all_world2pix(truth["ra"], truth["dec"], 0) if n else (x, y)
        jac = np.array([local_jacobian_arcsec(wcs_b[b], xi_, yi_) for xi_, yi_ in zip(xb, yb)]).reshape(n, 2, 2)
        sky_meta[b] = (cal, allsky, xi, yi)
        tasks.append({
            "band": bi, "shape": (h, w), "x": np.asarray(xb), "y": np.asarray(yb), "flux": src[f"flux_{b}"],
            "is_star": src["is_star"],
            "frac_dev": src["gal_frac_dev"], "axis_ratio": src["gal_axis_ratio"],
            "angle_deg": src["gal_angle_deg"], "radius_arcsec": src["gal_radius_arcsec"], "jac": jac,
            "psfield": os.path.abspath(psfield), "calibration": cal, "sky_dn": interpolate_sky(allsky, xi, yi),
            "gain": float(pf["GAIN"][bi]), "dark_variance": float(pf["DARK_VARIANCE"][bi]),
            "seed": int(np.random.SeedSequence([seed, bi]).generate_state(1)[0]),
        })
    if processes is None:
        processes = 1 if h * w < 1_000_000 else 2
    if processes > 1:
        with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as ex:
            results = list(ex.map(render_band, tasks))
    else:
        results = [render_band(t) for t in tasks]

    field_dir = os.path.join(out_dir, str(run), str(camcol), str(field))
    os.makedirs(field_dir, exist_ok=True)
    tag = f"{run:06d}-{camcol}-{field:04d}"
    frames = []
    for bi, b in enumerate(BANDS):
        cal, allsky, xi, yi = sky_meta[b]
        hdr = _frame_header(tpl["header"][b], b, run, camcol, field, crpix, center_radec, float(np.mean(cal)), seed)
        astrom = tpl["astrom"][b].copy()
        for col, val in (("RUN", run), ("CAMCOL", camcol), ("FIELD", field)):
            if col in astrom.dtype.names:
                astrom[col] = val
        path = os.path.join(field_dir, f"frame-{b}-{tag}.fits" + (".bz2" if compress else ""))
        _write_frame(path, results[bi][1], hdr, cal, allsky, xi, yi, astrom, compress)
        frames.append(path)
        _write_empty_fpm(os.path.join(field_dir, f"fpM-{run:06d}-{b}{camcol}-{field:04d}.fits"),
                         tpl["fpm_header"], tpl["fpm_types"], run, camcol, field, (h, w))
    shutil.copyfile(psfield, os.path.join(field_dir, f"psField-{tag}.fits"))
    _write_photofield(os.path.join(out_dir, str(run), str(camcol), f"photoField-{run:06d}-{camcol}.fits"),
                      tpl, run, camcol, field)
    write_catalog(os.path.join(field_dir, "truth.fits"), truth)
    sky_nmgy = np.array([float(np.mean(sky_meta[b][1])) * float(np.mean(sky_meta[b][0])) for b in BANDS])
    return {"dir": field_dir, "truth": truth, "frames": frames,
            "model": np.stack([r[0] for r in results]), "sky_nmgy": sky_nmgy}


def main(argv=None):
    """``python bench/simulate.py --out DIR --n-sources N --seed S --size H W``; exit 2 on a CelesteError."""
    from celeste.errors import CelesteError

    p = argparse.ArgumentParser(description="Render a simulated SDSS field with GalSim.")
    p.add_argument("--out", required=True, help="root directory of the SDSS-layout tree")
    p.add_argument("--run", type=int, default=9999)
    p.add_argument("--camcol", type=int, default=1)
    p.add_argument("--field", type=int, default=1)
    p.add_argument("--n-sources", type=int, default=None, help="sources at crowding 1 (default: catalog density)")
    p.add_argument("--crowding", type=float, default=1.0, help="multiplies the source density")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, nargs=2, default=[1489, 2048], metavar=("H", "W"))
    p.add_argument("--catalog", default=DEFAULT_CATALOG)
    p.add_argument("--psfield", default=DEFAULT_PSFIELD)
    p.add_argument("--center", type=float, nargs=2, default=[336.665, -0.93], metavar=("RA", "DEC"))
    p.add_argument("--r-mag-range", type=float, nargs=2, default=[14.0, 23.5], metavar=("BRIGHT", "FAINT"))
    p.add_argument("--no-compress", action="store_true", help="write plain .fits frames")
    p.add_argument("--processes", type=int, default=None)
    a = p.parse_args(argv)
    try:
        res = simulate_field(a.out, a.run, a.camcol, a.field, a.n_sources, a.seed, a.crowding, a.catalog, a.psfield,
                             tuple(a.size), tuple(a.center), r_mag_range=tuple(a.r_mag_range),
                             compress=not a.no_compress, processes=a.processes)
    except CelesteError as exc:
        print(f"simulate: error: {exc}", file=sys.stderr)
        return 2
    print(f"{res['dir']}: {len(res['truth']['ra'])} sources")
    return 0


if __name__ == "__main__":
    sys.exit(main())
