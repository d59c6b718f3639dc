"""The light of one source on its pixels: star and galaxy profiles, their derivatives, E[G] and Var[G].

Model (Regier et al., AoAS 2019, Sec. 2).  In image n the source sits at
c_n = a_n + J_n u (pixels; a_n the anchor, J_n = d(x, y)/d(east, north), u = (u_east, u_north)
arcsec).  PSF component k (weight w_k, offset mu_k, covariance S_k) makes one bivariate normal
of mean c_n + mu_k, for the star and for every galaxy component alike:

    g_star(p) = sum_k w_k N(p; c_n + mu_k, S_k)
    g_gal(p)  = frac_dev g_dev(p) + (1 - frac_dev) g_exp(p)
    g_proto(p) = sum_j sum_k alpha_j w_k N(p; c_n + mu_k, nu_j Sigma_n + S_k)

with (alpha_j, nu_j) the prototype's amplitudes and variances (:mod:`kernels.profiles`) and
Sigma_n = J_n W J_n^T, W = re^2 R(phi) diag(1, q^2) R(phi)^T (:func:`shape_cov_derivs`).
Galaxy components whose quadratic form exceeds :data:`Q_SKIP` at a pixel are left out.

Under q the flux of band b given the type t is lognormal, ln f_b ~ Normal(mean_b, var_b) with
mean_b = mu_r + A_b . m_c and var_b = s_r^2 + A_b^2 . v_c (A = ``params.COLOUR_TO_BAND``), so
M1 = E[f_b] = exp(mean_b + var_b / 2), M2 = E[f_b^2] = exp(2 mean_b + 2 var_b)
(:func:`flux_moments`), and with chi = q(star)

    E[G]   = chi M1_star g_star + (1 - chi) M1_gal g_gal
    E[G^2] = chi M2_star g_star^2 + (1 - chi) M2_gal g_gal^2,   Var[G] = E[G^2] - E[G]^2.

Derivatives of the profiles are taken in the six "shape variables"
xi = (u_east, u_north, frac_dev, e_axis, e_angle, e_scale) (:data:`N_XI`); the per-pixel
likelihood terms and the chain rule to the 27 parameters are in :mod:`kernels.elbo`.
Inputs are the named tuples of :mod:`kernels.inputs`.
"""
import math
from collections import namedtuple

import numpy as np

from . import params as P
from .bvn import N_PRE, PRE_C0, bvn_log_derivs_pre, bvn_precompute, bvn_quad
from .config import inline_kernel, kernel
from .inputs import IMG_AX, IMG_AY, IMG_BAND, IMG_J00, IMG_J01, IMG_J10, IMG_J11, PIX_IMG, PIX_X, PIX_Y

#: galaxy components whose quadratic form exceeds this are skipped (density below e^-18 of peak)
Q_SKIP = 36.0
#: shape variables xi: u_east, u_north, frac_dev, e_axis, e_angle, e_scale
N_XI = 6
XI_DEV = 2

_COLOUR_TO_BAND = P.COLOUR_TO_BAND.copy()

#: what :func:`prepare_source` computes once per source and image (independent of the pixel):
#: comp_mean (n_img, K, 2) the mean of every component k (source position + PSF offset, pixels);
#: star_pre (n_img, K, N_PRE) and gal_pre (n_img, 2, J, K, N_PRE) the bivariate normals'
#: constants (:func:`kernels.bvn.bvn_precompute`); gal_amp (n_img, 2, J, K) alpha_j w_k;
#: shape_d1 (n_img, 3, 3), shape_d2 (n_img, 3, 3, 3) the derivatives of Sigma_n in
#: (e_axis, e_angle, e_scale) (:func:`shape_cov_derivs`); m1, m2 (2, 5) and dln1, dln2 (2, 5, 10)
#: the flux moments (:func:`flux_moments`); chi = q(star); frac_dev.
SourceModel = namedtuple("SourceModel", ["comp_mean", "star_pre", "gal_amp", "gal_pre", "shape_d1", "shape_d2",
                                         "m1", "m2", "dln1", "dln2", "chi", "frac_dev"])


