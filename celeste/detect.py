"""Initial detection: a rough catalog of sources to start inference from.

Photo produced no catalog for the crowded M2 field, so the starting catalog
comes from the images themselves, with SEP (Barbary 2016, the SExtractor
algorithms of Bertin & Arnouts 1996 as a library).

Two strategies are implemented (``method=``):

``"combined"`` (default)
    Resample the detection bands (default g, r, i) onto the reference grid
    (the r image unless ``ref`` says otherwise), average them with weights
    1 / (median pixel variance in nmgy^2) per band, propagate the per-pixel
    variance, and extract once with a threshold in units of that noise.
``"per_band"``
    Extract on every detection band separately, in its own pixels, and merge
    the detections whose positions agree within ``match_radius_arcsec``
    (greedy, brightest detection first; its position is kept).

Measured choice (``python bench/detect_choice.py``, field 2583-2-136, bands
g r i, pixel noise from Poisson electrons + dark variance, thresh 5 sigma,
minarea 5, deblend 32 / 0.005; one run on this 2-core machine):

======================  =======  =========  ==========  ==========  ======
configuration           whole    east half  injected    injected    time
                        field    (x>=1024)  all r<23    r 22.5-23
======================  =======  =========  ==========  ==========  ======
combined                3731     1534       91.0 %      64.8 %      6.8 s
per_band                5290     1410       79.0 %      16.7 %      7.1 s
combined, SEP clean     2255     1057       67.0 %      33.3 %      6.1 s
per_band, SEP clean     2934     1029       66.7 %      11.1 %      6.2 s
======================  =======  =========  ==========  ==========  ======

"injected": 300 point sources (the field's PSF, Poisson noise, r 20.5-23
log-uniform in flux, g = 0.7 r, i = 1.15 r) added to the real east half at
least 5 arcsec from any real detection, recovered within 1 arcsec.  At r < 22
all four configurations without cleaning recover 99.5-100 %; at r 22-22.5
combined 98.2 %, per_band 80.0 %.  Detections on the negated images (noise
peaks) were 0 for every configuration, so the extra detections are not noise
peaks.  In the east half 4.5 % of per_band detections have no combined one
within 1 arcsec, and 12.4 % of combined ones no per_band one (fainter sources
seen only by the sum).  In the M2 half per_band returns many more objects
(deblending each band separately and merging within 1 arcsec multiplies
close pairs); which of those are real stars has not been checked against the
HST catalog yet.

Hence the default: one combined g+r+i image (it adds the bands' signal before
thresholding: about 1.4x the S/N of the best single band for a stellar
colour), and SEP's cleaning off (with it on, most faint isolated injected
sources disappeared: 41.8 % recovered at r 22-22.5 instead of 98.2 %).

Fluxes are rough Kron ("AUTO") fluxes, measured in every band on that band's
sky-subtracted image ``counts / iota - sky`` (nmgy per pixel) at the position
of each detection mapped through the band's own WCS, with the Kron ellipse
carried across bands on the sky.  They are starting points for the optimizer,
not final photometry: in crowded regions neighbours leak into the apertures.

Deterministic: SEP's extraction is deterministic for fixed inputs, merging and
ordering break ties by position, and nothing random is drawn.
"""
import math

import numpy as np
from astropy.table import Table
from scipy import ndimage
from scipy.special import ndtr

from celeste import ARCSEC_PER_DEG, BANDS
from celeste.errors import ConfigError, DataError
from celeste.tangent import pixel_to_sky_jacobian

#: SEP work-space limits, raised for the M2 field (see FACTS.md: defaults fail
#: with "internal pixel buffer full" there).
SEP_PIXSTACK = 3_000_000
SEP_SUB_OBJECT_LIMIT = 4096

#: Kron aperture: radius k * kron_radius, at least r_min (in units of a, b),
#: as SExtractor's PHOT_AUTOPARAMS 2.5, 3.5 (Bertin & Arnouts 1996, Sec. 3.3.1).
KRON_K = 2.5
KRON_RMIN = 3.5

#: concentration apertures for the star / galaxy guess, pixels
CONC_R_IN = 2.0
CONC_R_OUT = 5.0


def _setup_sep():
    import sep

    sep.set_extract_pixstack(SEP_PIXSTACK)
    sep.set_sub_object_limit(SEP_SUB_OBJECT_LIMIT)
    return sep


