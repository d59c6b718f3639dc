"""Local tangent-plane geometry of a WCS: offsets on the sky (east, north, arcsec) and pixels.

The model places a source at an offset (east, north) from its anchor (ra0, dec0), with
east = (ra - ra0) cos(dec0) and north = dec - dec0 in arcsec (:mod:`kernels.params`); its
light lands on pixels through the image's WCS.  Near a point the map is linear, and the
two Jacobians here are its two directions:

* :func:`sky_to_pixel_jacobian` - pixel position of (ra, dec) and d(x, y) / d(east, north),
  pixels per arcsec (model set-up and rendering);
* :func:`pixel_to_sky_jacobian` - d(east, north) / d(x, y), arcsec per pixel (converting
  pixel ellipses to sky shapes).

At one point they are each other's inverse.  Both use central differences of astropy's
``all_world2pix`` / ``all_pix2world`` (distortions included).  Pixels are 0-based,
x = column, y = row.
"""
import numpy as np

from . import ARCSEC_PER_DEG


def sky_to_pixel_jacobian(wcs, ra, dec, step_arcsec=1.0):
    """Pixel position of (ra, dec) and d(x, y)/d(east, north) by central differences.

    Parameters
    ----------
    wcs : astropy.wcs.WCS
    ra, dec : ndarray (n,)
        Degrees.
    step_arcsec : float
        Half-width of the central difference, arcsec.

    Returns
    -------
    xy : ndarray (n, 2)
        0-based pixel coordinates (x = column, y = row).
    jac : ndarray (n, 2, 2)
        jac[:, :, 0] = d(x, y)/d east, jac[:, :, 1] = d(x, y)/d north, pixels per arcsec.
    """
    ra0 = np.atleast_1d(np.asarray(ra, dtype=float))
    dec0 = np.atleast_1d(np.asarray(dec, dtype=float))
    h = step_arcsec / ARCSEC_PER_DEG
    cosd = np.cos(np.radians(dec0))
    ras = np.concatenate([ra0, ra0 + h / cosd, ra0 - h / cosd, ra0, ra0])
    decs = np.concatenate([dec0, dec0, dec0, dec0 + h, dec0 - h])
    x, y = wcs.all_world2pix(ras, decs, 0)
    n = len(ra0)
    xy = np.stack([x[:n], y[:n]], axis=1)
    jac = np.empty((n, 2, 2))
    jac[:, 0, 0] = (x[n:2 * n] - x[2 * n:3 * n]) / (2 * step_arcsec)
    jac[:, 1, 0] = (y[n:2 * n] - y[2 * n:3 * n]) / (2 * step_arcsec)
    jac[:, 0, 1] = (x[3 * n:4 * n] - x[4 * n:]) / (2 * step_arcsec)
    jac[:, 1, 1] = (y[3 * n:4 * n] - y[4 * n:]) / (2 * step_arcsec)
    return xy, jac


def pixel_to_sky_jacobian(wcs, x, y, step_px=0.5):
    """d(east, north)/d(x, y) at pixels (x, y) by central differences, arcsec per pixel.

    Parameters
    ----------
    wcs : astropy.wcs.WCS
    x, y : ndarray (N,) float64
        0-based pixel coordinates.
    step_px : float
        Half-width of the central difference, pixels.

    Returns
    -------
    ndarray (N, 2, 2) float64
        ``J[n] = [[d east/dx, d east/dy], [d north/dx, d north/dy]]`` in arcsec per pixel,
        with east = d(ra) cos(dec) and north = d(dec) (same convention as
        :mod:`kernels.params`).
    """
    x = np.atleast_1d(np.asarray(x, dtype=np.float64))
    y = np.atleast_1d(np.asarray(y, dtype=np.float64))
    ra0, dec0 = wcs.all_pix2world(x, y, 0)
    cosd = np.cos(np.deg2rad(dec0))
    J = np.empty((len(x), 2, 2))
    for k, (dx, dy) in enumerate(((step_px, 0.0), (0.0, step_px))):
        rp, dp = wcs.all_pix2world(x + dx, y + dy, 0)
        rm, dm = wcs.all_pix2world(x - dx, y - dy, 0)
        dra = (rp - rm + 180.0) % 360.0 - 180.0
        J[:, 0, k] = dra * cosd * ARCSEC_PER_DEG / (2 * step_px)
        J[:, 1, k] = (dp - dm) * ARCSEC_PER_DEG / (2 * step_px)
    return J