@kernel
def flux_moments(params, m1, m2, dln1, dln2):
    """E[f_b] and E[f_b^2] per type and band, with d ln(.) / d(brightness params).

    Parameters
    ----------
    params : ndarray (27,)
        Unconstrained source parameters (:mod:`kernels.params`).
    m1, m2 : ndarray (2, 5), output
        E[f_b | t] (nmgy) and E[f_b^2 | t] (nmgy^2), t = star, galaxy (module docstring).
    dln1, dln2 : ndarray (2, 5, 10), output
        Gradients of ln m1 and ln m2 in the type's 10 brightness parameters
        (R_MEAN, R_LOGVAR, 4 colour means, 4 colour log variances).  Their Hessians are
        diagonal, with entries equal to the gradient entries of the log-variance parameters
        (see :func:`kernels.elbo.chain_to_params`).
    """
    for t in range(2):
        base = P.R_MEAN[t]
        mu_r = params[base]
        s2 = math.exp(params[base + 1])
        for b in range(5):
            mean = mu_r
            var = s2
            for j in range(4):
                a = _COLOUR_TO_BAND[b, j]
                mean += a * params[base + 2 + j]
                var += a * a * math.exp(params[base + 6 + j])
            m1[t, b] = math.exp(mean + 0.5 * var)
            m2[t, b] = math.exp(2.0 * mean + 2.0 * var)
            dln1[t, b, 0] = 1.0
            dln2[t, b, 0] = 2.0
            dln1[t, b, 1] = 0.5 * s2
            dln2[t, b, 1] = 2.0 * s2
            for j in range(4):
                a = _COLOUR_TO_BAND[b, j]
                vj = math.exp(params[base + 6 + j])
                dln1[t, b, 2 + j] = a
                dln2[t, b, 2 + j] = 2.0 * a
                dln1[t, b, 6 + j] = 0.5 * a * a * vj
                dln2[t, b, 6 + j] = 2.0 * a * a * vj


@kernel
def shape_cov_derivs(params, jac, s, ds, d2s):
    """Galaxy covariance in pixels for unit prototype variance, and its shape derivatives.

    Sigma_world = re^2 R(phi) diag(1, q^2) R(phi)^T in (east, north) arcsec^2 with the
    major axis along (sin phi, cos phi) (position angle east of north), q = sigmoid(e_axis),
    re = exp(e_scale); Sigma_pix = J Sigma_world J^T (:mod:`kernels.profiles`).

    Parameters
    ----------
    params : ndarray (27,)
    jac : ndarray (4,)
        J00, J01, J10, J11: d(x, y)/d(east, north), pixels per arcsec.
    s : ndarray (3,), output
        (Sigma_xx, Sigma_xy, Sigma_yy) in pixels^2.
    ds : ndarray (3, 3), output
        ds[i, k]: derivative of entry k in shape parameter i (0 e_axis, 1 e_angle, 2 e_scale).
    d2s : ndarray (3, 3, 3), output
        d2s[i, j, k]: second derivatives, symmetric in (i, j).
    """
    q = P.sigmoid(params[P.E_AXIS])
    sq = q * q
    sp = 2.0 * sq * (1.0 - q)  # d q^2 / d e_axis
    spp = 2.0 * sq * (1.0 - q) * (2.0 - 3.0 * q)
    phi = params[P.E_ANGLE]
    r2 = math.exp(2.0 * params[P.E_SCALE])
    sn = math.sin(phi)
    cs = math.cos(phi)
    s2p = math.sin(2.0 * phi)
    c2p = math.cos(2.0 * phi)
    w = np.empty(3)
    dw = np.empty((3, 3))
    d2w = np.empty((3, 3, 3))
    w[0] = r2 * (sn * sn + sq * cs * cs)
    w[1] = r2 * (1.0 - sq) * sn * cs
    w[2] = r2 * (cs * cs + sq * sn * sn)
    dss0 = r2 * cs * cs
    dss1 = -r2 * sn * cs
    dss2 = r2 * sn * sn
    dw[0, 0] = sp * dss0
    dw[0, 1] = sp * dss1
    dw[0, 2] = sp * dss2
    dw[1, 0] = r2 * (1.0 - sq) * s2p
    dw[1, 1] = r2 * (1.0 - sq) * c2p
    dw[1, 2] = -r2 * (1.0 - sq) * s2p
    for k in range(3):
        dw[2, k] = 2.0 * w[k]
    d2w[0, 0, 0] = spp * dss0
    d2w[0, 0, 1] = spp * dss1
    d2w[0, 0, 2] = spp * dss2
    d2w[1, 1, 0] = 2.0 * r2 * (1.0 - sq) * c2p
    d2w[1, 1, 1] = -2.0 * r2 * (1.0 - sq) * s2p
    d2w[1, 1, 2] = -2.0 * r2 * (1.0 - sq) * c2p
    d2w[0, 1, 0] = -sp * r2 * s2p
    d2w[0, 1, 1] = -sp * r2 * c2p
    d2w[0, 1, 2] = sp * r2 * s2p
    for k in range(3):
        d2w[1, 0, k] = d2w[0, 1, k]
        d2w[2, 2, k] = 4.0 * w[k]
        d2w[0, 2, k] = 2.0 * dw[0, k]
        d2w[2, 0, k] = d2w[0, 2, k]
        d2w[1, 2, k] = 2.0 * dw[1, k]
        d2w[2, 1, k] = d2w[1, 2, k]
    j00, j01, j10, j11 = jac[0], jac[1], jac[2], jac[3]
    # linear map (EE, EN, NN) -> (xx, xy, yy)
    L = np.empty((3, 3))
    L[0, 0] = j00 * j00
    L[0, 1] = 2.0 * j00 * j01
    L[0, 2] = j01 * j01
    L[1, 0] = j00 * j10
    L[1, 1] = j00 * j11 + j01 * j10
    L[1, 2] = j01 * j11
    L[2, 0] = j10 * j10
    L[2, 1] = 2.0 * j10 * j11
    L[2, 2] = j11 * j11
    for k in range(3):
        s[k] = L[k, 0] * w[0] + L[k, 1] * w[1] + L[k, 2] * w[2]
        for i in range(3):
            ds[i, k] = L[k, 0] * dw[i, 0] + L[k, 1] * dw[i, 1] + L[k, 2] * dw[i, 2]
            for j in range(3):
                d2s[i, j, k] = L[k, 0] * d2w[i, j, 0] + L[k, 1] * d2w[i, j, 1] + L[k, 2] * d2w[i, j, 2]


