"""The images stage for a box (celeste.images.box_images): cutouts covering the region, the sky
refinement as an option, and PSF mixtures with their fallback to fewer components."""
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import celeste.images as images
from celeste.errors import NumericalError
from celeste.options import ImageOptions
from celeste.psf import fit_psf_mixture

DATA = str(Path(__file__).resolve().parents[1] / "data" / "sdss")
FIELDS = [(2583, 2, 136)]
#: 36 x 36 arcsec in the ordinary-sky half of the sample field
REGION = (323.360, 323.370, -0.700, -0.690)


@pytest.fixture(scope="module")
def r_images():
    return images.box_images(DATA, FIELDS, (2,), REGION, ImageOptions())


def test_cutout_covers_the_region_with_padding(r_images):
    ims, mixes = r_images
    assert len(ims) == len(mixes) == 1
    im = ims[0]
    assert im.band == 2 and im.x0 > 0 and im.y0 > 0
    ra = [REGION[0], REGION[1], REGION[0], REGION[1]]
    dec = [REGION[2], REGION[2], REGION[3], REGION[3]]
    x, y = im.wcs.all_world2pix(ra, dec, 0)
    H, W = im.shape
    pad = images.PAD_PX
    assert np.all((x >= pad - 1) & (x <= W - pad) & (y >= pad - 1) & (y <= H - pad))
    # about 36" / 0.396" = 91 px plus the padding on each side
    assert 90 + 2 * pad <= min(H, W) + 2 and max(H, W) <= 93 + 2 * pad


def test_default_psf_mixture_has_the_option_s_components(r_images):
    mix = r_images[1][0]
    assert mix.shape == (ImageOptions().psf_components, 6)
    assert abs(mix[:, 0].sum() - 1.0) < 1e-9


def test_sky_refinement_is_an_option(r_images):
    raw, _ = images.box_images(DATA, FIELDS, (2,), REGION, replace(ImageOptions(), sky_refine=False))
    diff = r_images[0][0].sky - raw[0].sky
    # the SDSS sky sits low on this field: the refinement adds a small positive pedestal
    assert 0 < np.median(diff) < 0.05
    assert np.array_equal(raw[0].counts, r_images[0][0].counts)


def test_region_off_the_field_gives_no_image():
    ims, mixes = images.box_images(DATA, FIELDS, (2,), (10.0, 10.01, 5.0, 5.01), ImageOptions())
    assert ims == [] and mixes == []


def test_psf_mixture_falls_back_to_fewer_components(r_images, monkeypatch):
    im = r_images[0][0]
    tried = []

    def flaky(stamp, n_components, source):
        tried.append(n_components)
        if n_components > 2:
            raise NumericalError(f"{source}: degenerate")
        return fit_psf_mixture(stamp, n_components=n_components, source=source)

    monkeypatch.setattr(images, "fit_psf_mixture", flaky)
    mix = images.psf_mixture(im, 10.0, 20.0, 4)
    assert tried == [4, 3, 2] and mix.n_components == 2


def test_psf_mixture_failure_names_the_image(r_images, monkeypatch):
    im = r_images[0][0]

    def broken(stamp, n_components, source):
        raise NumericalError(f"{source}: degenerate")

    monkeypatch.setattr(images, "fit_psf_mixture", broken)
    with pytest.raises(NumericalError, match="frame-r-002583-2-0136.*1 to 3 components"):
        images.psf_mixture(im, 10.0, 20.0, 3)
