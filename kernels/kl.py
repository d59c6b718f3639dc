"""Closed-form KL(q || prior) for one source, with exact gradient and Hessian.

Prior (Regier et al., AoAS 2019, Sec. 2.1, with galaxy shape priors added):
type ~ Bernoulli(prob_star); ln r | t ~ Normal(r_mean[t], r_var[t]); colours c | t ~
sum_k w[t,k] Normal(mu[t,k], Sigma[t,k]); for galaxies, (e_dev, e_axis, e_scale) ~
independent Normals on the unconstrained scale (angle uniform).

Variational factors: q(star) = chi; ln r | t ~ Normal(mu, s^2); c | t ~ Normal(m, diag v);
k | t categorical.  q(k) is set to its optimum given the rest,
q(k) proportional to w_k exp(-KL_k), which turns KL(q(c,k) || p(c,k)) into
-ln sum_k w_k exp(-KL_k) (a standard identity: minimizing over q(k) the sum
sum_k q(k)(ln q(k) - ln w_k + KL_k)).  The shape parameters are point estimates: their
term is -(1 - chi) ln p(e_dev, e_axis, e_scale).

    KL = chi ln(chi/p) + (1-chi) ln((1-chi)/(1-p))
         + sum_t (chi_t + DELTA) [ KL_N(mu, s^2 || r_mean, r_var) - ln sum_k w_k exp(-KL_k) ]
         - (1 - chi + DELTA) ln p_shape,        chi_0 = chi, chi_1 = 1 - chi

KL_N(N(m, diag v) || N(mu, Sigma)) = 0.5 [tr(Sigma^-1 diag v) + (mu-m)^T Sigma^-1 (mu-m) - d
+ ln|Sigma| - sum ln v] (e.g. Bishop, PRML, eq. 2.155 generalised; Kullback 1959).

Unused-type regularization: each type's brightness KL is weighted by chi_t + DELTA and the
shape term by (1 - chi) + DELTA (DELTA = 1e-3).  Without it, once q(star) rounds to 1 the
galaxy's parameters have no curvature and the Newton steps let them drift without bound
(seen: galaxy radii of 1e15 arcsec on stars); with it they rest at their prior.  The ELBO
changes by at most DELTA times the unused type's KL.

The prior is a :class:`kernels.inputs.Prior`: ``prob_star`` scalar; ``r_prior`` (2, 2)
[t, (mean, var)]; ``c_weight`` (2, K); ``c_mean`` (2, K, 4); ``c_prec`` (2, K, 4, 4) precision
matrices; ``c_logdet`` (2, K) ln|Sigma|; ``shape_prior`` (3, 2) [(e_dev, e_axis, e_scale), (mean, var)].
"""
import math

import numpy as np

from . import params as P
from .config import kernel

#: weight added to each type's KL and to the shape term (module docstring)
DELTA = 1e-3


@kernel
def colour_kl_terms(m, lv, c_weight_t, c_mean_t, c_prec_t, c_logdet_t, kl_k):
    """KL_k = KL(N(m, diag exp(lv)) || N(mu_k, Sigma_k)) for every component k; fills kl_k (K,)."""
    K = c_weight_t.shape[0]
    for k in range(K):
        acc = c_logdet_t[k] - 4.0
        for i in range(4):
            acc += c_prec_t[k, i, i] * math.exp(lv[i]) - lv[i]
            for j in range(4):
                acc += (c_mean_t[k, i] - m[i]) * c_prec_t[k, i, j] * (c_mean_t[k, j] - m[j])
        kl_k[k] = 0.5 * acc


