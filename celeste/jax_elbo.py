"""The one-source ELBO written with ``jax.numpy``: a derivative oracle and a speed baseline.

This is an independent implementation of the objective that :func:`kernels.newton.source_elbo`
computes with hand-coded derivatives.  It is written from the model as the kernel modules'
docstrings state it (:mod:`kernels.light`, :mod:`kernels.elbo`, :mod:`kernels.kl`,
:mod:`kernels.params`; Regier et al., AoAS 2019, Sec. 2-3) and differentiated by JAX.  Used by
``tests/test_jax_oracle.py`` and ``bench/kernels.py`` (speed ratio); it lives in the package so
that both import it like any module.  JAX is an optional extra (``pip install -e .[bench]``)
imported only by this module; float64 is switched on at import.
"""
import functools
import math

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from kernels import params as P
from kernels.kl import DELTA  # model constant: the unused-type regularization weight

jax.config.update("jax_enable_x64", True)

#: the numba kernel's galaxy-component cut (kernels.elbo.Q_SKIP): density below e^-18 of peak
Q_SKIP_DEFAULT = 36.0

_A = jnp.asarray(P.COLOUR_TO_BAND)


def _log_normal2(dx, dy, sxx, sxy, syy):
    """ln N((dx, dy); 0, [[sxx, sxy], [sxy, syy]]) and the quadratic form, broadcasting."""
    det = sxx * syy - sxy * sxy
    quad = (syy * dx * dx - 2.0 * sxy * dx * dy + sxx * dy * dy) / det
    return -math.log(2.0 * math.pi) - 0.5 * jnp.log(det) - 0.5 * quad, quad


def _world_shape(params):
    """Galaxy covariance (2, 2) in (east, north) arcsec^2 for unit prototype variance."""
    q = jax.nn.sigmoid(params[P.E_AXIS])
    phi = params[P.E_ANGLE]
    re2 = jnp.exp(2.0 * params[P.E_SCALE])
    major = jnp.stack([jnp.sin(phi), jnp.cos(phi)])
    minor = jnp.stack([jnp.cos(phi), -jnp.sin(phi)])
    W = re2 * (jnp.outer(major, major) + q * q * jnp.outer(minor, minor))
    return W


def _flux_moments(params):
    """(m1, m2), each (2, 5): E[f_b | t] and E[f_b^2 | t]."""
    m1 = []
    m2 = []
    for t in range(2):
        mu_r = params[P.R_MEAN[t]]
        v_r = jnp.exp(params[P.R_LOGVAR[t]])
        m = params[P.C_MEAN[t]:P.C_MEAN[t] + 4]
        v = jnp.exp(params[P.C_LOGVAR[t]:P.C_LOGVAR[t] + 4])
        mean = mu_r + _A @ m
        var = v_r + (_A * _A) @ v
        m1.append(jnp.exp(mean + 0.5 * var))
        m2.append(jnp.exp(2.0 * mean + 2.0 * var))
    return jnp.stack(m1), jnp.stack(m2)


