"""The numba ELBO's value, gradient and Hessian against an independent JAX implementation.

``celeste/jax_elbo.py`` writes the same objective from the model's equations with
``jax.numpy`` and lets JAX differentiate it; agreement to 1e-6 (scale-free: largest
absolute difference over the largest absolute entry) checks every hand-coded derivative
at once, without finite-difference noise (observed agreement: about 1e-15).  Skipped when
JAX is not installed (``pip install -e .[bench]``).  All problems share one shape so that
JAX compiles once (compilation dominates the run time).
"""
import numpy as np
import pytest

jax = pytest.importorskip("jax")

import jax.numpy as jnp  # noqa: E402

from celeste.jax_elbo import Q_SKIP_DEFAULT, compiled_parts  # noqa: E402
from kernel_problems import random_params, random_prior, synthetic_problem  # noqa: E402
from kernels import params as P  # noqa: E402
from kernels.elbo import source_loglik  # noqa: E402
from kernels.light import Q_SKIP  # noqa: E402
from kernels.kl import source_kl  # noqa: E402
from kernels.newton import source_elbo  # noqa: E402

TOL = 1e-6
BANDS = (0, 1, 2, 3, 4)  # every colour coefficient
HALF = 8
K_PSF = 4  # the pipeline's PSF_COMPONENTS
K_PRIOR = 3


def _rel_err(a, b):
    """Largest entrywise difference relative to the largest entry of b (scale-free)."""
    a = np.asarray(a)
    b = np.asarray(b)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def _problem(seed, k_used=K_PSF, neighbours=True):
    """A synthetic_problem case padded to K_PSF PSF components (zero weight, valid covariance)."""
    rng = np.random.default_rng(seed)
    prob = synthetic_problem(rng, bands=BANDS, half=HALF, K=k_used, neighbours=neighbours)
    if k_used < K_PSF:
        psf = prob.psf
        pad = np.zeros((psf.shape[0], K_PSF - k_used, 6))
        pad[:, :, 3] = 1.0
        pad[:, :, 5] = 1.0
        prob = prob._replace(psf=np.ascontiguousarray(np.concatenate([psf, pad], axis=1)))
    return rng, prob, random_prior(rng, K=K_PRIOR)


def _jax(th, prob, prior, q_skip=Q_SKIP_DEFAULT):
    (ll, gll, Hll), (kl, gkl, Hkl) = compiled_parts()(jnp.asarray(th), *prob, *prior, q_skip)
    return (float(ll), np.asarray(gll), np.asarray(Hll)), (float(kl), np.asarray(gkl), np.asarray(Hkl))


def _check(ours, theirs):
    v, g, H = ours
    vj, gj, Hj = theirs
    assert abs(v - vj) <= TOL * abs(vj)
    assert _rel_err(g, gj) < TOL
    assert _rel_err(H, Hj) < TOL
    # every Hessian row on its own scale too (shape rows are small next to flux rows)
    for i in range(P.N_PARAMS):
        scale = np.abs(Hj[i]).max()
        assert np.abs(H[i] - Hj[i]).max() <= TOL * scale + 1e-12 * np.abs(Hj).max(), P.PARAM_NAMES[i]


def test_cut_matches_kernel():
    assert Q_SKIP_DEFAULT == Q_SKIP


@pytest.mark.parametrize("kind", ["star", "galaxy", "mixed"])
def test_elbo_matches_jax(kind):
    """Value, gradient and Hessian of source_elbo against JAX's, for several random parameters."""
    rng, prob, prior = _problem({"star": 31, "galaxy": 32, "mixed": 33}[kind])
    star = {"star": True, "galaxy": False, "mixed": None}[kind]
    for _ in range(3):
        th = random_params(rng, star=star)
        if kind == "galaxy":
            th[P.E_SCALE] = np.log(rng.uniform(0.5, 4.0))  # include galaxies large enough to skip components
        g = np.zeros(P.N_PARAMS)
        H = np.zeros((P.N_PARAMS, P.N_PARAMS))
        v = source_elbo(th, prob, prior, 2, g, H)
        (ll, gll, Hll), (kl, gkl, Hkl) = _jax(th, prob, prior)
        _check((v, g, H), (ll - kl, gll - gkl, Hll - Hkl))


def test_loglik_and_kl_separately_match_jax():
    """The two halves of the ELBO on their own (a failure points at one kernel module), with
    padded PSF components, no neighbours and a colour prior component of weight zero."""
    rng, prob, prior = _problem(34, k_used=2, neighbours=False)
    c_weight = prior.c_weight.copy()
    c_weight[1, 2] = 0.0
    c_weight[1] /= c_weight[1].sum()
    prior = prior._replace(c_weight=c_weight)
    th = random_params(rng)
    jll, jkl = _jax(th, prob, prior)
    g = np.zeros(27)
    H = np.zeros((27, 27))
    v = source_loglik(th, prob, 2, g, H)
    _check((v, g, H), jll)
    g = np.zeros(27)
    H = np.zeros((27, 27))
    v = source_kl(th, prior, 2, g, H, 1.0)
    _check((v, g, H), jkl)


def test_component_cut_is_negligible():
    """The kernel's cut of galaxy components beyond 6 sigma changes the likelihood and its
    derivatives by < 1e-6 relative (JAX with and without the cut), so replicating the cut in
    the oracle hides nothing; and the cut does remove terms here (the test is not vacuous)."""
    rng, prob, prior = _problem(35, neighbours=False)
    th = random_params(rng, star=False)
    th[P.E_SCALE] = np.log(0.6)
    cut, _ = _jax(th, prob, prior)
    exact, _ = _jax(th, prob, prior, q_skip=np.inf)
    assert cut[0] != exact[0]
    _check(cut, exact)

