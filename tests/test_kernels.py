"""Kernel derivatives against finite differences, KL against Monte Carlo, and recovery."""
import numpy as np
import pytest

from kernels import params as P
from kernels.bvn import bvn_log_derivs, bvn_logpdf_reference
from kernels.elbo import source_loglik
from kernels.inputs import PIX_BGE, PIX_COUNTS, PIX_IOTA, make_settings
from kernels.kl import DELTA, source_kl
from kernels.light import source_light
from kernels.newton import INFO_CONVERGED, INFO_ELBO, INFO_GNORM, N_INFO, fit_source, optimize_source, source_elbo, tr_step
from kernels.uncertainty import log_flux_sd, lrvb_covariance
from kernel_problems import package_prior, random_params, random_prior, synthetic_problem


def _fd_grad(f, x, eps):
    return np.array([(f(x + eps * e) - f(x - eps * e)) / (2 * eps) for e in np.eye(len(x))])


def _rel_err(a, b):
    """Largest entrywise error relative to the largest entry of b (scale-free)."""
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-300)


def test_bvn_derivatives():
    rng = np.random.default_rng(0)
    g = np.zeros(5)
    h = np.zeros((5, 5))
    for _ in range(20):
        dx, dy = rng.normal(0, 2, 2)
        A = rng.normal(0, 1, (2, 2))
        S = A @ A.T + 0.5 * np.eye(2)
        f = bvn_log_derivs(dx, dy, S[0, 0], S[0, 1], S[1, 1], g, h)
        assert f == pytest.approx(bvn_logpdf_reference(dx, dy, S[0, 0], S[0, 1], S[1, 1]), rel=1e-12)
        # variables: (m_x, m_y, a, b, c) with d = p - m

        def fx(v):
            return bvn_logpdf_reference(dx - v[0], dy - v[1], S[0, 0] + v[2], S[0, 1] + v[3], S[1, 1] + v[4])

        def gx(v):
            gg = np.zeros(5)
            bvn_log_derivs(dx - v[0], dy - v[1], S[0, 0] + v[2], S[0, 1] + v[3], S[1, 1] + v[4], gg, np.zeros((5, 5)))
            return gg

        z = np.zeros(5)
        assert _rel_err(g, _fd_grad(fx, z, 1e-6)) < 1e-7
        assert _rel_err(h, _fd_grad(gx, z, 1e-6)) < 1e-7
        assert np.allclose(h, h.T)


@pytest.mark.parametrize("kind", ["star", "galaxy", "mixed"])
@pytest.mark.parametrize("neighbours", [False, True])
def test_loglik_gradient_hessian_fd(kind, neighbours):
    rng = np.random.default_rng({"star": 1, "galaxy": 2, "mixed": 3}[kind] + 10 * neighbours)
    prob = synthetic_problem(rng, bands=(0, 2, 3), neighbours=neighbours)
    star = {"star": True, "galaxy": False, "mixed": None}[kind]
    th = random_params(rng, star=star)
    if star is not None:
        th[P.A_STAR] = 1.5 if star else -1.5  # both branches still matter for the derivatives

    def f(x):
        return source_loglik(x, prob, 0, np.zeros(27), np.zeros((27, 27)))

    def gr(x):
        g = np.zeros(27)
        source_loglik(x, prob, 1, g, np.zeros((27, 27)))
        return g

    g = np.zeros(27)
    H = np.zeros((27, 27))
    v = source_loglik(th, prob, 2, g, H)
    assert v == pytest.approx(f(th), rel=1e-13)
    assert np.allclose(gr(th), g, rtol=1e-12, atol=0)
    assert _rel_err(g, _fd_grad(f, th, 1e-5)) < 1e-5
    assert _rel_err(H, _fd_grad(gr, th, 1e-6)) < 1e-5
    assert np.array_equal(H, H.T)


