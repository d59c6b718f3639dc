"""celeste.tangent: the two local Jacobians of a real SDSS WCS are inverse to each other and
agree with the nominal pixel scale."""
from pathlib import Path

import numpy as np

from celeste.sdss import ARCSEC_PER_PX, read_frame_header
from celeste.tangent import pixel_to_sky_jacobian, sky_to_pixel_jacobian

FRAME = Path(__file__).resolve().parents[1] / "data" / "sdss" / "2583" / "2" / "136" / "frame-r-002583-2-0136.fits.bz2"


def test_jacobians_are_inverse_and_scale_is_sdss():
    from astropy.wcs import WCS

    wcs = WCS(read_frame_header(FRAME))
    x, y = np.array([10.0, 1024.0, 2000.0]), np.array([20.0, 744.0, 1400.0])
    ra, dec = wcs.all_pix2world(x, y, 0)
    xy, j_pix = sky_to_pixel_jacobian(wcs, ra, dec)
    j_sky = pixel_to_sky_jacobian(wcs, x, y)
    np.testing.assert_allclose(xy, np.stack([x, y], 1), atol=1e-6)
    for a, b in zip(j_pix, j_sky):
        np.testing.assert_allclose(a @ b, np.eye(2), atol=1e-5)
    # |det| of d(east, north)/d(x, y) is the pixel area in arcsec^2
    np.testing.assert_allclose(np.sqrt(np.abs(np.linalg.det(j_sky))), ARCSEC_PER_PX, rtol=2e-3)