def nmgy_image(image):
    """Sky-subtracted image in nmgy per pixel, its variance, and its mask.

    Parameters
    ----------
    image : celeste.images.Image

    Returns
    -------
    data : ndarray (H, W) float64
        ``counts / iota - sky`` (nmgy per pixel; iota = gain / calibration,
        electrons per nmgy, per column), 0 where masked.
    var : ndarray (H, W) float64
        Pixel variance in nmgy^2: ``(max(counts, 0) + dark_variance * gain^2) / iota^2``
        (Poisson noise of the electrons plus read noise and dark current,
        SDSS photoField DARK_VARIANCE in DN^2; Regier et al. AoAS 2019, Sec. 2:
        the pixel likelihood is Poisson in electrons).
    mask : ndarray (H, W) bool
        ``image.mask`` or any non-finite input.

    Raises
    ------
    DataError
        If shapes disagree or the calibration is not positive (names the frame file).
    """
    counts = np.asarray(image.counts, dtype=np.float64)
    sky = np.asarray(image.sky, dtype=np.float64)
    cal = np.asarray(image.calibration, dtype=np.float64)
    where = image.path or f"band {image.band} image"
    if counts.ndim != 2 or sky.shape != counts.shape or np.shape(image.mask) != counts.shape:
        raise DataError(f"{where}: counts, sky and mask shapes differ")
    if cal.shape != (counts.shape[1],):
        raise DataError(f"{where}: calibration has shape {cal.shape}, expected ({counts.shape[1]},)")
    if not (np.all(cal > 0) and image.gain > 0):
        raise DataError(f"{where}: calibration and gain must be positive")
    iota = image.gain / cal
    mask = np.asarray(image.mask, dtype=bool) | ~np.isfinite(counts) | ~np.isfinite(sky)
    c = np.where(mask, 0.0, counts)
    data = c / iota[None, :] - np.where(mask, 0.0, sky)
    var = (np.maximum(c, 0.0) + max(float(image.dark_variance), 0.0) * image.gain ** 2) / iota[None, :] ** 2
    # masked pixels: zero data, the median variance (never used as signal)
    data[mask] = 0.0
    good = ~mask
    fill = float(np.median(var[good])) if good.any() else 1.0
    var[mask] = fill
    var = np.where(var > 0, var, fill if fill > 0 else 1.0)
    return data, var, mask


def _ellipse_cov(a, b, theta):
    """Covariance matrices (N, 2, 2) of ellipses with semi-axes a, b, angle theta (from +x, CCW)."""
    c, s = np.cos(theta), np.sin(theta)
    R = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)
    D = np.zeros((len(a), 2, 2))
    D[:, 0, 0] = a ** 2
    D[:, 1, 1] = b ** 2
    return R @ D @ np.swapaxes(R, -1, -2)


def _cov_to_ellipse(C):
    """Semi-axes a >= b and the angle of a from the first axis toward the second."""
    xx, yy, xy = C[:, 0, 0], C[:, 1, 1], C[:, 0, 1]
    half_tr = 0.5 * (xx + yy)
    disc = np.sqrt(np.maximum(0.25 * (xx - yy) ** 2 + xy ** 2, 0.0))
    a = np.sqrt(np.maximum(half_tr + disc, 0.0))
    b = np.sqrt(np.maximum(half_tr - disc, 0.0))
    ang = 0.5 * np.arctan2(2 * xy, xx - yy)
    return a, b, ang


def pixel_to_sky_shape(wcs, x, y, a_px, b_px, theta_px):
    """Convert SEP ellipses (pixels, theta CCW from +x) to (a, b arcsec, PA deg east of north).

    Parameters
    ----------
    wcs : astropy.wcs.WCS
    x, y, a_px, b_px, theta_px : ndarray (N,) float64

    Returns
    -------
    a, b : ndarray (N,) float64
        Semi-axes in arcsec (a >= b).
    pa_deg : ndarray (N,) float64
        Position angle of the major axis, degrees east of north in [0, 180).
    """
    J = pixel_to_sky_jacobian(wcs, x, y)
    C = J @ _ellipse_cov(np.asarray(a_px, float), np.asarray(b_px, float), np.asarray(theta_px, float)) @ np.swapaxes(J, -1, -2)
    # axes in (east, north); the PA east of north is the angle from north toward east
    Cne = C[:, ::-1, ::-1]
    a, b, ang = _cov_to_ellipse(Cne)
    return a, b, np.rad2deg(ang) % 180.0