def test_kl_gradient_hessian_fd():
    rng = np.random.default_rng(5)
    pr = random_prior(rng)
    for _ in range(3):
        th = random_params(rng)

        def f(x):
            return source_kl(x, pr, 0, np.zeros(27), np.zeros((27, 27)), 1.0)

        def gr(x):
            g = np.zeros(27)
            source_kl(x, pr, 1, g, np.zeros((27, 27)), 1.0)
            return g

        g = np.zeros(27)
        H = np.zeros((27, 27))
        source_kl(th, pr, 2, g, H, 1.0)
        assert _rel_err(g, _fd_grad(f, th, 1e-6)) < 1e-6
        assert _rel_err(H, _fd_grad(gr, th, 1e-6)) < 1e-6
        # weight -1 subtracts exactly the same derivatives from what is there
        g2 = np.full(27, 0.5)
        H2 = np.full((27, 27), 0.25)
        source_kl(th, pr, 2, g2, H2, -1.0)
        assert np.array_equal(g2, 0.5 - g) and np.array_equal(H2, 0.25 - H)


def test_kl_against_monte_carlo():
    """Closed-form KL of each factor against a Monte Carlo estimate E_q[ln q - ln p]."""
    rng = np.random.default_rng(7)
    pr = random_prior(rng, K=2)
    # a prior with one colour component and a type probability of 1/2 isolates terms
    th = random_params(rng)
    th[P.A_STAR] = 0.7
    chi = P.sigmoid(th[P.A_STAR])
    n = 400_000
    total_mc = chi * np.log(chi / pr.prob_star) + (1 - chi) * np.log((1 - chi) / (1 - pr.prob_star))
    for t, wt in ((0, chi + DELTA), (1, 1 - chi + DELTA)):
        mu, s2 = th[P.R_MEAN[t]], np.exp(th[P.R_LOGVAR[t]])
        m0, v0 = pr.r_prior[t]
        x = rng.normal(mu, np.sqrt(s2), n)
        kl_r = np.mean(-0.5 * (x - mu) ** 2 / s2 - 0.5 * np.log(s2) + 0.5 * (x - m0) ** 2 / v0 + 0.5 * np.log(v0))
        m = th[P.C_MEAN[t]:P.C_MEAN[t] + 4]
        v = np.exp(th[P.C_LOGVAR[t]:P.C_LOGVAR[t] + 4])
        c = rng.normal(m, np.sqrt(v), (n, 4))
        logq = np.sum(-0.5 * (c - m) ** 2 / v - 0.5 * np.log(2 * np.pi * v), axis=1)
        kls = []
        for k in range(2):
            d = c - pr.c_mean[t, k]
            logp = -0.5 * np.einsum("ni,ij,nj->n", d, pr.c_prec[t, k], d) - 0.5 * pr.c_logdet[t, k] - 2 * np.log(2 * np.pi)
            kls.append(np.mean(logq - logp))
        kls = np.array(kls)
        kl_c = -np.log(np.sum(pr.c_weight[t] * np.exp(-kls)))
        total_mc += wt * (kl_r + kl_c)
    sp = pr.shape_prior
    e = th[[P.E_DEV, P.E_AXIS, P.E_SCALE]]
    total_mc += (1 - chi + DELTA) * np.sum(0.5 * (e - sp[:, 0]) ** 2 / sp[:, 1] + 0.5 * np.log(2 * np.pi * sp[:, 1]))
    kl = source_kl(th, pr, 0, np.zeros(27), np.zeros((27, 27)), 1.0)
    assert kl == pytest.approx(total_mc, abs=0.02)


def test_trust_region_step_solves_subproblem():
    rng = np.random.default_rng(11)
    for _ in range(20):
        A = rng.normal(size=(6, 6))
        H = A + A.T
        g = rng.normal(size=6)
        p = np.zeros(6)
        radius = 0.7
        pred = tr_step(g, H, radius, p)
        assert np.linalg.norm(p) <= radius * (1 + 1e-8)
        # no random point in the ball does better
        m = lambda s: g @ s + 0.5 * s @ H @ s  # noqa: E731
        for _ in range(200):
            s = rng.normal(size=6)
            s *= radius * rng.uniform() ** (1 / 6) / np.linalg.norm(s)
            assert m(p) <= m(s) + 1e-9
        assert pred == pytest.approx(-m(p))


def _render(rng, truth, prob):
    """``prob`` with Poisson counts drawn from the model of ``truth`` over its background."""
    eg = np.zeros(len(prob.pix))
    vg = np.zeros(len(prob.pix))
    source_light(truth, prob, eg, vg)
    out = prob.pix.copy()
    out[:, PIX_COUNTS] = rng.poisson(out[:, PIX_IOTA] * (out[:, PIX_BGE] + eg))
    return prob._replace(pix=out)


