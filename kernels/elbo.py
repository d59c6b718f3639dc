"""Expected log likelihood of one source's active pixels, with exact gradient and Hessian.

Model (Regier et al., AoAS 2019, Sec. 2-3).  For pixel p of an image in band b with
``iota`` electrons per nmgy, the expected count is F = iota (sky + sum_s G_s), where
G_s is the light of source s (nmgy per pixel):

    G_s = f_b(s) * g_t(p)          t = star (prob chi) or galaxy (prob 1 - chi)

with g_star the PSF (a Gaussian mixture) at the source position and g_gal the galaxy
mixture (Sec. 2.2) convolved with the PSF: every (prototype component, PSF component)
pair is one bivariate normal.  Under q, ln f_b ~ Normal(mean_b, var_b) given the type,
with mean_b = mu_r + A_b . m_c and var_b = s_r^2 + A_b^2 . v_c (``params.COLOUR_TO_BAND``),
so E[f_b] = exp(mean_b + var_b / 2), E[f_b^2] = exp(2 mean_b + 2 var_b).

The per-pixel term, with the delta method for E[ln F] (AoAS 2019, eq. 13), is

    l = x (ln E[F] - Var[F] / (2 E[F]^2)) - E[F]          (- ln x! omitted: a constant)

E[F] = iota (bgE + E[G]), Var[F] = iota^2 (bgV + Var[G]), where bgE (sky plus the
neighbours' expected light) and bgV (the neighbours' variance) are held fixed.

Derivatives are taken first in 11 "pixel variables"
w = (chi, M1_star, M1_gal, M2_star, M2_gal, u_east, u_north, theta, e_axis, e_angle, e_scale)
(M1 = E[f_b], M2 = E[f_b^2]), summed over the pixels of each band, then mapped to the
27 unconstrained parameters of :mod:`kernels.params` by the chain rule
(grad = J^T g_w; hess = J^T H_w J + sum_i g_w[i] d2 w_i).

Data layout (all float64, C-contiguous):

* ``pix`` (n_pix, 7): columns PIX_IMG (image index), PIX_X, PIX_Y (0-based pixel centre,
  x = column, y = row), PIX_COUNTS (electrons), PIX_IOTA (electrons per nmgy),
  PIX_BGE (nmgy), PIX_BGV (nmgy^2).
* ``img`` (n_img, 7): IMG_BAND, IMG_AX, IMG_AY (pixel position of the source's anchor),
  IMG_J00, IMG_J01, IMG_J10, IMG_J11 (d(x, y) / d(east, north), pixels per arcsec).
* ``psf`` (n_img, K, 6): weight, mean_x, mean_y (pixels), cov_xx, cov_xy, cov_yy (pixels^2).
* ``proto`` (2, J, 2): galaxy prototypes (0 = exponential, 1 = de Vaucouleurs); [.., 0] the
  amplitude, [.., 1] the variance in units of the squared half-light radius; zero amplitude pads.
"""
import math

import numpy as np

from . import params as P
from .bvn import N_PRE, bvn_log_derivs_pre, bvn_precompute, bvn_quad
from .config import kernel

PIX_IMG, PIX_X, PIX_Y, PIX_COUNTS, PIX_IOTA, PIX_BGE, PIX_BGV = range(7)
N_PIX_COLS = 7
IMG_BAND, IMG_AX, IMG_AY, IMG_J00, IMG_J01, IMG_J10, IMG_J11 = range(7)
N_IMG_COLS = 7

#: components whose quadratic form exceeds this are skipped (density below e^-18 of peak)
Q_SKIP = 36.0

# pixel-variable indices
W_CHI, W_M1S, W_M1G, W_M2S, W_M2G = 0, 1, 2, 3, 4
W_XI = 5  # u_east, u_north, theta, e_axis, e_angle, e_scale follow
N_W = 11
N_XI = 6

_COLOUR_TO_BAND = P.COLOUR_TO_BAND.copy()