def loglik_jax(params, pix, img, psf, proto, q_skip=Q_SKIP_DEFAULT):
    """Expected log likelihood of one source's active pixels (same inputs as
    :func:`kernels.elbo.source_loglik`, as JAX or NumPy float64 arrays).

    Returns
    -------
    jax scalar
        sum_p x (ln E[F] - Var[F] / (2 E[F]^2)) - E[F] (nats, without -ln x!).
    """
    pix, img, psf, proto = (jnp.asarray(a) for a in (pix, img, psf, proto))
    n_of = pix[:, 0].astype(jnp.int32)
    px = pix[:, 1]
    py = pix[:, 2]
    x = pix[:, 3]
    iota = pix[:, 4]
    bge = pix[:, 5]
    bgv = pix[:, 6]
    band_of_img = img[:, 0].astype(jnp.int32)
    Jm = img[:, 3:7].reshape(-1, 2, 2)  # (n_img, 2, 2): d(x, y) / d(east, north)
    u = params[P.U_EAST:P.U_NORTH + 1]
    centre = img[:, 1:3] + Jm @ u  # (n_img, 2)
    W = _world_shape(params)
    Spix = Jm @ W @ jnp.swapaxes(Jm, 1, 2)  # (n_img, 2, 2)

    # per image: component means and covariances
    w = psf[:, :, 0]  # (n_img, K)
    mx = centre[:, 0:1] + psf[:, :, 1]
    my = centre[:, 1:2] + psf[:, :, 2]
    # star
    dx = px[:, None] - mx[n_of]  # (n_pix, K)
    dy = py[:, None] - my[n_of]
    ls, _ = _log_normal2(dx, dy, psf[n_of, :, 3], psf[n_of, :, 4], psf[n_of, :, 5])
    g_star = jnp.sum(w[n_of] * jnp.exp(ls), axis=1)
    # galaxy: (n_img, 2, J, K) covariances
    alpha = proto[:, :, 0]  # (2, J)
    nu = proto[:, :, 1]
    cxx = nu[None, :, :, None] * Spix[:, None, None, None, 0, 0] + psf[:, None, None, :, 3]
    cxy = nu[None, :, :, None] * Spix[:, None, None, None, 0, 1] + psf[:, None, None, :, 4]
    cyy = nu[None, :, :, None] * Spix[:, None, None, None, 1, 1] + psf[:, None, None, :, 5]
    amp = alpha[None, :, :, None] * w[:, None, None, :]
    gdx = dx[:, None, None, :]
    gdy = dy[:, None, None, :]
    lg, quad = _log_normal2(gdx, gdy, cxx[n_of], cxy[n_of], cyy[n_of])
    dens = jnp.where(quad > q_skip, 0.0, amp[n_of] * jnp.exp(lg))  # (n_pix, 2, J, K)
    g_type = jnp.sum(dens, axis=(2, 3))  # (n_pix, 2): exp, dev
    frac_dev = jax.nn.sigmoid(params[P.E_DEV])
    g_gal = frac_dev * g_type[:, 1] + (1.0 - frac_dev) * g_type[:, 0]

    m1, m2 = _flux_moments(params)
    band = band_of_img[n_of]
    chi = jax.nn.sigmoid(params[P.A_STAR])
    EG = chi * m1[0, band] * g_star + (1.0 - chi) * m1[1, band] * g_gal
    EG2 = chi * m2[0, band] * g_star ** 2 + (1.0 - chi) * m2[1, band] * g_gal ** 2
    EF = iota * (bge + EG)
    VF = iota ** 2 * (bgv + EG2 - EG ** 2)
    return jnp.sum(x * (jnp.log(EF) - VF / (2.0 * EF ** 2)) - EF)


def kl_jax(params, prob_star, r_prior, c_weight, c_mean, c_prec, c_logdet, shape_prior, delta=DELTA):
    """KL(q || prior) of one source (prior arrays as :func:`kernels.kl.source_kl`); ``delta`` is
    the weight added to each type's brightness KL and to the shape term."""
    r_prior, c_weight, c_mean, c_prec, c_logdet, shape_prior = (
        jnp.asarray(a) for a in (r_prior, c_weight, c_mean, c_prec, c_logdet, shape_prior))
    chi = jax.nn.sigmoid(params[P.A_STAR])
    total = chi * jnp.log(chi / prob_star) + (1.0 - chi) * jnp.log((1.0 - chi) / (1.0 - prob_star))
    for t, wt in ((0, chi + delta), (1, 1.0 - chi + delta)):
        mu = params[P.R_MEAN[t]]
        lv = params[P.R_LOGVAR[t]]
        m0, v0 = r_prior[t, 0], r_prior[t, 1]
        kl_r = 0.5 * ((jnp.exp(lv) + (mu - m0) ** 2) / v0 - 1.0 - lv + jnp.log(v0))
        m = params[P.C_MEAN[t]:P.C_MEAN[t] + 4]
        lvc = params[P.C_LOGVAR[t]:P.C_LOGVAR[t] + 4]
        diff = c_mean[t] - m  # (K, 4)
        trace = jnp.einsum("kii,i->k", c_prec[t], jnp.exp(lvc))
        maha = jnp.einsum("ki,kij,kj->k", diff, c_prec[t], diff)
        kl_k = 0.5 * (trace + maha - 4.0 + c_logdet[t] - jnp.sum(lvc))
        wk = c_weight[t]
        logw = jnp.where(wk > 0.0, jnp.log(jnp.where(wk > 0.0, wk, 1.0)), -jnp.inf)
        kl_c = -logsumexp(logw - kl_k)
        total = total + wt * (kl_r + kl_c)
    e = jnp.stack([params[P.E_DEV], params[P.E_AXIS], params[P.E_SCALE]])
    mean, var = shape_prior[:, 0], shape_prior[:, 1]
    log_p = jnp.sum(-0.5 * (e - mean) ** 2 / var - 0.5 * jnp.log(2.0 * math.pi * var))
    return total - (1.0 - chi + delta) * log_p