def test_truth_beats_perturbations():
    rng = np.random.default_rng(21)
    prob = synthetic_problem(rng, bands=(1, 2, 3), half=10, neighbours=False)
    pr = random_prior(rng)
    truth = random_params(rng, star=False)
    truth[P.R_MEAN[1]] = np.log(40.0)
    prob = _render(rng, truth, prob)
    z = (np.zeros(27), np.zeros((27, 27)))
    f0 = source_elbo(truth, prob, pr, 0, *z)
    for idx, delta in ((P.U_EAST, 0.4), (P.U_NORTH, -0.4), (P.R_MEAN[1], 0.3), (P.E_SCALE, 0.4),
                       (P.E_ANGLE, 0.6), (P.E_AXIS, 1.0), (P.C_MEAN[1] + 1, 0.5)):
        th = truth.copy()
        th[idx] += delta
        assert source_elbo(th, prob, pr, 0, *z) < f0, P.PARAM_NAMES[idx]


def _recover(kind, seeds=50):
    """Fraction of noise seeds where r flux and position fall within 2 posterior sd."""
    hits_flux = hits_pos = 0
    rng0 = np.random.default_rng(100)
    prob0 = synthetic_problem(rng0, bands=(0, 1, 2, 3, 4), half=10, neighbours=False)
    pr = random_prior(rng0)._replace(prob_star=0.5)
    settings = make_settings(100, 1e-8, 1e-6)
    truth = random_params(rng0, star=(kind == "star"))
    t = 0 if kind == "star" else 1
    truth[P.A_STAR] = 8.0 if kind == "star" else -8.0
    truth[P.R_MEAN[t]] = np.log(15.0)
    info = np.zeros(N_INFO)
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        prob = _render(rng, truth, prob0)
        th = truth.copy()
        th[P.U_EAST] += 0.2
        th[P.R_MEAN] += 0.2
        th[P.A_STAR] = 0.0
        fit_source(th, prob, pr, settings, info)
        assert info[INFO_CONVERGED] == 1
        tt = 0 if th[P.A_STAR] > 0 else 1
        assert tt == t
        # the unused type's parameters stay near their prior (no drift when q(type) rounds to 0 or 1)
        assert abs(th[P.E_SCALE] - pr.shape_prior[2, 0]) < 6 * np.sqrt(pr.shape_prior[2, 1])
        g = np.zeros(27)
        H = np.zeros((27, 27))
        source_elbo(th, prob, pr, 2, g, H)
        idx, cov = lrvb_covariance(H, t)
        sd = log_flux_sd(th, H, t)[P.REF_BAND]
        hits_flux += abs(th[P.R_MEAN[t]] - truth[P.R_MEAN[t]]) < 2 * sd
        err = th[:2] - truth[:2]
        hits_pos += bool(np.all(np.abs(err) < 2 * np.sqrt(np.diag(cov)[:2])))
    return hits_flux / seeds, hits_pos / seeds


@pytest.mark.parametrize("kind", ["star", "galaxy"])
def test_recovery_over_noise_seeds(kind):
    flux_frac, pos_frac = _recover(kind)
    assert flux_frac >= 0.9
    assert pos_frac >= 0.9


@pytest.mark.parametrize("a", [-60.0, -40.0, 40.0, 60.0])
def test_extreme_type_probabilities_stay_finite(a):
    """q(star) rounding to 0 or 1 must not produce inf/nan in the ELBO, gradient or Hessian."""
    rng = np.random.default_rng(3)
    prob = synthetic_problem(rng, bands=(2,), half=5)
    pr = random_prior(rng)
    th = random_params(rng)
    th[P.A_STAR] = a
    g = np.zeros(27)
    H = np.zeros((27, 27))
    v = source_elbo(th, prob, pr, 2, g, H)
    assert np.isfinite(v) and np.all(np.isfinite(g)) and np.all(np.isfinite(H))