@kernel
def prepare_source(params, problem):
    """Everything per source and image that does not depend on the pixel: a :data:`SourceModel`."""
    img, psf, proto = problem.img, problem.psf, problem.proto
    n_img = img.shape[0]
    K = psf.shape[1]
    J = proto.shape[1]
    comp_mean = np.empty((n_img, K, 2))
    star_pre = np.empty((n_img, K, N_PRE))
    gal_amp = np.empty((n_img, 2, J, K))
    gal_pre = np.empty((n_img, 2, J, K, N_PRE))
    shape_d1 = np.empty((n_img, 3, 3))
    shape_d2 = np.empty((n_img, 3, 3, 3))
    s = np.empty(3)
    ue = params[P.U_EAST]
    un = params[P.U_NORTH]
    for n in range(n_img):
        j00, j01, j10, j11 = img[n, IMG_J00], img[n, IMG_J01], img[n, IMG_J10], img[n, IMG_J11]
        cx = img[n, IMG_AX] + j00 * ue + j01 * un
        cy = img[n, IMG_AY] + j10 * ue + j11 * un
        shape_cov_derivs(params, img[n, IMG_J00:IMG_J11 + 1], s, shape_d1[n], shape_d2[n])
        for k in range(K):
            comp_mean[n, k, 0] = cx + psf[n, k, 1]
            comp_mean[n, k, 1] = cy + psf[n, k, 2]
            bvn_precompute(psf[n, k, 3], psf[n, k, 4], psf[n, k, 5], star_pre[n, k])
            for p in range(2):
                for j in range(J):
                    nu = proto[p, j, 1]
                    gal_amp[n, p, j, k] = proto[p, j, 0] * psf[n, k, 0]
                    bvn_precompute(nu * s[0] + psf[n, k, 3], nu * s[1] + psf[n, k, 4], nu * s[2] + psf[n, k, 5],
                                   gal_pre[n, p, j, k])
    m1 = np.empty((2, 5))
    m2 = np.empty((2, 5))
    dln1 = np.empty((2, 5, 10))
    dln2 = np.empty((2, 5, 10))
    flux_moments(params, m1, m2, dln1, dln2)
    return SourceModel(comp_mean, star_pre, gal_amp, gal_pre, shape_d1, shape_d2, m1, m2, dln1, dln2,
                       P.sigmoid(params[P.A_STAR]), P.sigmoid(params[P.E_DEV]))