@kernel
def source_kl(params, prior, mode, grad, hess, weight):
    """KL(q || prior) of one source (module docstring); adds ``weight`` times its gradient/Hessian.

    Parameters
    ----------
    params : ndarray (27,)
        Unconstrained source parameters (:mod:`kernels.params`).
    prior : kernels.inputs.Prior
    mode : int
        0 value; 1 and gradient; 2 and Hessian.
    grad, hess : ndarray (27,), (27, 27), outputs: ``weight`` times the KL's derivatives are
        *added to* them (not overwritten).
    weight : float
        1 for the KL's own derivatives; -1 to subtract them (the ELBO = log likelihood - KL,
        :func:`kernels.newton.source_elbo`).  Must be +1 or -1 (exact in floating point).

    Returns
    -------
    float
        The KL value (nats), to be subtracted from the expected log likelihood.
    """
    prob_star, r_prior, c_weight, c_mean, c_prec, c_logdet, shape_prior = (
        prior.prob_star, prior.r_prior, prior.c_weight, prior.c_mean, prior.c_prec, prior.c_logdet,
        prior.shape_prior)
    K = c_weight.shape[1]
    chi = P.sigmoid(params[P.A_STAR])
    dchi = chi * (1.0 - chi)
    d2chi = dchi * (1.0 - 2.0 * chi)
    # Bernoulli term, as a function of a = logit chi:
    # chi ln(chi/p) + (1-chi) ln((1-chi)/(1-p)); d/dchi = ln(chi/p) - ln((1-chi)/(1-p)) = a - logit p
    lp = math.log(prob_star) - math.log(1.0 - prob_star)
    a = params[P.A_STAR]
    # ln chi = -softplus(-a), ln(1 - chi) = -softplus(a), written to stay finite for any a
    ln_chi = -(max(-a, 0.0) + math.log1p(math.exp(-abs(a))))
    ln_1mchi = -(max(a, 0.0) + math.log1p(math.exp(-abs(a))))
    kl_b = chi * (ln_chi - math.log(prob_star)) + (1.0 - chi) * (ln_1mchi - math.log(1.0 - prob_star))
    total = kl_b
    g_chi = a - lp  # dKL/dchi, accumulated
    kl_k = np.empty(K)
    rk = np.empty(K)
    gk = np.empty((K, 8))
    gt = np.zeros(10)
    ht = np.zeros((10, 10))
    for t in range(2):
        wt = (chi if t == 0 else 1.0 - chi) + DELTA
        sgn = 1.0 if t == 0 else -1.0
        base = P.R_MEAN[t]
        mu = params[base]
        lv = params[base + 1]
        s2 = math.exp(lv)
        m0 = r_prior[t, 0]
        v0 = r_prior[t, 1]
        kl_r = 0.5 * ((s2 + (mu - m0) ** 2) / v0 - 1.0 - lv + math.log(v0))
        m = params[base + 2:base + 6]
        lvc = params[base + 6:base + 10]
        colour_kl_terms(m, lvc, c_weight[t], c_mean[t], c_prec[t], c_logdet[t], kl_k)
        hmax = -np.inf
        for k in range(K):
            if c_weight[t, k] > 0.0:
                hk = math.log(c_weight[t, k]) - kl_k[k]
                if hk > hmax:
                    hmax = hk
        ssum = 0.0
        for k in range(K):
            if c_weight[t, k] > 0.0:
                rk[k] = math.exp(math.log(c_weight[t, k]) - kl_k[k] - hmax)
            else:
                rk[k] = 0.0
            ssum += rk[k]
        for k in range(K):
            rk[k] /= ssum
        kl_c = -(hmax + math.log(ssum))
        kl_t = kl_r + kl_c
        total += wt * kl_t
        if mode == 0:
            continue
        # gradient of kl_t in the 10 brightness params
        for i in range(10):
            gt[i] = 0.0
        gt[0] = (mu - m0) / v0
        gt[1] = 0.5 * (s2 / v0 - 1.0)
        for k in range(K):
            for i in range(4):
                acc = 0.0
                for j in range(4):
                    acc += c_prec[t, k, i, j] * (m[j] - c_mean[t, k, j])
                gk[k, i] = acc
                gk[k, 4 + i] = 0.5 * (c_prec[t, k, i, i] * math.exp(lvc[i]) - 1.0)
            for i in range(8):
                gt[2 + i] += rk[k] * gk[k, i]
        for i in range(10):
            grad[base + i] += weight * (wt * gt[i])
        g_chi += sgn * kl_t
        if mode < 2:
            continue
        for i in range(10):
            for j in range(10):
                ht[i, j] = 0.0
        ht[0, 0] = 1.0 / v0
        ht[1, 1] = 0.5 * s2 / v0
        for k in range(K):
            if rk[k] == 0.0:
                continue
            for i in range(4):
                for j in range(4):
                    ht[2 + i, 2 + j] += rk[k] * c_prec[t, k, i, j]
                ht[6 + i, 6 + i] += rk[k] * 0.5 * c_prec[t, k, i, i] * math.exp(lvc[i])
            for i in range(8):
                for j in range(8):
                    ht[2 + i, 2 + j] -= rk[k] * gk[k, i] * gk[k, j]
        for i in range(8):
            for j in range(8):
                ht[2 + i, 2 + j] += gt[2 + i] * gt[2 + j]
        for i in range(10):
            for j in range(10):
                hess[base + i, base + j] += weight * (wt * ht[i, j])
            # cross terms with a: d/da (wt gt) = sgn dchi gt
            hess[P.A_STAR, base + i] += weight * (sgn * dchi * gt[i])
            hess[base + i, P.A_STAR] += weight * (sgn * dchi * gt[i])
    # shape prior: -(1 - chi) ln p_shape
    nlp = 0.0
    idx = (P.E_DEV, P.E_AXIS, P.E_SCALE)
    for i in range(3):
        mean = shape_prior[i, 0]
        var = shape_prior[i, 1]
        d = params[idx[i]] - mean
        nlp += 0.5 * (d * d / var + math.log(2.0 * math.pi * var))
    total += (1.0 - chi + DELTA) * nlp
    if mode == 0:
        return total
    g_chi -= nlp
    for i in range(3):
        d = params[idx[i]] - shape_prior[i, 0]
        gi = d / shape_prior[i, 1]
        grad[idx[i]] += weight * ((1.0 - chi + DELTA) * gi)
        if mode == 2:
            hess[idx[i], idx[i]] += weight * ((1.0 - chi + DELTA) / shape_prior[i, 1])
            hess[P.A_STAR, idx[i]] -= weight * (dchi * gi)
            hess[idx[i], P.A_STAR] -= weight * (dchi * gi)
    grad[P.A_STAR] += weight * (g_chi * dchi)
    if mode == 2:
        # d2/da2 of K(chi(a)): K'' dchi^2 + K' d2chi; the Bernoulli part has K'' = 1/(chi(1-chi)),
        # so K'' dchi^2 = dchi (no division: finite when chi rounds to 0 or 1)
        hess[P.A_STAR, P.A_STAR] += weight * (dchi + g_chi * d2chi)
    return total
