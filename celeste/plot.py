"""Model images rendered from a catalog, residuals, and the data/model/residual PNG.

The model of a band is rebuilt from the catalog columns alone: each source at its
posterior position, star with probability ``is_star`` (PSF) or galaxy (the prototype
mixtures with ``gal_*`` shape), flux ``flux_<band>``; the expected counts are
F = iota (sky + sum_s G_s) (electrons).  Residuals are (x - F) / sqrt(F) on unmasked
pixels.  This is the picture of what the catalog claims, independent of the run's
internal state.
"""
import math

import numpy as np

from kernels import params as P
from kernels.inputs import N_IMG_COLS, N_PIX_COLS, make_problem
from kernels.light import source_light
from kernels.profiles import prototype_array

from . import BANDS
from .tangent import sky_to_pixel_jacobian


def params_from_row(row):
    """Unconstrained parameters (27,) reproducing a catalog row's means (zero variances)."""
    x = np.zeros(P.N_PARAMS)
    p = min(max(float(row["is_star"]), 1e-9), 1 - 1e-9)
    x[P.A_STAR] = P.logit(p)
    fl = np.array([max(float(row[f"flux_{b}"]), 1e-6) for b in BANDS])
    lnf = np.log(fl)
    for t in range(2):
        x[P.R_MEAN[t]] = lnf[2]
        x[P.R_LOGVAR[t]] = -30.0
        x[P.C_MEAN[t]:P.C_MEAN[t] + 4] = np.diff(lnf)
        x[P.C_LOGVAR[t]:P.C_LOGVAR[t] + 4] = -30.0
    fd = min(max(float(row["gal_frac_dev"]), 1e-6), 1 - 1e-6)
    q = min(max(float(row["gal_axis_ratio"]), 1e-6), 1 - 1e-6)
    x[P.E_DEV] = P.logit(fd)
    x[P.E_AXIS] = P.logit(q)
    x[P.E_ANGLE] = math.radians(float(row["gal_angle_deg"]))
    x[P.E_SCALE] = math.log(max(float(row["gal_radius_arcsec"]), 1e-3) / math.sqrt(q))
    return x


def render_model(image, psf_mixture, catalog, radius_px=40.0):
    """Expected counts F (electrons) of ``image`` under the catalog, shape (H, W).

    Parameters
    ----------
    image : celeste.images.Image
    psf_mixture : ndarray (K, 6)
    catalog : astropy.table.Table (the celeste-infer output columns)
    radius_px : float
        Each source is rendered within this radius of its position (at least 8 half-light
        radii for galaxies).
    """
    H, W = image.shape
    light = np.zeros((H, W))
    proto = prototype_array()
    psf = np.ascontiguousarray(psf_mixture[None])
    if len(catalog):
        xy, jac = sky_to_pixel_jacobian(image.wcs, np.asarray(catalog["ra"], float), np.asarray(catalog["dec"], float))
    for i in range(len(catalog)):
        x0, y0 = xy[i]
        rad = radius_px
        if catalog["is_star"][i] < 0.999:
            pxscale = 1.0 / math.sqrt(abs(np.linalg.det(jac[i])))
            rad = max(radius_px, 8 * float(catalog["gal_radius_arcsec"][i]) / pxscale)
        if not (-rad < x0 < W + rad and -rad < y0 < H + rad):
            continue
        xa, xb = int(max(x0 - rad, 0)), int(min(x0 + rad + 1, W))
        ya, yb = int(max(y0 - rad, 0)), int(min(y0 + rad + 1, H))
        if xa >= xb or ya >= yb:
            continue
        yy, xx = np.mgrid[ya:yb, xa:xb]
        pix = np.zeros((xx.size, N_PIX_COLS))
        pix[:, 1] = xx.ravel()
        pix[:, 2] = yy.ravel()
        img = np.array([[image.band, x0, y0, jac[i, 0, 0], jac[i, 0, 1], jac[i, 1, 0], jac[i, 1, 1]]])
        eg = np.zeros(xx.size)
        vg = np.zeros(xx.size)
        problem = make_problem(pix, np.ascontiguousarray(img.reshape(1, N_IMG_COLS)), psf, proto)
        source_light(params_from_row(catalog[i]), problem, eg, vg)
        light[ya:yb, xa:xb] += eg.reshape(yy.shape)
    iota = np.broadcast_to(np.asarray(image.iota)[None, :], (H, W))
    return iota * (image.sky + light)