# ------------------------------------------------------------------ profiles, value only
@inline_kernel
def star_profile(px, py, n, src, psf):
    """g_star at pixel (px, py) of image n (per unit flux)."""
    gs = 0.0
    for k in range(psf.shape[1]):
        gs += psf[n, k, 0] * math.exp(src.star_pre[n, k, PRE_C0] - 0.5 * bvn_quad(
            px - src.comp_mean[n, k, 0], py - src.comp_mean[n, k, 1], src.star_pre[n, k]))
    return gs


@inline_kernel
def proto_profile(px, py, n, p, src):
    """g_proto of prototype p (0 exponential, 1 de Vaucouleurs) at pixel (px, py) of image n."""
    acc = 0.0
    amp_np = src.gal_amp[n, p]
    for j in range(amp_np.shape[0]):
        for k in range(amp_np.shape[1]):
            amp = amp_np[j, k]
            if amp == 0.0:
                continue
            qf = bvn_quad(px - src.comp_mean[n, k, 0], py - src.comp_mean[n, k, 1], src.gal_pre[n, p, j, k])
            if qf > Q_SKIP:
                continue
            acc += amp * math.exp(src.gal_pre[n, p, j, k, PRE_C0] - 0.5 * qf)
    return acc


@inline_kernel
def expected_light(src, band, gs, gg):
    """E[G] and Var[G] (nmgy, nmgy^2) from the star and galaxy profiles at a pixel of ``band``."""
    chi = src.chi
    e = chi * src.m1[0, band] * gs + (1.0 - chi) * src.m1[1, band] * gg
    e2 = chi * src.m2[0, band] * gs * gs + (1.0 - chi) * src.m2[1, band] * gg * gg
    return e, e2 - e * e


# ------------------------------------------------------------------ profiles with derivatives
#: work arrays of the derivative profiles, allocated once per kernel call (:func:`make_work`):
#: g5 (5,), h5 (5, 5) a bivariate normal's log-density derivatives; gm (2,), gc (3,), hmm (2, 2),
#: hmc (2, 3), hcc (3, 3) a prototype's sums in the normals' own coordinates (mean, covariance / nu);
#: jm (2, 2) the image's J = d(x, y)/d(east, north)
ProfileWork = namedtuple("ProfileWork", ["g5", "h5", "gm", "gc", "hmm", "hmc", "hcc", "jm"])


@inline_kernel
def make_work():
    """A fresh :data:`ProfileWork`."""
    return ProfileWork(np.empty(5), np.empty((5, 5)), np.zeros(2), np.zeros(3), np.zeros((2, 2)),
                       np.zeros((2, 3)), np.zeros((3, 3)), np.zeros((2, 2)))


@inline_kernel
def star_profile_derivs(px, py, n, src, problem, mode, work, G, HG):
    """g_star at pixel (px, py) of image n, with derivatives in xi (mode 1: G; mode 2: G and HG).

    Only the position entries (u_east, u_north) are nonzero; G (N_XI,) and HG (N_XI, N_XI) are
    overwritten.  d/du = J^T d/dm for a component mean m (:mod:`kernels.bvn`).
    """
    img, psf = problem.img, problem.psf
    j00, j01, j10, j11 = img[n, IMG_J00], img[n, IMG_J01], img[n, IMG_J10], img[n, IMG_J11]
    g5, h5 = work.g5, work.h5
    gs = 0.0
    for a in range(N_XI):
        G[a] = 0.0
        if mode == 2:
            for b in range(N_XI):
                HG[a, b] = 0.0
    for k in range(psf.shape[1]):
        f = bvn_log_derivs_pre(px - src.comp_mean[n, k, 0], py - src.comp_mean[n, k, 1], src.star_pre[n, k], g5, h5)
        val = psf[n, k, 0] * math.exp(f)
        gs += val
        gu0 = j00 * g5[0] + j10 * g5[1]
        gu1 = j01 * g5[0] + j11 * g5[1]
        G[0] += val * gu0
        G[1] += val * gu1
        if mode == 2:
            # J^T h J for the mean block
            a00 = j00 * (h5[0, 0] * j00 + h5[0, 1] * j10) + j10 * (h5[1, 0] * j00 + h5[1, 1] * j10)
            a01 = j00 * (h5[0, 0] * j01 + h5[0, 1] * j11) + j10 * (h5[1, 0] * j01 + h5[1, 1] * j11)
            a11 = j01 * (h5[0, 0] * j01 + h5[0, 1] * j11) + j11 * (h5[1, 0] * j01 + h5[1, 1] * j11)
            HG[0, 0] += val * (gu0 * gu0 + a00)
            HG[0, 1] += val * (gu0 * gu1 + a01)
            HG[1, 1] += val * (gu1 * gu1 + a11)
    if mode == 2:
        HG[1, 0] = HG[0, 1]
    return gs


