"""Tests of the Gaussian-mixture PSF fit (celeste.psf)."""
import os

import numpy as np
import pytest

from celeste import psf as P
from celeste.errors import ConfigError, DataError, NumericalError
from celeste.options import ImageOptions
from celeste.psf import PsfMixture, fit_psf_mixture, psf_mixture_image

#: the number of components the pipeline fits (--psf-components)
K_PIPELINE = ImageOptions().psf_components

HERE = os.path.dirname(os.path.abspath(__file__))
PSFIELDS = [
    os.path.join(HERE, "..", "data", "sdss", "2583", "2", "136", "psField-002583-2-0136.fits"),
    os.path.join(HERE, "data", "psField-000094-1-0012.fits"),
]


def two_gaussians():
    return PsfMixture(
        weight=np.array([0.7, 0.3]),
        mean=np.array([[0.3, -0.2], [-0.4, 0.5]]),
        cov=np.array([[[1.2, 0.3], [0.3, 0.9]], [[4.0, -0.6], [-0.6, 5.0]]]),
    )


def gauss_density(x, y, mean, cov):
    """Reference bivariate normal density, written independently of celeste.psf."""
    d = np.stack([x - mean[0], y - mean[1]], axis=-1)
    inv = np.linalg.inv(cov)
    q = np.einsum("...i,ij,...j->...", d, inv, d)
    return np.exp(-0.5 * q) / (2 * np.pi * np.sqrt(np.linalg.det(cov)))


def sdss_stamp(path, band, x=1024.0, y=744.0):
    from celeste.sdss import read_psfield

    return read_psfield(path, band).psf_at(x, y)


def test_render_matches_reference():
    mix = two_gaussians()
    img = psf_mixture_image(mix, (31, 29))
    yy, xx = np.mgrid[0:31, 0:29]
    dx, dy = xx - 14.0, yy - 15.0  # centre pixel (W // 2, H // 2) = (14, 15)
    ref = sum(w * gauss_density(dx, dy, m, c) for w, m, c in zip(mix.weight, mix.mean, mix.cov))
    np.testing.assert_allclose(img, ref, rtol=1e-12, atol=1e-15)
    # point samples of Gaussians this wide sum to their integral
    assert abs(img.sum() - 1.0) < 1e-6


def test_as_array_layout():
    arr = two_gaussians().as_array()
    assert arr.shape == (2, 6) and arr.dtype == np.float64 and arr.flags.c_contiguous
    np.testing.assert_array_equal(arr[1], [0.3, -0.4, 0.5, 4.0, -0.6, 5.0])


def test_jacobian_matches_finite_differences():
    rng = np.random.default_rng(3)
    k = 3
    dx, dy = P._pixel_offsets((11, 11))
    p = np.concatenate([[0.4, -0.7], np.ravel([[0.2, -0.1, 0.1, 0.3, -0.2], [-0.3, 0.2, 0.6, -0.2, 0.5],
                                                [0.1, 0.4, 1.2, 0.1, 1.0]])])
    p = p + 0.05 * rng.standard_normal(p.size)
    jac = P._jacobian(p, k, dx, dy)
    h = 1e-6
    for i in range(p.size):
        e = np.zeros_like(p)
        e[i] = h
        fd = (P._model(p + e, k, dx, dy) - P._model(p - e, k, dx, dy)) / (2 * h)
        np.testing.assert_allclose(jac[:, i], fd, rtol=1e-5, atol=1e-9)


def test_recovers_synthetic_two_component_stamp():
    truth = two_gaussians()
    stamp = psf_mixture_image(truth, (31, 31))
    fit = fit_psf_mixture(3.7 * stamp, n_components=2)  # normalization must not matter
    np.testing.assert_allclose(fit.weight, truth.weight, atol=1e-5)
    np.testing.assert_allclose(fit.mean, truth.mean, atol=1e-4)
    np.testing.assert_allclose(fit.cov, truth.cov, atol=1e-4)
    np.testing.assert_allclose(psf_mixture_image(fit, stamp.shape), stamp / stamp.sum(), atol=1e-9)