# ------------------------------------------------------------------ every band, the optimizer's objective
@pytest.mark.parametrize("band", [0, 1, 2, 3, 4])
def test_loglik_each_band_every_colour_coefficient(band):
    """One band alone: the likelihood depends on colour j exactly when COLOUR_TO_BAND[band, j] != 0
    (u: c0, c1; g: c1; r: none; i: c2; z: c2, c3), with the right derivatives (finite differences)."""
    rng = np.random.default_rng(40 + band)
    prob = synthetic_problem(rng, bands=(band,), half=7, K=4, neighbours=True)
    th = random_params(rng)

    def f(x):
        return source_loglik(x, prob, 0, np.zeros(27), np.zeros((27, 27)))

    def gr(x):
        g = np.zeros(27)
        source_loglik(x, prob, 1, g, np.zeros((27, 27)))
        return g

    g = np.zeros(27)
    H = np.zeros((27, 27))
    source_loglik(th, prob, 2, g, H)
    for t in range(2):
        for j in range(4):
            for idx in (P.C_MEAN[t] + j, P.C_LOGVAR[t] + j):
                if P.COLOUR_TO_BAND[band, j] == 0.0:
                    assert g[idx] == 0.0 and not np.any(H[idx]), P.PARAM_NAMES[idx]
                else:
                    assert abs(g[idx]) > 1e-6 * np.abs(g).max(), P.PARAM_NAMES[idx]
    fd_g = _fd_grad(f, th, 1e-5)
    fd_h = _fd_grad(gr, th, 1e-6)
    assert _rel_err(g, fd_g) < 1e-5
    assert _rel_err(H, fd_h) < 1e-5
    # the brightness rows on their own scale (they are small next to the position rows)
    for t in range(2):
        rows = slice(P.R_MEAN[t], P.R_MEAN[t] + P.N_BRIGHT)
        assert _rel_err(H[rows], fd_h[rows]) < 1e-5


def _optimizer_problem(seed, kind):
    """Five bands, K = 4 PSF components, neighbours' light, the package's priors and prototypes:
    the pipeline's setting of :func:`kernels.newton.optimize_source`."""
    rng = np.random.default_rng(seed)
    prob = synthetic_problem(rng, bands=(0, 1, 2, 3, 4), half=8, K=4, neighbours=True)
    truth = random_params(rng, star=(kind == "star"))
    truth[P.R_MEAN] = np.log(25.0)
    return rng, _render(rng, truth, prob), package_prior(), truth


@pytest.mark.parametrize("kind", ["star", "galaxy"])
def test_optimizer_objective_derivatives(kind):
    """The function the optimizer maximizes (source_elbo with the package's priors) has the gradient
    and Hessian it is given, at a start and at the optimum it returns; the optimizer reports that
    function's value and gradient there."""
    rng, prob, prior, truth = _optimizer_problem({"star": 50, "galaxy": 51}[kind], kind)
    z = (np.zeros(27), np.zeros((27, 27)))

    def f(x):
        return source_elbo(x, prob, prior, 0, *z)

    def gr(x):
        g = np.zeros(27)
        source_elbo(x, prob, prior, 1, g, np.zeros((27, 27)))
        return g

    start = truth.copy()
    start[P.U_EAST] += 0.3
    start[P.R_MEAN] += 0.3
    start[P.A_STAR] = 0.0
    g0 = gr(start)
    scale = np.abs(g0).max()  # gradient terms' scale: at the optimum they cancel to ~1e-3
    th = start.copy()
    info = np.zeros(N_INFO)
    fopt = optimize_source(th, prob, prior, make_settings(50, 1e-3, 1e-4), info)
    assert fopt > f(start)
    assert info[INFO_ELBO] == fopt == f(th)
    for x in (start, th):
        g = np.zeros(27)
        H = np.zeros((27, 27))
        v = source_elbo(x, prob, prior, 2, g, H)
        assert v == f(x)
        assert np.abs(g - gr(x)).max() <= 1e-12 * scale
        assert np.abs(g - _fd_grad(f, x, 1e-5)).max() <= 1e-6 * scale
        fd_h = _fd_grad(gr, x, 1e-6)
        assert _rel_err(H, fd_h) < 1e-5
        for i in range(P.N_PARAMS):  # each row on its own scale
            scale = np.abs(fd_h[i]).max()
            assert np.abs(H[i] - fd_h[i]).max() <= 1e-4 * scale + 1e-7 * np.abs(fd_h).max(), P.PARAM_NAMES[i]
    g = np.zeros(27)
    source_elbo(th, prob, prior, 2, g, np.zeros((27, 27)))  # the optimizer's own gradient (mode 2)
    assert info[INFO_GNORM] == np.abs(g).max()


