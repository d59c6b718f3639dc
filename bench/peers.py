"""Peer tools run on the same SDSS-layout images as celeste: SEP and photutils.

Two peers, each returning a catalog dict in the project's columns (see
:mod:`celeste.score`), so that :func:`celeste.score.score` treats every tool alike.

``run_sep``
    SEP (Barbary 2016; the SExtractor algorithms of Bertin & Arnouts 1996), used as a
    SExtractor user would: a mesh background (64 px cells, 3 x 3 median filter) is
    subtracted from the r frame; sources are extracted at 1.5 sigma of the per-pixel noise
    (SExtractor's default DETECT_THRESH) after SEP's default 3 x 3 filter, minarea 5,
    deblending 32 / 0.005, cleaning on (SExtractor defaults).  The per-pixel noise is
    Poisson in electrons plus read/dark noise (:func:`celeste.detect.nmgy_image`).
    Positions are windowed centroids (``sep.winpos``, SExtractor XWIN_IMAGE) with
    sigma = 2 r50 / 2.355 as SExtractor uses; their sds (``ra_sd``, ``dec_sd``, arcsec) are
    SEP's isophotal barycentre errors (ERRX2, ERRY2, ERRXY) mapped to the sky through the WCS
    (winpos gives none; SExtractor's windowed errors are of the same order).  Fluxes in every band are Kron ("AUTO")
    fluxes: the r ellipse is carried to each band's frame through the two WCSs, the Kron
    radius is measured in that band (PHOT_AUTOPARAMS 2.5, 3.5), and the flux error is
    SEP's from the per-pixel variance (this gives SEP's own flux sd).

    SEP's star/galaxy call (documented choice): a source is a star when its half-light
    radius ``r50`` (``sep.flux_radius``, circular, 0.5 of the Kron flux) is at most
    ``STAR_R50_FACTOR`` times the r50 of the psField PSF at its position (measured the
    same way on the PSF stamp), i.e. when it is not measurably larger than the PSF.
    Galaxy shape: axis ratio b / a and position angle of SEP's second moments (mapped to
    east of north through the WCS), and a circularized half-light radius from r50 with
    the PSF's r50 removed in quadrature, sqrt(r50^2 - r50_psf^2) (arcsec).  SEP gives no
    bulge/disc fraction: ``gal_frac_dev`` is NaN.

``run_photutils``
    photutils' iterative PSF photometry (``IterativePSFPhotometry``, the DAOPHOT
    find / group / fit / subtract / find-again loop of Stetson 1987) on the r frame with
    an ``ImagePSF`` built from the psField PSF stamp at the image centre (the stamp
    includes the pixel response, so the model is used at oversampling 1), the same mesh
    background as SEP, ``DAOStarFinder`` at ``PHOT_THRESH`` sigma of the sky noise with
    the PSF's FWHM, 7 x 7 fit boxes, neighbours closer than 2.5 FWHM fitted together,
    three iterations.  Colours: forced PSF photometry in u, g, i, z at the r positions
    (mapped through the WCSs, positions held fixed).  Every source is called a star
    (the method models stars only).  Position sds from the fit's ``x_err``, ``y_err``.

Command line: ``python bench/peers.py --data-dir DIR --field RUN CAMCOL FIELD --out
PREFIX`` writes PREFIX-sep.fits and PREFIX-photutils.fits.
"""
import argparse
import math
import os
import sys
import warnings

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# keep bench/ off the import path: its scripts can shadow the project's packages (bench/kernels.py)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.join(ROOT, "bench")]
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from celeste import BANDS  # noqa: E402
from celeste.detect import nmgy_image, pixel_to_sky_shape, sky_to_pixel_shape  # noqa: E402
from celeste.errors import ConfigError, DataError  # noqa: E402
from celeste.score import CATALOG_COLUMNS, flux_to_mag  # noqa: E402
from celeste.sdss import ARCSEC_PER_PX, load_field  # noqa: E402
from celeste.tangent import pixel_to_sky_jacobian  # noqa: E402