def test_single_gaussian_is_exact():
    truth = PsfMixture(np.array([1.0]), np.array([[-0.25, 0.4]]), np.array([[[2.0, 0.5], [0.5, 1.5]]]))
    stamp = psf_mixture_image(truth, (25, 25))
    fit = fit_psf_mixture(stamp, n_components=1)
    np.testing.assert_allclose(fit.mean, truth.mean, atol=1e-6)
    np.testing.assert_allclose(fit.cov, truth.cov, atol=1e-6)
    assert fit.weight[0] == 1.0


def _captured(stamp, mix):
    """R2: 1 - sum (model - s)^2 / sum s^2 with s the stamp normalized to sum 1."""
    s = stamp / stamp.sum()
    r = psf_mixture_image(mix, s.shape) - s
    return 1.0 - np.sum(r * r) / np.sum(s * s), np.sum(np.abs(r)) / np.sum(np.abs(s))


@pytest.mark.parametrize("band", range(5))
def test_real_sdss_psf_captured(band):
    """The pipeline's K on the real 2583-2-136 PSFs: > 99 % of the stamp's squared structure captured.

    "Captured" = 1 - sum (model - stamp)^2 / sum stamp^2 over the 25 x 25 stamp normalized
    to sum 1 (measured with K = 4: 0.99972-0.99990; K = 3: 0.99956-0.99981); the flux
    mismatch sum |model - stamp| / sum |stamp| is below 6 % (K = 4: 3.2-4.7 %; K = 3:
    4.1-6.6 %).
    """
    assert K_PIPELINE == 4
    stamp = sdss_stamp(PSFIELDS[0], band)
    mix = fit_psf_mixture(stamp, K_PIPELINE, source=f"psField band {band}")
    assert mix.n_components == K_PIPELINE
    r2, l1 = _captured(stamp, mix)
    assert r2 > 0.999
    assert l1 < 0.06
    # a proper PSF: unit total, positive weights, centred within half a pixel
    assert abs(mix.weight.sum() - 1.0) < 1e-12 and np.all(mix.weight > 0)
    centroid = mix.weight @ mix.mean
    assert np.all(np.abs(centroid) < 0.5)
    assert np.all(np.linalg.eigvalsh(mix.cov) > 0)


def test_more_components_fit_better():
    stamp = sdss_stamp(PSFIELDS[1], 3)
    r2 = [_captured(stamp, fit_psf_mixture(stamp, k))[0] for k in range(1, K_PIPELINE + 1)]
    assert all(a < b for a, b in zip(r2, r2[1:])), r2
    assert r2[2] > 0.99


def test_fit_is_deterministic():
    stamp = sdss_stamp(PSFIELDS[1], 2, x=300.0, y=1200.0)
    a = fit_psf_mixture(stamp, K_PIPELINE).as_array()
    b = fit_psf_mixture(stamp.copy(), K_PIPELINE).as_array()
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("k", [0, 7, 2.0, True, "3"])
def test_bad_n_components(k):
    with pytest.raises(ConfigError, match="n_components"):
        fit_psf_mixture(np.ones((9, 9)), k)


def test_bad_stamps():
    with pytest.raises(ConfigError, match="stamp"):
        fit_psf_mixture(np.ones(25))
    with pytest.raises(ConfigError, match="stamp"):
        fit_psf_mixture(np.ones((3, 3)))
    bad = np.ones((9, 9))
    bad[2, 2] = np.nan
    with pytest.raises(DataError, match="my.fits"):
        fit_psf_mixture(bad, source="my.fits band r")
    with pytest.raises(DataError, match="total"):
        fit_psf_mixture(np.zeros((9, 9)))


def test_optimizer_failure_raises_numerical_error(monkeypatch):
    class Failed:
        status = 0
        message = "maximum number of function evaluations exceeded"
        cost = 1.0

        def __init__(self, x):
            self.x = x

    monkeypatch.setattr(P.optimize, "least_squares", lambda fun, x0, **kw: Failed(x0))
    stamp = psf_mixture_image(two_gaussians(), (15, 15))
    with pytest.raises(NumericalError, match="K=2"):
        fit_psf_mixture(stamp, 2)


def test_render_rejects_bad_input():
    mix = PsfMixture(np.array([1.0]), np.zeros((1, 2)), np.array([[[1.0, 2.0], [2.0, 1.0]]]))
    with pytest.raises(ConfigError, match="mix"):
        psf_mixture_image(mix, (5, 5))
    with pytest.raises(ConfigError, match="shape"):
        psf_mixture_image(two_gaussians(), (0, 5))