def sky_to_pixel_shape(wcs, x, y, a_arcsec, b_arcsec, pa_deg):
    """Inverse of :func:`pixel_to_sky_shape`: ellipse on the sky to SEP pixel ellipse.

    Returns
    -------
    a_px, b_px : ndarray (N,) float64
    theta_px : ndarray (N,) float64
        Radians, CCW from +x, clipped to [-pi/2, pi/2] (what ``sep.sum_ellipse`` accepts).
    """
    J = pixel_to_sky_jacobian(wcs, x, y)
    Jinv = np.linalg.inv(J)
    pa = np.deg2rad(np.asarray(pa_deg, float))
    # ellipse covariance in (north, east), then swap to (east, north)
    Cne = _ellipse_cov(np.asarray(a_arcsec, float), np.asarray(b_arcsec, float), pa)
    Cen = Cne[:, ::-1, ::-1]
    Cpx = Jinv @ Cen @ np.swapaxes(Jinv, -1, -2)
    a, b, th = _cov_to_ellipse(Cpx)
    return a, b, np.clip(th, -math.pi / 2, math.pi / 2)


def _pixel_map(src_wcs, dst_wcs, shape, step=16):
    """Pixel coordinates in ``dst_wcs`` of every pixel of a grid in ``src_wcs`` (shape (H, W)).

    Evaluated exactly on a coarse grid (every ``step`` pixels) and bilinearly
    interpolated: the band-to-band map of SDSS frames is smooth (a shift plus a
    tiny rotation), so this is accurate to far below 0.01 pixel.
    """
    H, W = shape
    ys = np.arange(0, H + step, step, dtype=np.float64)
    xs = np.arange(0, W + step, step, dtype=np.float64)
    gx, gy = np.meshgrid(xs, ys)
    ra, dec = src_wcs.all_pix2world(gx.ravel(), gy.ravel(), 0)
    dx, dy = dst_wcs.all_world2pix(ra, dec, 0)
    dx = dx.reshape(gx.shape)
    dy = dy.reshape(gx.shape)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    coords = np.array([yy / step, xx / step])
    mx = ndimage.map_coordinates(dx, coords, order=1, mode="nearest")
    my = ndimage.map_coordinates(dy, coords, order=1, mode="nearest")
    return mx, my


def _resample(data, var, mask, mx, my):
    """Bilinear resampling of one band onto another grid; masked wherever a masked pixel contributes."""
    coords = np.array([my, mx])
    d = ndimage.map_coordinates(data, coords, order=1, mode="constant", cval=0.0)
    v = ndimage.map_coordinates(var, coords, order=1, mode="nearest")
    m = ndimage.map_coordinates(mask.astype(np.float64), coords, order=1, mode="constant", cval=1.0) > 0
    return d, v, m


def combined_detection_image(images, bands, ref):
    """Inverse-variance weighted mean of the detection bands on the reference grid.

    Parameters
    ----------
    images : list of Image
    bands : sequence of int
        Indices into ``images`` of the bands to combine.
    ref : int
        Index into ``images`` of the reference grid.

    Returns
    -------
    data, var : ndarray (H, W) float64
        Combined image (nmgy per pixel) and its variance (nmgy^2).
    mask : ndarray (H, W) bool
        True where no band has a usable pixel.

    Notes
    -----
    Weights are per band, ``w_b = 1 / median(var_b)`` (the sky-noise level), so
    the combination is the minimum-variance estimate of a flat-spectrum
    source's per-band flux (Szalay, Connolly & Szokoly 1999 discuss such
    multi-band detection images).  At a pixel where some bands are masked the
    remaining weights are renormalised.
    """
    ref_im = images[ref]
    shape = ref_im.shape
    num = np.zeros(shape)
    wsum = np.zeros(shape)
    vnum = np.zeros(shape)
    for i in bands:
        d, v, m = nmgy_image(images[i])
        w_b = 1.0 / float(np.median(v[~m])) if (~m).any() else 0.0
        if i != ref:
            mx, my = _pixel_map(ref_im.wcs, images[i].wcs, shape)
            d, v, m = _resample(d, v, m, mx, my)
        w = np.where(m, 0.0, w_b)
        num += w * d
        vnum += w * w * v
        wsum += w
    mask = wsum <= 0
    safe = np.where(mask, 1.0, wsum)
    data = np.where(mask, 0.0, num / safe)
    var = np.where(mask, 1.0, vnum / safe ** 2)
    fill = float(np.median(var[~mask])) if (~mask).any() else 1.0
    var = np.where(mask | (var <= 0), fill, var)
    return data, var, mask