def test_trust_region_hard_case():
    """g orthogonal to the eigenvector of a negative smallest eigenvalue (Nocedal & Wright Sec. 4.3):
    the step reaches the boundary along that eigenvector and solves the subproblem."""
    rng = np.random.default_rng(12)
    Q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    lam = np.array([-2.0, 0.5, 1.0, 1.5, 3.0, 4.0])
    H = Q @ np.diag(lam) @ Q.T
    H = 0.5 * (H + H.T)
    g = Q[:, 1:] @ rng.normal(size=5)  # no component along Q[:, 0]
    radius = 3.0 * np.linalg.norm(np.linalg.solve(H + 2.0 * np.eye(6) + 1e-3 * np.eye(6), g))
    # the shifted Newton step at lambda* = -lambda_min is shorter than the radius: the hard case
    p_shift = -np.linalg.lstsq(H + 2.0 * np.eye(6), g, rcond=None)[0]
    assert np.linalg.norm(p_shift) < radius
    p = np.zeros(6)
    pred = tr_step(g, H, radius, p)
    assert np.linalg.norm(p) == pytest.approx(radius, rel=1e-8)
    assert abs(p @ Q[:, 0]) > 0.5 * radius  # it moves along the negative-curvature direction
    # first-order condition (H + lambda* I) p = -g with lambda* = -lambda_min
    assert np.allclose((H + 2.0 * np.eye(6)) @ p, -g, atol=1e-6 * np.abs(g).max())
    m = lambda s: g @ s + 0.5 * s @ H @ s  # noqa: E731
    assert pred == pytest.approx(-m(p))
    for _ in range(500):
        s = rng.normal(size=6)
        s *= radius * rng.uniform() ** (1 / 6) / np.linalg.norm(s)
        assert m(p) <= m(s) + 1e-9
    # interior case: positive definite H and a large radius give the Newton step
    Hp = Q @ np.diag(np.abs(lam) + 0.1) @ Q.T
    Hp = 0.5 * (Hp + Hp.T)
    tr_step(g, Hp, 1e6, p)
    assert np.allclose(p, -np.linalg.solve(Hp, g), rtol=1e-10, atol=1e-12)


def test_inputs_are_checked_once_with_clear_errors():
    """make_problem / make_prior / make_settings name the bad array; the kernels then trust them."""
    from kernels.inputs import make_problem, make_prior

    rng = np.random.default_rng(60)
    pix, img, psf, proto = synthetic_problem(rng, bands=(2,), half=3)
    make_problem(pix, img, psf, proto)
    with pytest.raises(ValueError, match="pix: expected float64"):
        make_problem(pix.astype(np.float32), img, psf, proto)
    with pytest.raises(ValueError, match="pix: not C-contiguous"):
        make_problem(np.asfortranarray(pix), img, psf, proto)
    with pytest.raises(ValueError, match="psf: expected shape"):
        make_problem(pix, img, psf[:, :, :5].copy(), proto)
    bad = pix.copy()
    bad[0, 0] = 1.0  # image 1 of 1
    with pytest.raises(ValueError, match="image index"):
        make_problem(bad, img, psf, proto)
    pr = random_prior(rng)
    with pytest.raises(ValueError, match="prob_star"):
        make_prior(1.0, *pr[1:])
    with pytest.raises(ValueError, match="c_prec"):
        make_prior(pr.prob_star, pr.r_prior, pr.c_weight, pr.c_mean, pr.c_prec[:, :2].copy(), pr.c_logdet,
                   pr.shape_prior)
    with pytest.raises(ValueError, match="max_iter"):
        make_settings(0, 1e-3, 1e-4)


def test_sigmoid_is_one_helper_for_python_and_kernels():
    assert P.sigmoid(0.0) == 0.5
    assert P.sigmoid(-800.0) == 0.0 and P.sigmoid(800.0) == 1.0
    x = np.array([-3.0, 0.2, 5.0])
    assert np.allclose(P.sigmoid(x), 1 / (1 + np.exp(-x)), rtol=1e-15)
    assert np.allclose(P.logit(P.sigmoid(x)), x, rtol=1e-12)