@inline_kernel
def galaxy_profile_derivs(px, py, n, src, problem, mode, work, gp, Gp, HGp):
    """Both prototypes' profiles at pixel (px, py) of image n, with derivatives in xi.

    gp (2,) receives g_exp and g_dev; Gp (2, N_XI) their gradients and, for mode 2, HGp
    (2, N_XI, N_XI) the upper triangles of their Hessians (the frac_dev entries are 0).
    The sums run in each bivariate normal's own coordinates (mean m, covariance / nu_j); the
    chain rule to xi is applied once per pixel and prototype: m -> (u_east, u_north) through J_n,
    the covariance -> (e_axis, e_angle, e_scale) through ``shape_d1``, ``shape_d2``.
    (One helper for both prototypes: two inlined copies of a one-prototype helper ran 25% slower.)
    """
    img, psf, proto = problem.img, problem.psf, problem.proto
    comp_mean, gal_amp, gal_pre = src.comp_mean, src.gal_amp, src.gal_pre
    g5, h5, Gm, Gc, Hmm, Hmc, Hcc, Jm = work.g5, work.h5, work.gm, work.gc, work.hmm, work.hmc, work.hcc, work.jm
    ds = src.shape_d1[n]
    d2s = src.shape_d2[n]
    j00, j01, j10, j11 = img[n, IMG_J00], img[n, IMG_J01], img[n, IMG_J10], img[n, IMG_J11]
    Jm[0, 0] = j00
    Jm[0, 1] = j01
    Jm[1, 0] = j10
    Jm[1, 1] = j11
    J = proto.shape[1]
    K = psf.shape[1]
    for p in range(2):
        gp[p] = 0.0
        Gm[0] = 0.0
        Gm[1] = 0.0
        for c in range(3):
            Gc[c] = 0.0
        if mode == 2:
            for a in range(N_XI):
                for b in range(N_XI):
                    HGp[p, a, b] = 0.0
            for a in range(2):
                for b in range(2):
                    Hmm[a, b] = 0.0
                for c in range(3):
                    Hmc[a, c] = 0.0
            for a in range(3):
                for b in range(3):
                    Hcc[a, b] = 0.0
        for j in range(J):
            for k in range(K):
                amp = gal_amp[n, p, j, k]
                if amp == 0.0:
                    continue
                dx = px - comp_mean[n, k, 0]
                dy = py - comp_mean[n, k, 1]
                qf = bvn_quad(dx, dy, gal_pre[n, p, j, k])
                if qf > Q_SKIP:
                    continue
                f = bvn_log_derivs_pre(dx, dy, gal_pre[n, p, j, k], g5, h5)
                val = amp * math.exp(f)
                gp[p] += val
                nu = proto[p, j, 1]
                vn = val * nu
                Gm[0] += val * g5[0]
                Gm[1] += val * g5[1]
                for c in range(3):
                    Gc[c] += vn * g5[2 + c]
                if mode == 2:
                    vnn = vn * nu
                    Hmm[0, 0] += val * (g5[0] * g5[0] + h5[0, 0])
                    Hmm[0, 1] += val * (g5[0] * g5[1] + h5[0, 1])
                    Hmm[1, 1] += val * (g5[1] * g5[1] + h5[1, 1])
                    for mu in range(2):
                        for c in range(3):
                            Hmc[mu, c] += vn * (g5[mu] * g5[2 + c] + h5[mu, 2 + c])
                    for c1 in range(3):
                        for c2 in range(c1, 3):
                            Hcc[c1, c2] += vnn * (g5[2 + c1] * g5[2 + c2] + h5[2 + c1, 2 + c2])
        # chain rule: mean -> (ue, un) through J; covariance -> (axis, angle, scale) through ds, d2s
        Gp[p, 0] = j00 * Gm[0] + j10 * Gm[1]
        Gp[p, 1] = j01 * Gm[0] + j11 * Gm[1]
        Gp[p, XI_DEV] = 0.0
        for i in range(3):
            Gp[p, 3 + i] = ds[i, 0] * Gc[0] + ds[i, 1] * Gc[1] + ds[i, 2] * Gc[2]
        if mode == 2:
            # Hessian in xi (upper triangle) from the sums in (mean, covariance / nu); Jm[mu, a] = dm_mu / du_a
            Hmm[1, 0] = Hmm[0, 1]
            for c1 in range(3):
                for c2 in range(c1):
                    Hcc[c1, c2] = Hcc[c2, c1]
            for a in range(2):
                for b in range(a, 2):
                    acc = 0.0
                    for ua in range(2):
                        for ub in range(2):
                            acc += Jm[ua, a] * Hmm[ua, ub] * Jm[ub, b]
                    HGp[p, a, b] = acc
            for a in range(2):
                for i in range(3):
                    acc = 0.0
                    for mu in range(2):
                        for c in range(3):
                            acc += Jm[mu, a] * Hmc[mu, c] * ds[i, c]
                    HGp[p, a, 3 + i] = acc
            for i in range(3):
                for i2 in range(i, 3):
                    acc = 0.0
                    for c1 in range(3):
                        acc += Gc[c1] * d2s[i, i2, c1]
                        for c2 in range(3):
                            acc += ds[i, c1] * Hcc[c1, c2] * ds[i2, c2]
                    HGp[p, 3 + i, 3 + i2] = acc