def source_elbo_jax(params, pix, img, psf, proto, prob_star, r_prior, c_weight, c_mean, c_prec, c_logdet,
                    shape_prior, q_skip=Q_SKIP_DEFAULT):
    """ELBO = expected log likelihood - KL; arguments as :func:`kernels.newton.source_elbo` (no mode,
    no outputs).  Differentiate with ``jax.grad`` / ``jax.hessian`` in ``params``."""
    return (loglik_jax(params, pix, img, psf, proto, q_skip)
            - kl_jax(params, prob_star, r_prior, c_weight, c_mean, c_prec, c_logdet, shape_prior))


@functools.lru_cache(maxsize=None)
def compiled(q_skip=Q_SKIP_DEFAULT):
    """jit-compiled ``(value, gradient, Hessian)`` of :func:`source_elbo_jax` in params.

    Returns a function of the same arguments as :func:`source_elbo_jax` (without ``q_skip``)
    returning three JAX arrays: (), (27,), (27, 27).  Hessian by ``jax.hessian``
    (forward-over-reverse).
    """
    f = functools.partial(source_elbo_jax, q_skip=q_skip)

    def vgh(params, *args):
        return f(params, *args), jax.grad(f)(params, *args), jax.hessian(f)(params, *args)

    return jax.jit(vgh)


@functools.lru_cache(maxsize=None)
def compiled_hessian(q_skip=Q_SKIP_DEFAULT):
    """jit-compiled ``jax.hessian`` of :func:`source_elbo_jax` alone (same arguments)."""
    return jax.jit(jax.hessian(functools.partial(source_elbo_jax, q_skip=q_skip)))


@functools.lru_cache(maxsize=None)
def compiled_parts():
    """jit-compiled value, gradient and Hessian of the two halves of the ELBO separately.

    Returns a function ``parts(params, pix, img, psf, proto, prob_star, r_prior, c_weight, c_mean,
    c_prec, c_logdet, shape_prior, q_skip)`` returning ``((ll, ll_grad, ll_hess), (kl, kl_grad,
    kl_hess))``; ELBO = ll - kl.  ``q_skip`` is a traced argument, so the exact mixture
    (``inf``) and the kernel's cut (36) share one compilation per problem shape.
    """
    def parts(params, pix, img, psf, proto, prob_star, r_prior, c_weight, c_mean, c_prec, c_logdet, shape_prior,
              q_skip):
        prior = (prob_star, r_prior, c_weight, c_mean, c_prec, c_logdet, shape_prior)
        ll = (loglik_jax(params, pix, img, psf, proto, q_skip),
              jax.grad(loglik_jax)(params, pix, img, psf, proto, q_skip),
              jax.hessian(loglik_jax)(params, pix, img, psf, proto, q_skip))
        kl = (kl_jax(params, *prior), jax.grad(kl_jax)(params, *prior), jax.hessian(kl_jax)(params, *prior))
        return ll, kl

    return jax.jit(parts)