@kernel
def flux_moments(theta, m1, m2, dln1, dln2):
    """E[f_b] and E[f_b^2] per type and band, with d ln(.) / d(brightness params).

    Parameters
    ----------
    theta : ndarray (27,)
        Unconstrained source parameters.
    m1, m2 : ndarray (2, 5), output
        E[f_b | t] (nmgy) and E[f_b^2 | t] (nmgy^2), t = star, galaxy.
    dln1, dln2 : ndarray (2, 5, 10), output
        Gradients of ln m1 and ln m2 in the type's 10 brightness parameters
        (R_MEAN, R_LOGVAR, 4 colour means, 4 colour log variances). Their Hessians
        are diagonal and equal to the gradient entries of the log-variance
        parameters times (1/2 for ln m1: 1, for ln m2: 1) -- see :func:`_chain_to_theta`.
    """
    for t in range(2):
        base = P.R_MEAN[t]
        mu_r = theta[base]
        s2 = math.exp(theta[base + 1])
        for b in range(5):
            mean = mu_r
            var = s2
            for j in range(4):
                a = _COLOUR_TO_BAND[b, j]
                mean += a * theta[base + 2 + j]
                var += a * a * math.exp(theta[base + 6 + j])
            m1[t, b] = math.exp(mean + 0.5 * var)
            m2[t, b] = math.exp(2.0 * mean + 2.0 * var)
            dln1[t, b, 0] = 1.0
            dln2[t, b, 0] = 2.0
            dln1[t, b, 1] = 0.5 * s2
            dln2[t, b, 1] = 2.0 * s2
            for j in range(4):
                a = _COLOUR_TO_BAND[b, j]
                vj = math.exp(theta[base + 6 + j])
                dln1[t, b, 2 + j] = a
                dln2[t, b, 2 + j] = 2.0 * a
                dln1[t, b, 6 + j] = 0.5 * a * a * vj
                dln2[t, b, 6 + j] = 2.0 * a * a * vj


@kernel
def shape_cov_derivs(theta, jac, s, ds, d2s):
    """Galaxy covariance in pixels for unit prototype variance, and its shape derivatives.

    Sigma_world = re^2 R(phi) diag(1, q^2) R(phi)^T in (east, north) arcsec^2 with the
    major axis along (sin phi, cos phi) (position angle east of north), q = sigmoid(e_axis),
    re = exp(e_scale); Sigma_pix = J Sigma_world J^T.

    Parameters
    ----------
    theta : ndarray (27,)
    jac : ndarray (4,)
        J00, J01, J10, J11: d(x, y)/d(east, north), pixels per arcsec.
    s : ndarray (3,), output
        (Sigma_xx, Sigma_xy, Sigma_yy) in pixels^2.
    ds : ndarray (3, 3), output
        ds[i, k]: derivative of entry k in shape parameter i (0 e_axis, 1 e_angle, 2 e_scale).
    d2s : ndarray (3, 3, 3), output
        d2s[i, j, k]: second derivatives, symmetric in (i, j).
    """
    q = 1.0 / (1.0 + math.exp(-theta[P.E_AXIS]))
    sq = q * q
    sp = 2.0 * sq * (1.0 - q)  # d q^2 / d e_axis
    spp = 2.0 * sq * (1.0 - q) * (2.0 - 3.0 * q)
    phi = theta[P.E_ANGLE]
    r2 = math.exp(2.0 * theta[P.E_SCALE])
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
def _setup_images(theta, img, psf, proto, star_mean, star_cov, gal_mean, gal_cov, gal_amp, img_ds, img_d2s,
                  star_pre, gal_pre):
    """Per-image means, covariances (and their precomputed constants, :func:`kernels.bvn.bvn_precompute`)
    and shape derivatives of every bivariate normal."""
    n_img = img.shape[0]
    K = psf.shape[1]
    J = proto.shape[1]
    s = np.empty(3)
    ds = np.empty((3, 3))
    d2s = np.empty((3, 3, 3))
    ue = theta[P.U_EAST]
    un = theta[P.U_NORTH]
    for n in range(n_img):
        j00, j01, j10, j11 = img[n, IMG_J00], img[n, IMG_J01], img[n, IMG_J10], img[n, IMG_J11]
        cx = img[n, IMG_AX] + j00 * ue + j01 * un
        cy = img[n, IMG_AY] + j10 * ue + j11 * un
        shape_cov_derivs(theta, img[n, IMG_J00:IMG_J11 + 1], s, ds, d2s)
        for i in range(3):
            for c in range(3):
                img_ds[n, i, c] = ds[i, c]
                for i2 in range(3):
                    img_d2s[n, i, i2, c] = d2s[i, i2, c]
        for k in range(K):
            star_mean[n, k, 0] = cx + psf[n, k, 1]
            star_mean[n, k, 1] = cy + psf[n, k, 2]
            star_cov[n, k, 0] = psf[n, k, 3]
            star_cov[n, k, 1] = psf[n, k, 4]
            star_cov[n, k, 2] = psf[n, k, 5]
            bvn_precompute(psf[n, k, 3], psf[n, k, 4], psf[n, k, 5], star_pre[n, k])
            for p in range(2):
                for j in range(J):
                    nu = proto[p, j, 1]
                    gal_amp[n, p, j, k] = proto[p, j, 0] * psf[n, k, 0]
                    gal_mean[n, p, j, k, 0] = cx + psf[n, k, 1]
                    gal_mean[n, p, j, k, 1] = cy + psf[n, k, 2]
                    for c in range(3):
                        gal_cov[n, p, j, k, c] = nu * s[c] + psf[n, k, 3 + c]
                    bvn_precompute(gal_cov[n, p, j, k, 0], gal_cov[n, p, j, k, 1], gal_cov[n, p, j, k, 2],
                                   gal_pre[n, p, j, k])