def _extract(sep, data, var, mask, thresh, minarea, deblend_nthresh, deblend_cont, clean):
    d = np.ascontiguousarray(data, dtype=np.float64)
    v = np.ascontiguousarray(var, dtype=np.float64)
    m = np.ascontiguousarray(mask, dtype=bool)
    try:
        obj = sep.extract(d, thresh, var=v, mask=m, minarea=minarea,
                          deblend_nthresh=deblend_nthresh, deblend_cont=deblend_cont, clean=clean)
    except Exception as e:  # SEP raises plain Exception for its internal limits
        raise DataError(f"SEP extraction failed: {e}") from None
    # drop degenerate shapes (a single row/column of pixels can give b = 0 or NaN)
    ok = np.isfinite(obj["x"]) & np.isfinite(obj["y"]) & np.isfinite(obj["a"]) & np.isfinite(obj["b"])
    obj = obj[ok]
    return obj


def _kron(sep, data, var, mask, x, y, a, b, theta):
    """Kron radius (units of a, b) and Kron flux; returns (r_ap in units of a/b, flux, fluxerr)."""
    th = np.clip(theta, -math.pi / 2, math.pi / 2)
    a = np.maximum(a, 0.5)
    b = np.maximum(b, 0.5)
    kr, _ = sep.kron_radius(data, x, y, a, b, th, 6.0, mask=mask)
    kr = np.where(np.isfinite(kr) & (kr > 0), kr, KRON_RMIN / KRON_K)
    r = np.maximum(KRON_K * kr, KRON_RMIN)
    f, fe, _ = sep.sum_ellipse(data, x, y, a, b, th, r, var=var, mask=mask, subpix=5)
    return r, f, fe