@inline_kernel
def mix_galaxy(frac_dev, gp, Gp, HGp, mode, G, HG):
    """g_gal = frac_dev g_dev + (1 - frac_dev) g_exp and its derivatives in xi from the prototypes'.

    gp (2,), Gp (2, N_XI) and HGp (2, N_XI, N_XI) (upper triangles) hold the prototypes'
    profiles and derivatives (:func:`galaxy_profile_derivs`); G (N_XI,) and, for mode 2, the full
    symmetric HG are overwritten; d/d frac_dev = g_dev - g_exp.  Returns g_gal.
    """
    gexp = gp[0]
    gdev = gp[1]
    gg = frac_dev * gdev + (1.0 - frac_dev) * gexp
    for a in range(N_XI):
        G[a] = frac_dev * Gp[1, a] + (1.0 - frac_dev) * Gp[0, a]
    G[XI_DEV] = gdev - gexp
    if mode == 2:
        for a in range(N_XI):
            for b in range(a, N_XI):
                HG[a, b] = frac_dev * HGp[1, a, b] + (1.0 - frac_dev) * HGp[0, a, b]
        for a in range(N_XI):
            for b in range(a):
                HG[a, b] = HG[b, a]
        for a in range(N_XI):
            HG[a, XI_DEV] = Gp[1, a] - Gp[0, a]
            HG[XI_DEV, a] = HG[a, XI_DEV]
        HG[XI_DEV, XI_DEV] = 0.0
    return gg


# ------------------------------------------------------------------ the light on a pixel table
@kernel
def source_light(params, problem, eg, vg):
    """Expected light E[G] (nmgy) and its variance Var[G] (nmgy^2) of one source on its pixels.

    Parameters
    ----------
    params : ndarray (27,) float64
        Unconstrained parameters (:mod:`kernels.params`).
    problem : kernels.inputs.Problem
        Only the PIX_IMG, PIX_X, PIX_Y columns of ``problem.pix`` are read.
    eg, vg : ndarray (n_pix,) float64, outputs
        E[G] and Var[G] (module docstring).  Used to build the neighbours' background and
        model images.
    """
    pix, img = problem.pix, problem.img
    src = prepare_source(params, problem)
    for ip in range(pix.shape[0]):
        n = int(pix[ip, PIX_IMG])
        px = pix[ip, PIX_X]
        py = pix[ip, PIX_Y]
        gs = star_profile(px, py, n, src, problem.psf)
        gexp = proto_profile(px, py, n, 0, src)
        gdev = proto_profile(px, py, n, 1, src)
        gg = src.frac_dev * gdev + (1.0 - src.frac_dev) * gexp
        eg[ip], vg[ip] = expected_light(src, int(img[n, IMG_BAND]), gs, gg)
