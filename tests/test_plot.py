"""Known answers of the catalog renderer's helpers (celeste.plot)."""
import numpy as np
import pytest

from celeste.images import Image
from celeste.plot import residuals_near


def _image(counts, mask):
    h, w = counts.shape
    return Image(band=2, counts=counts, sky=np.ones((h, w)), calibration=np.full(w, 0.005), gain=4.6, mask=mask,
                 wcs=None, psf_at=None)


def test_residuals_near_selects_each_pixel_once_and_skips_masked():
    h, w = 40, 60
    model = np.full((h, w), 100.0)
    yy, xx = np.mgrid[:h, :w]
    counts = model + 2.0 * np.sqrt(model)  # every residual is +2 sigma
    mask = np.zeros((h, w), bool)
    mask[20, 20] = True
    im = _image(counts, mask)
    # two overlapping discs of radius 5 around (20, 20) and (24, 20)
    res = residuals_near(im, model, [20.0, 24.0], [20.0, 20.0], 5.0)
    sel = ((xx - 20) ** 2 + (yy - 20) ** 2 <= 25) | ((xx - 24) ** 2 + (yy - 20) ** 2 <= 25)
    assert len(res) == sel.sum() - 1
    assert np.all(res == pytest.approx(2.0))
    # points outside the image contribute their pixels inside it only
    assert len(residuals_near(im, model, [-3.0], [0.0], 5.0)) == np.sum((xx + 3) ** 2 + yy ** 2 <= 25)