@kernel
def _prepare(theta, img, psf, proto):
    """Everything per source and image that does not depend on the pixel (see :func:`_setup_images`,
    :func:`flux_moments`); returns the arrays as a tuple, and chi = q(star), th = theta_dev."""
    n_img = img.shape[0]
    K = psf.shape[1]
    J = proto.shape[1]
    star_mean = np.empty((n_img, K, 2))
    star_cov = np.empty((n_img, K, 3))
    gal_mean = np.empty((n_img, 2, J, K, 2))
    gal_cov = np.empty((n_img, 2, J, K, 3))
    gal_amp = np.empty((n_img, 2, J, K))
    img_ds = np.empty((n_img, 3, 3))
    img_d2s = np.empty((n_img, 3, 3, 3))
    star_pre = np.empty((n_img, K, N_PRE))
    gal_pre = np.empty((n_img, 2, J, K, N_PRE))
    _setup_images(theta, img, psf, proto, star_mean, star_cov, gal_mean, gal_cov, gal_amp, img_ds, img_d2s,
                  star_pre, gal_pre)
    m1 = np.empty((2, 5))
    m2 = np.empty((2, 5))
    dln1 = np.empty((2, 5, 10))
    dln2 = np.empty((2, 5, 10))
    flux_moments(theta, m1, m2, dln1, dln2)
    chi = 1.0 / (1.0 + math.exp(-theta[P.A_STAR]))
    th = 1.0 / (1.0 + math.exp(-theta[P.E_DEV]))
    return (star_mean, star_cov, gal_mean, gal_cov, gal_amp, img_ds, img_d2s, star_pre, gal_pre, m1, m2, dln1,
            dln2, chi, th)


@kernel
def _chain_to_theta(theta, m1, m2, dln1, dln2, gw, hw, band, grad, hess):
    """Add J^T gw and J^T hw J + sum_i gw_i d2 w_i for one band into grad and hess."""
    # Jacobian rows: dw_i / dtheta as (index list, values); built densely (11 x 27), cheap.
    Jm = np.zeros((N_W, P.N_PARAMS))
    chi = 1.0 / (1.0 + math.exp(-theta[P.A_STAR]))
    dchi = chi * (1.0 - chi)
    Jm[W_CHI, P.A_STAR] = dchi
    th = 1.0 / (1.0 + math.exp(-theta[P.E_DEV]))
    dth = th * (1.0 - th)
    for t in range(2):
        base = P.R_MEAN[t]
        for k in range(10):
            Jm[W_M1S + t, base + k] = m1[t, band] * dln1[t, band, k]
            Jm[W_M2S + t, base + k] = m2[t, band] * dln2[t, band, k]
    Jm[W_XI + 0, P.U_EAST] = 1.0
    Jm[W_XI + 1, P.U_NORTH] = 1.0
    Jm[W_XI + 2, P.E_DEV] = dth
    Jm[W_XI + 3, P.E_AXIS] = 1.0
    Jm[W_XI + 4, P.E_ANGLE] = 1.0
    Jm[W_XI + 5, P.E_SCALE] = 1.0
    # grad += Jm^T gw ; hess += Jm^T hw Jm  (exploiting sparsity lightly)
    T = np.zeros((N_W, P.N_PARAMS))
    for i in range(N_W):
        for k in range(N_W):
            if hw[i, k] != 0.0:
                for q in range(P.N_PARAMS):
                    T[i, q] += hw[i, k] * Jm[k, q]
    for i in range(N_W):
        if gw[i] != 0.0:
            for q in range(P.N_PARAMS):
                grad[q] += Jm[i, q] * gw[i]
    for i in range(N_W):
        for p in range(P.N_PARAMS):
            if Jm[i, p] != 0.0:
                jip = Jm[i, p]
                for q in range(P.N_PARAMS):
                    hess[p, q] += jip * T[i, q]
    # second-derivative terms of the transforms
    hess[P.A_STAR, P.A_STAR] += gw[W_CHI] * dchi * (1.0 - 2.0 * chi)
    hess[P.E_DEV, P.E_DEV] += gw[W_XI + 2] * dth * (1.0 - 2.0 * th)
    for t in range(2):
        base = P.R_MEAN[t]
        g1 = gw[W_M1S + t] * m1[t, band]
        g2 = gw[W_M2S + t] * m2[t, band]
        for k in range(10):
            for l in range(10):
                hess[base + k, base + l] += g1 * dln1[t, band, k] * dln1[t, band, l] + g2 * dln2[t, band, k] * dln2[t, band, l]
        # diagonal second derivatives of ln M in the log-variance parameters equal their first
        for k in (1, 6, 7, 8, 9):
            hess[base + k, base + k] += g1 * dln1[t, band, k] + g2 * dln2[t, band, k]