#: SExtractor-default extraction settings used for the SEP peer
SEP_THRESH = 1.5
SEP_MINAREA = 5
SEP_DEBLEND_NTHRESH = 32
SEP_DEBLEND_CONT = 0.005
#: background mesh (pixels) and median filter size
BACK_SIZE = 64
BACK_FILTER = 3
#: Kron aperture (SExtractor PHOT_AUTOPARAMS)
KRON_K, KRON_MIN = 2.5, 3.5
#: SEP star call: r50 <= factor * r50 of the PSF
STAR_R50_FACTOR = 1.15
#: photutils: DAOStarFinder threshold in sky-noise sigmas, fit box, group radius in FWHM
PHOT_THRESH = 4.0
PHOT_FIT_SHAPE = (7, 7)
PHOT_GROUP_FWHM = 2.5
PHOT_ITERS = 3


def _sep():
    import sep

    sep.set_extract_pixstack(3_000_000)
    sep.set_sub_object_limit(4096)
    return sep


def load_bands(data_dir, run, camcol, field, box=None):
    """The five bands of a field (or a cutout) as nmgy images for the peers.

    Parameters
    ----------
    data_dir : str
        SDSS-layout root.
    run, camcol, field : int
    box : (x0, x1, y0, y1) or None
        Cutout in r-frame pixels (the same numbers are used for every band: SDSS band
        frames of one field cover nearly the same sky).

    Returns
    -------
    list of dict, one per band in ugriz order
        ``image`` (celeste Image), ``data`` (H, W) float64 nmgy per pixel with the mesh
        background removed, ``var`` (H, W) nmgy^2 (Poisson + read/dark noise), ``mask``
        (H, W) bool, ``back`` the subtracted background (nmgy), ``rms`` the background
        rms (nmgy).

    Raises
    ------
    DataError
        Missing or unreadable files (from :func:`celeste.sdss.load_field`).
    """
    sep = _sep()
    out = []
    for im in load_field(data_dir, run, camcol, field, bands=(0, 1, 2, 3, 4), box=box, psf_size=25):
        d, v, m = nmgy_image(im)
        d = np.ascontiguousarray(d, np.float64)
        bw = min(BACK_SIZE, max(d.shape[1] // 2, 8))
        bh = min(BACK_SIZE, max(d.shape[0] // 2, 8))
        bkg = sep.Background(d, mask=m, bw=bw, bh=bh, fw=BACK_FILTER, fh=BACK_FILTER)
        back = bkg.back()
        out.append({"image": im, "data": np.ascontiguousarray(d - back), "var": np.ascontiguousarray(v),
                    "mask": np.ascontiguousarray(m), "back": back, "rms": float(bkg.globalrms)})
    return out


def _psf_r50(sep, stamp):
    c = (stamp.shape[0] - 1) / 2.0
    p = np.ascontiguousarray(stamp, np.float64)
    r, _ = sep.flux_radius(p, np.array([c]), np.array([c]), np.array([c]), 0.5, normflux=np.array([p.sum()]),
                           subpix=5)
    return float(r[0])


def _psf_fwhm(stamp):
    """FWHM (px) of a PSF stamp from its peak-normalized area above half maximum."""
    p = np.asarray(stamp, np.float64)
    area = float(np.sum(p >= 0.5 * p.max()))
    return 2.0 * math.sqrt(area / math.pi)


def _empty(n):
    cat = {c: np.full(n, np.nan) for c in CATALOG_COLUMNS}
    cat["objid"] = np.arange(n, dtype=np.int64)
    return cat


def _finish(cat):
    for b in BANDS:
        cat[f"mag_{b}"] = flux_to_mag(cat[f"flux_{b}"])
    return cat


def _kron_in_band(sep, band, ra, dec, a_as, b_as, pa_deg):
    """Kron flux and error of sky ellipses in one band (nmgy)."""
    im = band["image"]
    H, W = band["data"].shape
    x, y = im.wcs.all_world2pix(ra, dec, 0)
    x, y = np.asarray(x, float), np.asarray(y, float)
    flux = np.full(len(ra), np.nan)
    err = np.full(len(ra), np.nan)
    inside = (x > -0.5) & (x < W - 0.5) & (y > -0.5) & (y < H - 0.5)
    if not inside.any():
        return flux, err
    a, b, th = sky_to_pixel_shape(im.wcs, x[inside], y[inside], a_as[inside], b_as[inside], pa_deg[inside])
    a = np.maximum(np.asarray(a, float), 0.5)
    b = np.maximum(np.asarray(b, float), 0.5)
    th = np.clip(np.asarray(th, float), -math.pi / 2 + 1e-6, math.pi / 2 - 1e-6)
    kr, _ = sep.kron_radius(band["data"], x[inside], y[inside], a, b, th, 6.0, mask=band["mask"])
    kr = np.where(np.isfinite(kr) & (kr > 0), kr, KRON_MIN / KRON_K)
    r = np.maximum(KRON_K * kr, KRON_MIN)
    f, fe, _ = sep.sum_ellipse(band["data"], x[inside], y[inside], a, b, th, r, var=band["var"],
                               mask=band["mask"], subpix=5)
    flux[inside], err[inside] = f, fe
    return flux, err


def _sky_sd(wcs, x, y, var_x, var_y, cov_xy):
    """East and north sds (arcsec) from pixel position (co)variances (px^2): sqrt(diag(J C J^T))."""
    J = pixel_to_sky_jacobian(wcs, x, y)
    C = np.zeros((len(J), 2, 2))
    C[:, 0, 0], C[:, 1, 1] = var_x, var_y
    C[:, 0, 1] = C[:, 1, 0] = cov_xy
    S = J @ C @ np.transpose(J, (0, 2, 1))
    with np.errstate(invalid="ignore"):
        return np.sqrt(S[:, 0, 0]), np.sqrt(S[:, 1, 1])


def run_sep(bands):
    """SEP catalog (detection on r, Kron fluxes in ugriz, star/galaxy and shapes) in the project's columns.

    Parameters
    ----------
    bands : list of dict
        Output of :func:`load_bands` (ugriz order).

    Returns
    -------
    dict of str -> ndarray (N,)
        ``ra``, ``dec`` (deg), ``is_star`` (0 or 1), ``flux_<b>`` and ``flux_<b>_sd``
        (nmgy), ``mag_<b>``, ``gal_axis_ratio``, ``gal_angle_deg`` (east of north),
        ``gal_radius_arcsec`` (circularized, PSF removed), ``gal_frac_dev`` NaN, plus
        ``x``, ``y`` (r-frame pixels of the input) and ``r50_px``.

    Raises
    ------
    DataError
        SEP fails on the image.
    """
    sep = _sep()
    rb = bands[2]
    im = rb["image"]
    try:
        obj = sep.extract(rb["data"], SEP_THRESH, err=np.sqrt(rb["var"]), mask=rb["mask"], minarea=SEP_MINAREA,
                          deblend_nthresh=SEP_DEBLEND_NTHRESH, deblend_cont=SEP_DEBLEND_CONT, clean=True)
    except Exception as exc:  # SEP raises plain Exception
        raise DataError(f"{im.path}: SEP extraction failed ({exc})") from None
    ok = np.isfinite(obj["x"]) & np.isfinite(obj["y"]) & (obj["a"] > 0) & (obj["b"] > 0)
    obj = obj[ok]
    n = len(obj)
    cat = _empty(n)
    if n == 0:
        cat["x"] = cat["y"] = cat["r50_px"] = np.zeros(0)
        return _finish(cat)
    x, y = obj["x"].astype(float), obj["y"].astype(float)
    a, b = obj["a"].astype(float), obj["b"].astype(float)
    th = np.clip(obj["theta"].astype(float), -math.pi / 2 + 1e-6, math.pi / 2 - 1e-6)
    kr, _ = sep.kron_radius(rb["data"], x, y, a, b, th, 6.0, mask=rb["mask"])
    kr = np.where(np.isfinite(kr) & (kr > 0), kr, KRON_MIN / KRON_K)
    fk, _, _ = sep.sum_ellipse(rb["data"], x, y, a, b, th, np.maximum(KRON_K * kr, KRON_MIN), mask=rb["mask"],
                               subpix=5)
    r50, _ = sep.flux_radius(rb["data"], x, y, 6.0 * a, 0.5, normflux=np.where(fk > 0, fk, np.nan),
                             mask=rb["mask"], subpix=5)
    r50 = np.where(np.isfinite(r50) & (r50 > 0), r50, 1.0)
    xw, yw, wflag = sep.winpos(rb["data"], x, y, 2.0 * r50 / 2.355, mask=rb["mask"])
    good = (wflag == 0) & np.isfinite(xw) & np.isfinite(yw) & (np.hypot(xw - x, yw - y) < 2.0)
    x = np.where(good, xw, x)
    y = np.where(good, yw, y)
    ra, dec = im.wcs.all_pix2world(x, y, 0)
    a_as, b_as, pa = pixel_to_sky_shape(im.wcs, x, y, a, b, th)
    a_as, b_as, pa = np.asarray(a_as, float), np.asarray(b_as, float), np.asarray(pa, float)
    cat["ra"], cat["dec"] = np.asarray(ra, float), np.asarray(dec, float)
    cat["ra_sd"], cat["dec_sd"] = _sky_sd(im.wcs, x, y, obj["errx2"], obj["erry2"], obj["errxy"])
    for k, band in enumerate(bands):
        f, fe = _kron_in_band(sep, band, cat["ra"], cat["dec"], a_as, b_as, pa)
        cat[f"flux_{BANDS[k]}"] = f
        cat[f"flux_{BANDS[k]}_sd"] = fe
    # star / galaxy: r50 against the PSF's r50 at the source (PSF cached on a 128 px grid)
    cache = {}
    r50_psf = np.empty(n)
    for i in range(n):
        key = (int(x[i] // 128), int(y[i] // 128))
        if key not in cache:
            H, W = rb["data"].shape
            cache[key] = _psf_r50(sep, im.psf_at(min((key[0] + 0.5) * 128, W - 1), min((key[1] + 0.5) * 128, H - 1)))
        r50_psf[i] = cache[key]
    star = r50 <= STAR_R50_FACTOR * r50_psf
    cat["is_star"] = star.astype(float)
    q = np.clip(b / a, 0.0, 1.0)
    gal = ~star
    cat["gal_axis_ratio"] = np.where(gal, q, np.nan)
    cat["gal_angle_deg"] = np.where(gal, np.mod(pa, 180.0), np.nan)
    rad = np.sqrt(np.maximum(r50 ** 2 - r50_psf ** 2, 0.01)) * ARCSEC_PER_PX
    cat["gal_radius_arcsec"] = np.where(gal, rad, np.nan)
    cat["x"], cat["y"], cat["r50_px"] = x, y, r50
    return _finish(cat)


def _image_psf(stamp):
    from photutils.psf import ImagePSF

    p = np.asarray(stamp, np.float64)
    return ImagePSF(p / p.sum(), flux=1.0, x_0=0.0, y_0=0.0)


def run_photutils(bands, colours=True):
    """photutils iterative PSF photometry on r (stars), forced PSF fluxes in the other bands.

    Parameters
    ----------
    bands : list of dict
        Output of :func:`load_bands`.
    colours : bool
        Also measure u, g, i, z by forced PSF photometry at the r positions.

    Returns
    -------
    dict of str -> ndarray (N,)
        ``ra``, ``dec``, ``is_star`` (= 1), ``flux_<b>``, ``flux_<b>_sd`` (nmgy; NaN for
        bands not measured), ``mag_<b>``; shapes NaN; ``x``, ``y`` r-frame pixels.
    """
    from astropy.table import QTable
    from photutils.detection import DAOStarFinder
    from photutils.psf import IterativePSFPhotometry, PSFPhotometry, SourceGrouper

    rb = bands[2]
    im = rb["image"]
    H, W = rb["data"].shape
    stamp = im.psf_at(0.5 * (W - 1), 0.5 * (H - 1))
    fwhm = _psf_fwhm(stamp)
    psf = _image_psf(stamp)
    err = np.sqrt(rb["var"])
    sky_sd = float(np.median(err[~rb["mask"]]))
    finder = DAOStarFinder(threshold=PHOT_THRESH * sky_sd, fwhm=fwhm, exclude_border=False)
    grouper = SourceGrouper(min_separation=PHOT_GROUP_FWHM * fwhm)
    phot = IterativePSFPhotometry(psf, PHOT_FIT_SHAPE, finder, grouper=grouper, maxiters=PHOT_ITERS,
                                  aperture_radius=1.5 * fwhm, group_warning_threshold=10 ** 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = phot(rb["data"], mask=rb["mask"], error=err)
    if res is None or len(res) == 0:
        cat = _empty(0)
        cat["x"] = cat["y"] = np.zeros(0)
        return _finish(cat)
    x = np.asarray(res["x_fit"], float)
    y = np.asarray(res["y_fit"], float)
    f = np.asarray(res["flux_fit"], float)
    fe = np.asarray(res["flux_err"], float) if "flux_err" in res.colnames else np.full(len(f), np.nan)
    xe = np.asarray(res["x_err"], float) if "x_err" in res.colnames else np.full(len(f), np.nan)
    ye = np.asarray(res["y_err"], float) if "y_err" in res.colnames else np.full(len(f), np.nan)
    ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(f) & (x > -0.5) & (x < W - 0.5) & (y > -0.5) & (y < H - 0.5)
    x, y, f, fe, xe, ye = x[ok], y[ok], f[ok], fe[ok], xe[ok], ye[ok]
    n = len(x)
    cat = _empty(n)
    ra, dec = im.wcs.all_pix2world(x, y, 0)
    cat["ra"], cat["dec"] = np.asarray(ra, float), np.asarray(dec, float)
    if n:
        cat["ra_sd"], cat["dec_sd"] = _sky_sd(im.wcs, x, y, xe ** 2, ye ** 2, np.zeros(n))
    cat["is_star"] = np.ones(n)
    cat["flux_r"], cat["flux_r_sd"] = f, fe
    if colours and n:
        for k, band in enumerate(bands):
            if k == 2:
                continue
            bim = band["image"]
            bx, by = bim.wcs.all_world2pix(cat["ra"], cat["dec"], 0)
            bH, bW = band["data"].shape
            bpsf = _image_psf(bim.psf_at(0.5 * (bW - 1), 0.5 * (bH - 1)))
            bpsf.x_0.fixed = True
            bpsf.y_0.fixed = True
            init = QTable({"x": np.asarray(bx, float), "y": np.asarray(by, float),
                           "flux": np.maximum(f, 1e-3) * 0.5})
            forced = PSFPhotometry(bpsf, PHOT_FIT_SHAPE, grouper=grouper, aperture_radius=1.5 * fwhm,
                                   group_warning_threshold=10 ** 6)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r2 = forced(band["data"], mask=band["mask"], error=np.sqrt(band["var"]), init_params=init)
            cat[f"flux_{BANDS[k]}"] = np.asarray(r2["flux_fit"], float)
            if "flux_err" in r2.colnames:
                cat[f"flux_{BANDS[k]}_sd"] = np.asarray(r2["flux_err"], float)
    cat["x"], cat["y"] = x, y
    return _finish(cat)


def save_catalog(path, cat):
    """Write a peer catalog dict as a FITS table (:func:`celeste.score.write_catalog`)."""
    from celeste.score import write_catalog

    write_catalog(path, cat)


def main(argv=None):
    """``python bench/peers.py --data-dir DIR --field RUN CAMCOL FIELD --out PREFIX [--box X0 X1 Y0 Y1]``."""
    from celeste.errors import CelesteError

    p = argparse.ArgumentParser(description="Run the SEP and photutils peers on one SDSS field.")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--field", type=int, nargs=3, required=True, metavar=("RUN", "CAMCOL", "FIELD"))
    p.add_argument("--box", type=int, nargs=4, default=None, metavar=("X0", "X1", "Y0", "Y1"),
                   help="cutout in r-frame pixels (half-open)")
    p.add_argument("--out", required=True, help="output prefix: PREFIX-sep.fits, PREFIX-photutils.fits")
    p.add_argument("--no-photutils", action="store_true")
    a = p.parse_args(argv)
    try:
        if a.box is not None and not (a.box[0] < a.box[1] and a.box[2] < a.box[3]):
            raise ConfigError(f"--box {a.box}: need X0 < X1 and Y0 < Y1")
        bands = load_bands(a.data_dir, *a.field, box=tuple(a.box) if a.box else None)
        cat = run_sep(bands)
        save_catalog(a.out + "-sep.fits", cat)
        print(f"{a.out}-sep.fits: {len(cat['ra'])} sources")
        if not a.no_photutils:
            cat = run_photutils(bands)
            save_catalog(a.out + "-photutils.fits", cat)
            print(f"{a.out}-photutils.fits: {len(cat['ra'])} sources")
    except CelesteError as exc:
        print(f"peers: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