def residual_sigma(image, model):
    """(x - F) / sqrt(F) with NaN on masked pixels, shape (H, W)."""
    r = (image.counts - model) / np.sqrt(model)
    return np.where(image.mask, np.nan, r)


def residuals_near(image, model, x, y, radius_px):
    """(x - F) / sqrt(F) of the unmasked pixels within ``radius_px`` of any of the points (x, y).

    Parameters
    ----------
    image : celeste.images.Image
    model : ndarray (H, W)
        Expected counts F (electrons), e.g. from :func:`render_model`.
    x, y : array_like (n,)
        Pixel positions (0-based column, row) in ``image``.
    radius_px : float

    Returns
    -------
    ndarray (m,) float64
        One value per selected pixel (each pixel once, however many points it is near).
    """
    H, W = image.shape
    sel = np.zeros((H, W), bool)
    r = float(radius_px)
    for xc, yc in zip(np.atleast_1d(x), np.atleast_1d(y)):
        xa, xb = int(max(math.floor(xc - r), 0)), int(min(math.ceil(xc + r) + 1, W))
        ya, yb = int(max(math.floor(yc - r), 0)), int(min(math.ceil(yc + r) + 1, H))
        if xa >= xb or ya >= yb:
            continue
        yy, xx = np.mgrid[ya:yb, xa:xb]
        sel[ya:yb, xa:xb] |= (xx - xc) ** 2 + (yy - yc) ** 2 <= r * r
    res = residual_sigma(image, model)[sel]
    return res[np.isfinite(res)]


def residual_png(path, image, model, catalog, title=""):
    """Write a three-panel PNG (data, model, residual in sigma) with the catalog overlaid.

    Stars (is_star >= 0.5) are drawn as circles, galaxies as ellipses of their
    half-light size and angle.  Data and model share an asinh stretch of the
    sky-subtracted counts; residuals are shown from -5 to 5 sigma.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Ellipse

    H, W = image.shape
    sky = np.asarray(image.iota)[None, :] * image.sky
    data = image.counts - sky
    mod = model - sky
    scale = np.nanpercentile(np.abs(np.sqrt(sky)), 50)
    res = residual_sigma(image, model)
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.6 * H / W + 0.8), sharex=True, sharey=True)
    kw = dict(origin="lower", cmap="gray_r", interpolation="nearest")
    vmax = np.arcsinh(np.nanpercentile(data / scale, 99.5))
    axes[0].imshow(np.arcsinh(data / scale), vmin=-1, vmax=vmax, **kw)
    axes[0].set_title("data (counts - sky, asinh)")
    axes[1].imshow(np.arcsinh(mod / scale), vmin=-1, vmax=vmax, **kw)
    axes[1].set_title("model")
    im = axes[2].imshow(res, vmin=-5, vmax=5, origin="lower", cmap="RdBu_r", interpolation="nearest")
    axes[2].set_title("residual (x - F) / sqrt(F)")
    fig.colorbar(im, ax=axes[2], fraction=0.046, pad=0.02, label="sigma")
    if len(catalog):
        xy, jac = sky_to_pixel_jacobian(image.wcs, np.asarray(catalog["ra"], float),
                                        np.asarray(catalog["dec"], float))
        pxscale = 1.0 / math.sqrt(abs(np.linalg.det(jac.mean(axis=0))))
        for ax in axes[:2]:
            for i in range(len(catalog)):
                x, y = xy[i]
                if not (0 <= x < W and 0 <= y < H):
                    continue
                if catalog["is_star"][i] >= 0.5:
                    ax.add_patch(plt.Circle((x, y), 3.0, fill=False, color="tab:cyan", lw=0.6))
                else:
                    re = catalog["gal_radius_arcsec"][i] / pxscale
                    q = catalog["gal_axis_ratio"][i]
                    a = 2 * re / math.sqrt(q)
                    # the angle east of north mapped through the local Jacobian
                    pa = math.radians(catalog["gal_angle_deg"][i])
                    v = jac[i] @ np.array([math.sin(pa), math.cos(pa)])
                    ang = math.degrees(math.atan2(v[1], v[0]))
                    ax.add_patch(Ellipse((x, y), 2 * a, 2 * a * q, angle=ang, fill=False, color="tab:orange", lw=0.7))
    sd = np.nanstd(res)
    fig.suptitle(f"{title}  band {BANDS[image.band]}: residual sd {sd:.3f} over {np.isfinite(res).sum()} pixels "
                 "(cyan: stars, orange: galaxies)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return sd