@kernel
def source_loglik(theta, pix, img, psf, proto, mode, grad, hess):
    """Expected log likelihood of one source's active pixels; gradient and Hessian on request.

    Parameters
    ----------
    theta : ndarray (27,) float64
        Unconstrained parameters of the target source (:mod:`kernels.params`).
    pix, img, psf, proto : ndarray
        Pixel table, per-image table, PSF mixtures, galaxy prototypes (module docstring).
    mode : int
        0 value only; 1 value and gradient; 2 value, gradient and Hessian.
    grad : ndarray (27,) float64, output (mode >= 1)
    hess : ndarray (27, 27) float64, output (mode == 2), symmetric.

    Returns
    -------
    float
        sum over pixels of x (ln E[F] - Var[F] / (2 E[F]^2)) - E[F] (AoAS 2019, eq. 13,
        without the constant -ln x!).  -inf if some E[F] <= 0.
    """
    n_pix = pix.shape[0]
    K = psf.shape[1]
    J = proto.shape[1]
    (star_mean, star_cov, gal_mean, gal_cov, gal_amp, img_ds, img_d2s, star_pre, gal_pre, m1, m2, dln1, dln2, chi,
     th) = _prepare(theta, img, psf, proto)

    if mode >= 1:
        for q in range(P.N_PARAMS):
            grad[q] = 0.0
    if mode == 2:
        for q in range(P.N_PARAMS):
            for r in range(P.N_PARAMS):
                hess[q, r] = 0.0
    gw_band = np.zeros((5, N_W))
    hw_band = np.zeros((5, N_W, N_W))
    band_used = np.zeros(5, dtype=np.bool_)

    g5 = np.empty(5)
    h5 = np.empty((5, 5))
    Gs = np.zeros(N_XI)
    HGs = np.zeros((N_XI, N_XI))
    Gp = np.zeros((2, N_XI))  # per prototype: derivatives in (ue, un, -, axis, angle, scale)
    HGp = np.zeros((2, N_XI, N_XI))
    Gg = np.zeros(N_XI)
    HGg = np.zeros((N_XI, N_XI))
    Gm = np.zeros(2)
    Gc = np.zeros(3)
    Hmm = np.zeros((2, 2))
    Hmc = np.zeros((2, 3))
    Hcc = np.zeros((3, 3))
    Jm = np.zeros((2, 2))
    dEG = np.empty(N_W)
    dEG2 = np.empty(N_W)
    dVG = np.empty(N_W)
    gp = np.zeros(2)
    total = 0.0
    for ip in range(n_pix):
        n = int(pix[ip, PIX_IMG])
        band = int(img[n, IMG_BAND])
        px = pix[ip, PIX_X]
        py = pix[ip, PIX_Y]
        j00, j01, j10, j11 = img[n, IMG_J00], img[n, IMG_J01], img[n, IMG_J10], img[n, IMG_J11]
        # ---- star profile
        gs = 0.0
        if mode >= 1:
            for a in range(N_XI):
                Gs[a] = 0.0
                if mode == 2:
                    for b in range(N_XI):
                        HGs[a, b] = 0.0
        for k in range(K):
            dx = px - star_mean[n, k, 0]
            dy = py - star_mean[n, k, 1]
            if mode == 0:
                gs += psf[n, k, 0] * math.exp(star_pre[n, k, 3] - 0.5 * bvn_quad(dx, dy, star_pre[n, k]))
                continue
            f = bvn_log_derivs_pre(dx, dy, star_pre[n, k], g5, h5)
            val = psf[n, k, 0] * math.exp(f)
            gs += val
            gu0 = j00 * g5[0] + j10 * g5[1]
            gu1 = j01 * g5[0] + j11 * g5[1]
            Gs[0] += val * gu0
            Gs[1] += val * gu1
            if mode == 2:
                # J^T h J for the mean block
                a00 = j00 * (h5[0, 0] * j00 + h5[0, 1] * j10) + j10 * (h5[1, 0] * j00 + h5[1, 1] * j10)
                a01 = j00 * (h5[0, 0] * j01 + h5[0, 1] * j11) + j10 * (h5[1, 0] * j01 + h5[1, 1] * j11)
                a11 = j01 * (h5[0, 0] * j01 + h5[0, 1] * j11) + j11 * (h5[1, 0] * j01 + h5[1, 1] * j11)
                HGs[0, 0] += val * (gu0 * gu0 + a00)
                HGs[0, 1] += val * (gu0 * gu1 + a01)
                HGs[1, 1] += val * (gu1 * gu1 + a11)
        if mode == 2:
            HGs[1, 0] = HGs[0, 1]
        # ---- galaxy profiles
        Jm[0, 0] = j00
        Jm[0, 1] = j01
        Jm[1, 0] = j10
        Jm[1, 1] = j11
        for p in range(2):
            gp[p] = 0.0
            if mode >= 1:
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
                    dx = px - gal_mean[n, p, j, k, 0]
                    dy = py - gal_mean[n, p, j, k, 1]
                    qf = bvn_quad(dx, dy, gal_pre[n, p, j, k])
                    if qf > Q_SKIP:
                        continue
                    if mode == 0:
                        gp[p] += amp * math.exp(gal_pre[n, p, j, k, 3] - 0.5 * qf)
                        continue
                    f = bvn_log_derivs_pre(dx, dy, gal_pre[n, p, j, k], g5, h5)
                    val = amp * math.exp(f)
                    gp[p] += val
                    # accumulate in the bivariate normal's own coordinates (mean, covariance / nu);
                    # the chain rule to xi is applied once per pixel below
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
            if mode == 0:
                continue
            # chain rule: mean -> (ue, un) through J; covariance -> (axis, angle, scale) through ds, d2s
            Gp[p, 0] = j00 * Gm[0] + j10 * Gm[1]
            Gp[p, 1] = j01 * Gm[0] + j11 * Gm[1]
            Gp[p, 2] = 0.0
            for i in range(3):
                Gp[p, 3 + i] = img_ds[n, i, 0] * Gc[0] + img_ds[n, i, 1] * Gc[1] + img_ds[n, i, 2] * Gc[2]
            if mode == 2:
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
                                acc += Jm[mu, a] * Hmc[mu, c] * img_ds[n, i, c]
                        HGp[p, a, 3 + i] = acc
                for i in range(3):
                    for i2 in range(i, 3):
                        acc = 0.0
                        for c1 in range(3):
                            acc += Gc[c1] * img_d2s[n, i, i2, c1]
                            for c2 in range(3):
                                acc += img_ds[n, i, c1] * Hcc[c1, c2] * img_ds[n, i2, c2]
                        HGp[p, 3 + i, 3 + i2] = acc
        gg = th * gp[1] + (1.0 - th) * gp[0]
        # ---- expected light and its variance
        M1s = m1[0, band]
        M1g = m1[1, band]
        M2s = m2[0, band]
        M2g = m2[1, band]
        EG = chi * M1s * gs + (1.0 - chi) * M1g * gg
        EG2 = chi * M2s * gs * gs + (1.0 - chi) * M2g * gg * gg
        VG = EG2 - EG * EG
        iota = pix[ip, PIX_IOTA]
        x = pix[ip, PIX_COUNTS]
        E = iota * (pix[ip, PIX_BGE] + EG)
        V = iota * iota * (pix[ip, PIX_BGV] + VG)
        if E <= 0.0:
            return -np.inf
        total += x * (math.log(E) - V / (2.0 * E * E)) - E
        if mode == 0:
            continue
        band_used[band] = True
        # galaxy mixture derivatives in xi (index 2 = theta)
        for a in range(N_XI):
            Gg[a] = th * Gp[1, a] + (1.0 - th) * Gp[0, a]
        Gg[2] = gp[1] - gp[0]
        if mode == 2:
            for a in range(N_XI):
                for b in range(a, N_XI):
                    HGg[a, b] = th * HGp[1, a, b] + (1.0 - th) * HGp[0, a, b]
            for a in range(N_XI):
                for b in range(a):
                    HGg[a, b] = HGg[b, a]
            for a in range(N_XI):
                HGg[a, 2] = Gp[1, a] - Gp[0, a]
                HGg[2, a] = HGg[a, 2]
            HGg[2, 2] = 0.0
        # first derivatives of E[G], E[G^2], Var[G] in w
        for a in range(N_W):
            dEG[a] = 0.0
            dEG2[a] = 0.0
        dEG[W_CHI] = M1s * gs - M1g * gg
        dEG[W_M1S] = chi * gs
        dEG[W_M1G] = (1.0 - chi) * gg
        dEG2[W_CHI] = M2s * gs * gs - M2g * gg * gg
        dEG2[W_M2S] = chi * gs * gs
        dEG2[W_M2G] = (1.0 - chi) * gg * gg
        for a in range(N_XI):
            dEG[W_XI + a] = chi * M1s * Gs[a] + (1.0 - chi) * M1g * Gg[a]
            dEG2[W_XI + a] = 2.0 * (chi * M2s * gs * Gs[a] + (1.0 - chi) * M2g * gg * Gg[a])
        for a in range(N_W):
            dVG[a] = dEG2[a] - 2.0 * EG * dEG[a]
        Einv = 1.0 / E
        lE = x * Einv + x * V * Einv * Einv * Einv - 1.0
        lV = -0.5 * x * Einv * Einv
        cE = lE * iota
        cV = lV * iota * iota
        gw = gw_band[band]
        for a in range(N_W):
            gw[a] += cE * dEG[a] + cV * dVG[a]
        if mode < 2:
            continue
        lEE = -x * Einv * Einv - 3.0 * x * V * Einv ** 4
        lEV = x * Einv ** 3
        cEE = lEE * iota * iota
        cEV = lEV * iota ** 3
        hw = hw_band[band]
        # outer-product terms: lEE dE dE^T + lEV (dE dV^T + dV dE^T) + lV d2V, where
        # d2V = iota^2 (d2EG2 - 2 dEG dEG^T - 2 EG d2EG): its dEG dEG^T part joins the outer products
        cOut = cEE - 2.0 * cV
        for a in range(N_W):
            for b in range(a, N_W):
                hw[a, b] += cOut * dEG[a] * dEG[b] + cEV * (dEG[a] * dVG[b] + dVG[a] * dEG[b])
        # second-derivative terms: (cE - 2 EG cV) d2EG + cV d2EG2
        c1 = cE - 2.0 * EG * cV
        c2 = cV
        # d2EG and d2EG2 entries (upper triangle)
        hw[W_CHI, W_M1S] += c1 * gs
        hw[W_CHI, W_M1G] += -c1 * gg
        hw[W_CHI, W_M2S] += c2 * gs * gs
        hw[W_CHI, W_M2G] += -c2 * gg * gg
        for a in range(N_XI):
            hw[W_CHI, W_XI + a] += c1 * (M1s * Gs[a] - M1g * Gg[a]) + c2 * 2.0 * (M2s * gs * Gs[a] - M2g * gg * Gg[a])
            hw[W_M1S, W_XI + a] += c1 * chi * Gs[a]
            hw[W_M1G, W_XI + a] += c1 * (1.0 - chi) * Gg[a]
            hw[W_M2S, W_XI + a] += c2 * chi * 2.0 * gs * Gs[a]
            hw[W_M2G, W_XI + a] += c2 * (1.0 - chi) * 2.0 * gg * Gg[a]
            for b in range(a, N_XI):
                d2eg = chi * M1s * HGs[a, b] + (1.0 - chi) * M1g * HGg[a, b]
                d2eg2 = 2.0 * (chi * M2s * (Gs[a] * Gs[b] + gs * HGs[a, b])
                               + (1.0 - chi) * M2g * (Gg[a] * Gg[b] + gg * HGg[a, b]))
                hw[W_XI + a, W_XI + b] += c1 * d2eg + c2 * d2eg2
    if mode == 0:
        return total
    for band in range(5):
        if not band_used[band]:
            continue
        hw = hw_band[band]
        for a in range(N_W):
            for b in range(a):
                hw[a, b] = hw[b, a]
        if mode == 2:
            _chain_to_theta(theta, m1, m2, dln1, dln2, gw_band[band], hw, band, grad, hess)
        else:
            _chain_grad(theta, m1, m2, dln1, gw_band[band], band, grad, dln2)
    if mode == 2:
        for q in range(P.N_PARAMS):
            for r in range(q):
                hess[q, r] = hess[r, q]
    return total