def _psf_concentration(sep, image, x, y, cell=256):
    """Concentration f(r_in)/f(r_out) of the PSF near each (x, y), on a cache grid of ``cell`` pixels."""
    out = np.full(len(x), np.nan)
    cache = {}
    for n in range(len(x)):
        key = (int(x[n] // cell), int(y[n] // cell))
        if key not in cache:
            cx = min((key[0] + 0.5) * cell, image.shape[1] - 1)
            cy = min((key[1] + 0.5) * cell, image.shape[0] - 1)
            try:
                p = np.ascontiguousarray(image.psf_at(cx, cy), dtype=np.float64)
                c = p.shape[0] // 2
                f1, _, _ = sep.sum_circle(p, np.array([float(c)]), np.array([float(c)]), CONC_R_IN, subpix=5)
                f2, _, _ = sep.sum_circle(p, np.array([float(c)]), np.array([float(c)]), CONC_R_OUT, subpix=5)
                cache[key] = float(f1[0] / f2[0]) if f2[0] > 0 else np.nan
            except Exception:  # no PSF available: leave the guess at 0.5
                cache[key] = np.nan
        out[n] = cache[key]
    return out


def star_guess(sep, image, data, var, mask, x, y):
    """Rough probability of being a point source from the light concentration.

    ``c = f(r < 2 px) / f(r < 5 px)`` on the band's image, compared with the
    same ratio of the PSF at that position: ``P = Phi((c - 0.9 c_psf) / s)``,
    ``s^2 = sigma_c^2 + (0.03 c_psf)^2``, with sigma_c from the aperture
    errors.  Bright PSF-like sources get about 1, clearly extended ones about
    0, noisy ones drift to 0.5.  A heuristic starting value only (the model's
    own star/galaxy posterior replaces it).

    Returns
    -------
    ndarray (N,) float64 in [0, 1]
    """
    f1, e1, _ = sep.sum_circle(data, x, y, CONC_R_IN, var=var, mask=mask, subpix=5)
    f2, e2, _ = sep.sum_circle(data, x, y, CONC_R_OUT, var=var, mask=mask, subpix=5)
    cp = _psf_concentration(sep, image, x, y)
    with np.errstate(divide="ignore", invalid="ignore"):
        c = f1 / f2
        sc = np.abs(c) * np.sqrt((e1 / f1) ** 2 + (e2 / f2) ** 2)
        s = np.sqrt(sc ** 2 + (0.03 * cp) ** 2)
        p = ndtr((c - 0.9 * cp) / s)
    bad = ~np.isfinite(p) | (f2 <= 0) | (f1 <= 0)
    return np.where(bad, 0.5, p)


def _choose_ref(images, ref):
    if ref is None:
        for i, im in enumerate(images):
            if im.band == 2:
                return i
        return 0
    if not (0 <= int(ref) < len(images)):
        raise ConfigError(f"ref={ref} is not an index into images (0..{len(images) - 1})")
    return int(ref)


def _merge(ra, dec, snr, radius_arcsec):
    """Greedy merge of detections: brightest first, absorbing all within the radius.

    Returns the index of the kept detection for each group and a group label per input.
    """
    from scipy.spatial import cKDTree

    ra0 = float(np.median(ra))
    dec0 = float(np.median(dec))
    e = ((ra - ra0 + 180.0) % 360.0 - 180.0) * math.cos(math.radians(dec0)) * ARCSEC_PER_DEG
    n = (dec - dec0) * ARCSEC_PER_DEG
    pts = np.column_stack([e, n])
    tree = cKDTree(pts)
    order = np.lexsort((n, e, -snr))
    label = np.full(len(ra), -1, dtype=np.int64)
    keep = []
    for i in order:
        if label[i] >= 0:
            continue
        g = len(keep)
        keep.append(i)
        for j in tree.query_ball_point(pts[i], radius_arcsec):
            if label[j] < 0:
                label[j] = g
    return np.array(keep, dtype=np.int64), label


def _local_background_subtracted(sep, data, mask, mesh):
    """``data`` minus SEP's mesh background (``mesh`` pixels, 3 x 3 filter); unchanged if mesh <= 0.

    The SDSS sky of a frame is one smooth surface per field: in the globular cluster M2 the
    unresolved starlight adds a glow that is above threshold over hundreds of pixels, so
    SEP merges the whole core into a few giant objects and drops its stars (on field
    2583-2-136 no source was detected within ~300 px of the cluster centre).  A local
    background removes the glow before extraction.
    """
    if not mesh or mesh <= 0:
        return data
    H, W = data.shape
    m = int(max(8, min(mesh, H // 2, W // 2)))
    d = np.ascontiguousarray(data, dtype=np.float64)
    try:
        bkg = sep.Background(d, mask=np.ascontiguousarray(mask, dtype=bool), bw=m, bh=m, fw=3, fh=3)
    except Exception:  # noqa: BLE001 - degenerate (e.g. fully masked) images: keep the data as is
        return data
    return d - bkg.back()


def detect_sources(images, wcs_ref=None, *, ref=None, method="combined", detect_bands=(1, 2, 3),
                   thresh=5.0, minarea=5, deblend_nthresh=32, deblend_cont=0.005,
                   match_radius_arcsec=1.0, bkg_mesh=32, clean=False):
    """Find sources in the images of one field and measure rough properties.

    Parameters
    ----------
    images : list of celeste.images.Image
        One per band (any subset of u g r i z), all covering about the same sky.
    wcs_ref : astropy.wcs.WCS, optional
        WCS used for the output ``x``, ``y`` columns (default: that of the
        reference image).  Detection itself happens on the reference image's grid.
    ref : int, optional
        Index into ``images`` of the reference grid (default: the r-band image,
        else the first).
    method : {"combined", "per_band"}
        Detection strategy (module docstring).
    detect_bands : sequence of int
        Band indices (0..4) used for detection; those absent from ``images``
        are skipped.  Default g, r, i.
    thresh : float
        Detection threshold in units of the pixel noise (sigma), applied to the
        3x3-filtered image as SEP does.
    minarea : int
        Minimum number of connected pixels above threshold.
    deblend_nthresh, deblend_cont
        SEP deblending parameters.
    match_radius_arcsec : float
        Merge radius for ``method="per_band"``.
    bkg_mesh : int
        Mesh (pixels) of the local background removed before extraction (0: none); see
        :func:`_local_background_subtracted`.
    clean : bool
        SEP's "cleaning" of detections that could be wings of brighter ones.
        Off by default: on this field it discarded most faint isolated
        sources (module docstring).

    Returns
    -------
    astropy.table.Table
        One row per source, sorted by decreasing ``det_snr`` (ties by position):

        * ``ra``, ``dec`` : float64, deg (ICRS).
        * ``x``, ``y`` : float64, 0-based pixel in ``wcs_ref`` (or the reference image).
        * ``flux_<b>``, ``flux_err_<b>`` : float64, nmgy, Kron flux in each band
          present (NaN if the position falls outside that band's image).
        * ``a``, ``b`` : float64, arcsec: RMS semi-major / semi-minor axis of
          the light above threshold (SEP second moments; for a Gaussian of
          width sigma, a = b ~ sigma).
        * ``theta`` : float64, deg east of north, [0, 180): position angle of ``a``.
        * ``is_star_guess`` : float64 in [0, 1] (:func:`star_guess` on the reference band).
        * ``det_snr`` : float64, Kron flux / error on the detection image
          (per_band: the best band's).
        * ``n_det_bands`` : int, bands detecting it (per_band; the number of
          combined bands for "combined").

    Raises
    ------
    ConfigError
        Unknown ``method``, no detection band present, bad ``thresh``/``minarea``/``ref``.
    DataError
        An image is inconsistent (names its file) or SEP fails.
    """
    images = list(images)
    if not images:
        raise ConfigError("images: no images given")
    if method not in ("combined", "per_band"):
        raise ConfigError(f"method={method!r}: expected 'combined' or 'per_band'")
    if not (thresh > 0):
        raise ConfigError(f"thresh={thresh}: must be positive")
    if int(minarea) < 1:
        raise ConfigError(f"minarea={minarea}: must be >= 1")
    sep = _setup_sep()
    ref = _choose_ref(images, ref)
    ref_im = images[ref]
    det_idx = [i for i, im in enumerate(images) if im.band in tuple(detect_bands)]
    if not det_idx:
        raise ConfigError(f"detect_bands={tuple(detect_bands)}: none of these bands is among the images")
    det_idx.sort(key=lambda i: images[i].band)

    extract_kw = dict(thresh=thresh, minarea=minarea, deblend_nthresh=deblend_nthresh, deblend_cont=deblend_cont,
                      clean=clean)
    if method == "combined":
        data, var, mask = combined_detection_image(images, det_idx, ref)
        data = _local_background_subtracted(sep, data, mask, bkg_mesh)
        ra, dec, snr, a_as, b_as, pa = _extract_and_measure(sep, data, var, mask, ref_im.wcs, extract_kw)
        ndet = np.full(len(ra), len(det_idx), dtype=np.int64)
    else:
        ra, dec, snr, a_as, b_as, pa, ndet = _detect_per_band(sep, images, det_idx, bkg_mesh, extract_kw,
                                                              match_radius_arcsec)
    t = _detection_table(sep, images, ref_im, wcs_ref if wcs_ref is not None else ref_im.wcs,
                         ra, dec, snr, a_as, b_as, pa, ndet)
    t.meta["method"] = method
    t.meta["thresh_sigma"] = float(thresh)
    t.meta["clean"] = bool(clean)
    t.meta["detect_bands"] = "".join(BANDS[images[i].band] for i in det_idx)
    return t


def _extract_and_measure(sep, data, var, mask, wcs, extract_kw):
    """SEP extraction on one image, then Kron S/N and sky positions and shapes of the objects.

    Returns
    -------
    ra, dec, snr, a_arcsec, b_arcsec, pa_deg : ndarray (N,) float64
    """
    obj = _extract(sep, data, var, mask, **extract_kw)
    if len(obj) == 0:
        return (np.zeros(0),) * 6
    x, y = obj["x"].astype(np.float64), obj["y"].astype(np.float64)
    a_px, b_px, th = obj["a"].astype(np.float64), obj["b"].astype(np.float64), obj["theta"].astype(np.float64)
    _, f, fe = _kron(sep, data, var, mask, x, y, a_px, b_px, th)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = np.where(fe > 0, f / fe, 0.0)
    ra, dec = wcs.all_pix2world(x, y, 0)
    a_as, b_as, pa = pixel_to_sky_shape(wcs, x, y, a_px, b_px, th)
    return ra, dec, snr, a_as, b_as, pa


def _detect_per_band(sep, images, det_idx, bkg_mesh, extract_kw, match_radius_arcsec):
    """Detections of every detection band, merged within ``match_radius_arcsec`` (:func:`_merge`).

    Returns
    -------
    ra, dec, snr, a_arcsec, b_arcsec, pa_deg : ndarray (N,) float64
        Of the brightest detection of each merged group.
    n_det_bands : ndarray (N,) int64
    """
    parts = []
    for i in det_idx:
        d, v, m = nmgy_image(images[i])
        d = _local_background_subtracted(sep, d, m, bkg_mesh)
        found = _extract_and_measure(sep, d, v, m, images[i].wcs, extract_kw)
        if len(found[0]):
            parts.append(found + (np.full(len(found[0]), images[i].band),))
    cat = [np.concatenate([p[k] for p in parts]) for k in range(7)] if parts else [np.zeros(0)] * 7
    r_all, d_all, s_all, a_all, b_all, p_all, band_all = cat
    if len(r_all):
        keep, label = _merge(r_all, d_all, s_all, match_radius_arcsec)
        ndet = np.array([len(np.unique(band_all[label == g])) for g in range(len(keep))], dtype=np.int64)
    else:
        keep, ndet = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return r_all[keep], d_all[keep], s_all[keep], a_all[keep], b_all[keep], p_all[keep], ndet


def _detection_table(sep, images, ref_im, out_wcs, ra, dec, snr, a_as, b_as, pa, ndet):
    """The detection table of :func:`detect_sources` (fluxes in every band, star guess), sorted."""
    if len(ra):
        ox, oy = out_wcs.all_world2pix(ra, dec, 0)
    else:
        ox = oy = np.zeros(0)
    t = Table()
    t["ra"] = np.asarray(ra, dtype=np.float64)
    t["dec"] = np.asarray(dec, dtype=np.float64)
    t["x"] = np.asarray(ox, dtype=np.float64)
    t["y"] = np.asarray(oy, dtype=np.float64)
    for im in sorted(images, key=lambda im: im.band):
        name = BANDS[im.band]
        f_b, e_b = band_fluxes(sep, im, t["ra"], t["dec"], a_as, b_as, pa)
        t[f"flux_{name}"] = f_b
        t[f"flux_err_{name}"] = e_b
    t["a"] = np.asarray(a_as, dtype=np.float64)
    t["b"] = np.asarray(b_as, dtype=np.float64)
    t["theta"] = np.asarray(pa, dtype=np.float64)
    if len(t):
        d, v, m = nmgy_image(ref_im)
        rx, ry = ref_im.wcs.all_world2pix(t["ra"], t["dec"], 0)
        t["is_star_guess"] = star_guess(sep, ref_im, d, v, m, np.asarray(rx, float), np.asarray(ry, float))
    else:
        t["is_star_guess"] = np.zeros(0)
    t["det_snr"] = np.asarray(snr, dtype=np.float64)
    t["n_det_bands"] = np.asarray(ndet, dtype=np.int64)
    return t[np.lexsort((t["dec"], t["ra"], -t["det_snr"]))]


def band_fluxes(sep, image, ra, dec, a_arcsec, b_arcsec, pa_deg):
    """Kron fluxes of given sky ellipses in one band's image.

    The Kron radius is measured in this band around the mapped position (SEP
    ``kron_radius``, Kron 1980) with the ellipse's shape carried across bands
    on the sky; the aperture is ``max(2.5 r_kron, 3.5)`` in units of a, b.

    Parameters
    ----------
    sep : module
    image : Image
    ra, dec : ndarray (N,) float64, deg
    a_arcsec, b_arcsec, pa_deg : ndarray (N,) float64

    Returns
    -------
    flux, flux_err : ndarray (N,) float64, nmgy
        NaN for positions outside the image.
    """
    n = len(ra)
    flux = np.full(n, np.nan)
    err = np.full(n, np.nan)
    if n == 0:
        return flux, err
    d, v, m = nmgy_image(image)
    x, y = image.wcs.all_world2pix(np.asarray(ra, float), np.asarray(dec, float), 0)
    H, W = image.shape
    inside = (x >= -0.5) & (x <= W - 0.5) & (y >= -0.5) & (y <= H - 0.5)
    if not inside.any():
        return flux, err
    xi, yi = np.asarray(x[inside], float), np.asarray(y[inside], float)
    a, b, th = sky_to_pixel_shape(image.wcs, xi, yi, np.asarray(a_arcsec)[inside],
                                  np.asarray(b_arcsec)[inside], np.asarray(pa_deg)[inside])
    _, f, fe = _kron(sep, d, v, m, xi, yi, a, b, th)
    flux[inside] = f
    err[inside] = fe
    return flux, err
