"""Tests of the galaxy prototype mixtures (kernels.profiles)."""
import numpy as np
import pytest
from scipy import optimize, special

from celeste.errors import ConfigError
from kernels import profiles as pr

PROTOS = {
    # name: (sersic n, amp, var, tolerance on |M/S - 1| for 0.1 <= r <= 4)
    "exp": (1.0, pr.EXP_AMP, pr.EXP_VAR, 0.015),
    "dev": (4.0, pr.DEV_AMP, pr.DEV_VAR, 0.05),
}


def sersic(r, n):
    """Unit-flux Sersic profile with half-light radius 1 (Graham & Driver 2005, eqs. 1, 4)."""
    b = special.gammaincinv(2 * n, 0.5)
    i_e = b ** (2 * n) / (2 * np.pi * n * np.exp(b) * special.gamma(2 * n))
    return i_e * np.exp(-b * (r ** (1.0 / n) - 1.0))


def mixture(r, amp, var):
    r = np.asarray(r, float)[..., None]
    return np.sum(amp * np.exp(-0.5 * r * r / var) / (2 * np.pi * var), axis=-1)


def enclosed(r, amp, var):
    """Flux inside radius r, by numerical quadrature of 2 pi r M(r) (not the closed form)."""
    x, w = np.polynomial.legendre.leggauss(200)
    # substitute r' = r t^2 to resolve the core well
    t = 0.5 * (x + 1.0)
    rr = r * t * t
    return np.sum(0.5 * w * 2 * np.pi * rr * mixture(rr, amp, var) * 2 * r * t)


@pytest.mark.parametrize("name", list(PROTOS))
def test_amplitudes_sum_to_one_and_are_positive(name):
    _, amp, var, _ = PROTOS[name]
    assert amp.shape == var.shape
    assert abs(amp.sum() - 1.0) < 1e-12
    assert np.all(amp > 0) and np.all(var > 0)
    assert np.all(np.diff(var) > 0)


def test_component_counts():
    assert pr.EXP_AMP.shape == (6,) and pr.DEV_AMP.shape == (8,)
    assert pr.N_GAL == 14


@pytest.mark.parametrize("name", list(PROTOS))
def test_half_light_radius_is_one(name):
    _, amp, var, _ = PROTOS[name]
    # total flux by quadrature far out, then the radius enclosing half of it
    total = enclosed(2000.0, amp, var)
    assert abs(total - 1.0) < 1e-6
    rhalf = optimize.brentq(lambda r: enclosed(r, amp, var) - 0.5 * total, 0.1, 10.0, xtol=1e-10)
    assert abs(rhalf - 1.0) < 0.02


@pytest.mark.parametrize("name", list(PROTOS))
def test_profile_matches_sersic(name):
    n, amp, var, tol = PROTOS[name]
    r = np.geomspace(0.1, 4.0, 1000)
    rel = mixture(r, amp, var) / sersic(r, n) - 1.0
    assert np.abs(rel).max() < tol


def test_sersic_reference_is_half_light():
    # guard the test's own reference: r = 1 encloses half the flux of each Sersic profile
    for n in (1.0, 4.0):
        x, w = np.polynomial.legendre.leggauss(400)
        t = 0.5 * (x + 1.0)
        r = t ** 4
        inner = np.sum(0.5 * w * 2 * np.pi * r * sersic(r, n) * 4 * t ** 3)
        assert abs(inner - 0.5) < 1e-6


def test_galaxy_mixture_axes():
    re, q = 2.0, 0.5
    w, cov = pr.galaxy_mixture(0.3, re, q, 0.0)
    assert w.shape == (14,) and cov.shape == (14, 2, 2)
    assert abs(w.sum() - 1.0) < 1e-12
    np.testing.assert_allclose(w[:6], 0.7 * pr.EXP_AMP)
    np.testing.assert_allclose(w[6:], 0.3 * pr.DEV_AMP)
    var = np.concatenate([pr.EXP_VAR, pr.DEV_VAR])
    # phi = 0: major axis points north
    np.testing.assert_allclose(cov[:, 1, 1], var * re**2)
    np.testing.assert_allclose(cov[:, 0, 0], var * (q * re) ** 2)
    np.testing.assert_allclose(cov[:, 0, 1], 0.0, atol=1e-15)
    # phi = pi/2: major axis points east
    _, cov = pr.galaxy_mixture(0.3, re, q, np.pi / 2)
    np.testing.assert_allclose(cov[:, 0, 0], var * re**2)
    np.testing.assert_allclose(cov[:, 1, 1], var * (q * re) ** 2)
    # phi = pi/4: major axis toward north-east, so east and north are positively correlated
    _, cov = pr.galaxy_mixture(0.3, re, q, np.pi / 4)
    assert np.all(cov[:, 0, 1] > 0)
    np.testing.assert_allclose(cov, np.swapaxes(cov, 1, 2))
    assert np.all(np.linalg.eigvalsh(cov) > 0)


@pytest.mark.parametrize("frac_dev", [0.0, 1.0, 0.4])
def test_galaxy_mixture_half_light_ellipse_by_sampling(frac_dev):
    """Monte Carlo: half of the light falls in the ellipse with semi-major axis re along phi."""
    re, q, phi = 1.7, 0.6, 0.7
    w, cov = pr.galaxy_mixture(frac_dev, re, q, phi)
    rng = np.random.default_rng(5)
    n = 400_000
    comp = rng.choice(len(w), size=n, p=w)
    chol = np.linalg.cholesky(cov)
    z = rng.standard_normal((n, 2))
    pts = np.einsum("nij,nj->ni", chol[comp], z)  # (east, north)
    major = np.array([np.sin(phi), np.cos(phi)])
    minor = np.array([-np.cos(phi), np.sin(phi)])
    a = pts @ major / re
    b = pts @ minor / (q * re)
    frac = np.mean(a * a + b * b <= 1.0)
    assert abs(frac - 0.5) < 0.01


@pytest.mark.parametrize(
    "args, name",
    [
        ((1.5, 1.0, 0.5, 0.0), "frac_dev"),
        ((0.5, 0.0, 0.5, 0.0), "re_arcsec"),
        ((0.5, 1.0, 0.0, 0.0), "axis_ratio"),
        ((0.5, 1.0, 1.2, 0.0), "axis_ratio"),
        ((0.5, 1.0, 0.5, np.nan), "angle_rad"),
        ((0.5, "big", 0.5, 0.0), "re_arcsec"),
    ],
)
def test_galaxy_mixture_bad_input(args, name):
    with pytest.raises(ConfigError, match=name):
        pr.galaxy_mixture(*args)


def test_prototype_array_layout():
    a = pr.prototype_array()
    assert a.shape == (2, 8, 2) and a.dtype == np.float64 and a.flags.c_contiguous
    np.testing.assert_array_equal(a[0, :6, 0], pr.EXP_AMP)
    np.testing.assert_array_equal(a[1, :, 1], pr.DEV_VAR)
    assert np.all(a[0, 6:, 0] == 0) and np.all(a[..., 1] > 0)
    a[0, 0, 0] = 5.0  # a copy: the module constants are untouched
    assert pr.EXP_AMP[0] != 5.0