@kernel
def _chain_grad(theta, m1, m2, dln1, gw, band, grad, dln2):
    chi = 1.0 / (1.0 + math.exp(-theta[P.A_STAR]))
    th = 1.0 / (1.0 + math.exp(-theta[P.E_DEV]))
    grad[P.A_STAR] += gw[W_CHI] * chi * (1.0 - chi)
    for t in range(2):
        base = P.R_MEAN[t]
        for k in range(10):
            grad[base + k] += gw[W_M1S + t] * m1[t, band] * dln1[t, band, k] + gw[W_M2S + t] * m2[t, band] * dln2[t, band, k]
    grad[P.U_EAST] += gw[W_XI]
    grad[P.U_NORTH] += gw[W_XI + 1]
    grad[P.E_DEV] += gw[W_XI + 2] * th * (1.0 - th)
    grad[P.E_AXIS] += gw[W_XI + 3]
    grad[P.E_ANGLE] += gw[W_XI + 4]
    grad[P.E_SCALE] += gw[W_XI + 5]


@kernel
def source_light(theta, pix, img, psf, proto, eg, vg):
    """Expected light E[G] (nmgy) and its variance Var[G] (nmgy^2) of one source on pixels.

    Same inputs as :func:`source_loglik` (only the PIX_IMG, PIX_X, PIX_Y columns of
    ``pix`` are read); ``eg`` and ``vg`` (n_pix,) are outputs.  Used to build the
    neighbours' background and model images.
    """
    n_pix = pix.shape[0]
    K = psf.shape[1]
    J = proto.shape[1]
    (star_mean, star_cov, gal_mean, gal_cov, gal_amp, img_ds, img_d2s, star_pre, gal_pre, m1, m2, dln1, dln2, chi,
     th) = _prepare(theta, img, psf, proto)
    for ip in range(n_pix):
        n = int(pix[ip, PIX_IMG])
        band = int(img[n, IMG_BAND])
        px = pix[ip, PIX_X]
        py = pix[ip, PIX_Y]
        gs = 0.0
        for k in range(K):
            gs += psf[n, k, 0] * math.exp(star_pre[n, k, 3] - 0.5 * bvn_quad(px - star_mean[n, k, 0],
                                                                            py - star_mean[n, k, 1], star_pre[n, k]))
        g0 = 0.0
        g1 = 0.0
        for p in range(2):
            acc = 0.0
            for j in range(J):
                for k in range(K):
                    amp = gal_amp[n, p, j, k]
                    if amp == 0.0:
                        continue
                    dx = px - gal_mean[n, p, j, k, 0]
                    dy = py - gal_mean[n, p, j, k, 1]
                    qf = bvn_quad(dx, dy, gal_pre[n, p, j, k])
                    if qf > Q_SKIP:
                        continue
                    acc += amp * math.exp(gal_pre[n, p, j, k, 3] - 0.5 * qf)
            if p == 0:
                g0 = acc
            else:
                g1 = acc
        gg = th * g1 + (1.0 - th) * g0
        e = chi * m1[0, band] * gs + (1.0 - chi) * m1[1, band] * gg
        e2 = chi * m2[0, band] * gs * gs + (1.0 - chi) * m2[1, band] * gg * gg
        eg[ip] = e
        vg[ip] = e2 - e * e
