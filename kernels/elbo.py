"""Expected log likelihood of one source's active pixels, with exact gradient and Hessian.

Model (Regier et al., AoAS 2019, Sec. 2-3).  For pixel p of an image in band b with
``iota`` electrons per nmgy, the expected count is F = iota (sky + sum_s G_s), G_s the light
of source s (nmgy per pixel; :mod:`kernels.light`).  The per-pixel term, with the delta method
for E[ln F] (AoAS 2019, eq. 13), is

    l = x (ln E[F] - Var[F] / (2 E[F]^2)) - E[F]          (- ln x! omitted: a constant)

E[F] = iota (bgE + E[G]), Var[F] = iota^2 (bgV + Var[G]), where bgE (sky plus the
neighbours' expected light) and bgV (the neighbours' variance) are held fixed.

Derivatives are taken first in 11 "pixel variables"
w = (chi, M1_star, M1_gal, M2_star, M2_gal, u_east, u_north, frac_dev, e_axis, e_angle, e_scale)
(M1 = E[f_b], M2 = E[f_b^2]), summed over the pixels of each band (:func:`accumulate_pixel`),
then mapped to the 27 unconstrained parameters of :mod:`kernels.params` by the chain rule
(grad = J^T g_w; hess = J^T H_w J + sum_i g_w[i] d2 w_i; :func:`chain_to_params`).
Inputs are the named tuples of :mod:`kernels.inputs`.
"""
import math
from collections import namedtuple

import numpy as np

from . import params as P
from .config import inline_kernel, kernel
from .inputs import IMG_BAND, PIX_BGE, PIX_BGV, PIX_COUNTS, PIX_IMG, PIX_IOTA, PIX_X, PIX_Y
from .light import (N_XI, expected_light, galaxy_profile_derivs, make_work, mix_galaxy, prepare_source,
                    proto_profile, star_profile, star_profile_derivs)

# pixel-variable indices
W_CHI, W_M1S, W_M1G, W_M2S, W_M2G = 0, 1, 2, 3, 4
W_XI = 5  # u_east, u_north, frac_dev, e_axis, e_angle, e_scale follow
N_W = 11

#: per-pixel work arrays of :func:`accumulate_pixel`: derivatives of E[G], E[G^2], Var[G] in w (N_W,)
PixelWork = namedtuple("PixelWork", ["d_eg", "d_eg2", "d_vg"])


@inline_kernel
def pixel_loglik(x, iota, bge, bgv, eg, vg):
    """E[F], Var[F] (electrons, electrons^2) and the pixel's term l (module docstring)."""
    E = iota * (bge + eg)
    V = iota * iota * (bgv + vg)
    return E, V, x * (math.log(E) - V / (2.0 * E * E)) - E


@inline_kernel
def accumulate_pixel(mode, src, band, x, iota, E, V, EG, gs, gg, Gs, HGs, Gg, HGg, work, gw, hw):
    """Add one pixel's derivatives in the pixel variables w to its band's sums.

    Parameters
    ----------
    mode : int
        1 gradient (gw); 2 gradient and the upper triangle of the Hessian (hw).
    src : kernels.light.SourceModel
    band : int
    x, iota, E, V, EG : float
        Counts, electrons per nmgy, E[F], Var[F] and E[G] at the pixel.
    gs, gg : float
        Star and galaxy profiles; Gs, HGs, Gg, HGg their derivatives in xi (N_XI,), (N_XI, N_XI).
    work : PixelWork
    gw : ndarray (N_W,), hw : ndarray (N_W, N_W)
        The band's sums, added to.

    With l(E, V) the pixel term, dl = lE dE + lV dV and
    d2l = lEE dE dE^T + lEV (dE dV^T + dV dE^T) + lE d2E + lV d2V (lVV = 0), E and V as
    functions of w through E[G], E[G^2] (E[F] = iota (bgE + E[G]), Var[F] = iota^2 (bgV + Var[G])).
    """
    chi = src.chi
    M1s = src.m1[0, band]
    M1g = src.m1[1, band]
    M2s = src.m2[0, band]
    M2g = src.m2[1, band]
    dEG = work.d_eg
    dEG2 = work.d_eg2
    dVG = work.d_vg
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
    for a in range(N_W):
        gw[a] += cE * dEG[a] + cV * dVG[a]
    if mode < 2:
        return
    lEE = -x * Einv * Einv - 3.0 * x * V * Einv ** 4
    lEV = x * Einv ** 3
    cEE = lEE * iota * iota
    cEV = lEV * iota ** 3
    # outer-product terms: lEE dE dE^T + lEV (dE dV^T + dV dE^T) + lV d2V, where
    # d2V = iota^2 (d2EG2 - 2 dEG dEG^T - 2 EG d2EG): its dEG dEG^T part joins the outer products
    cOut = cEE - 2.0 * cV
    for a in range(N_W):
        for b in range(a, N_W):
            hw[a, b] += cOut * dEG[a] * dEG[b] + cEV * (dEG[a] * dVG[b] + dVG[a] * dEG[b])
    # second-derivative terms: (cE - 2 EG cV) d2EG + cV d2EG2 (upper triangle)
    c1 = cE - 2.0 * EG * cV
    c2 = cV
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


@kernel
def chain_to_params(src, gw, hw, band, grad, hess):
    """Add J^T gw to grad and J^T hw J + sum_i gw_i d2 w_i to hess for one band (hw symmetric).

    J = dw / d params (N_W x 27): chi = sigmoid(a_star), M1 and M2 through
    :func:`kernels.light.flux_moments` (whose d2 ln M is diagonal, equal to the log-variance
    entries of d ln M), u and the shape parameters directly, frac_dev = sigmoid(e_dev).
    """
    chi = src.chi
    frac_dev = src.frac_dev
    m1, m2, dln1, dln2 = src.m1, src.m2, src.dln1, src.dln2
    # Jacobian rows dw_i / dparams, built densely (11 x 27): cheap next to the pixel loop
    Jm = np.zeros((N_W, P.N_PARAMS))
    dchi = chi * (1.0 - chi)
    Jm[W_CHI, P.A_STAR] = dchi
    ddev = frac_dev * (1.0 - frac_dev)
    for t in range(2):
        base = P.R_MEAN[t]
        for k in range(10):
            Jm[W_M1S + t, base + k] = m1[t, band] * dln1[t, band, k]
            Jm[W_M2S + t, base + k] = m2[t, band] * dln2[t, band, k]
    Jm[W_XI + 0, P.U_EAST] = 1.0
    Jm[W_XI + 1, P.U_NORTH] = 1.0
    Jm[W_XI + 2, P.E_DEV] = ddev
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
    hess[P.E_DEV, P.E_DEV] += gw[W_XI + 2] * ddev * (1.0 - 2.0 * frac_dev)
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
def chain_grad(src, gw, band, grad):
    """Add J^T gw to grad for one band (the gradient part of :func:`chain_to_params`)."""
    chi = src.chi
    frac_dev = src.frac_dev
    grad[P.A_STAR] += gw[W_CHI] * chi * (1.0 - chi)
    for t in range(2):
        base = P.R_MEAN[t]
        for k in range(10):
            grad[base + k] += (gw[W_M1S + t] * src.m1[t, band] * src.dln1[t, band, k]
                               + gw[W_M2S + t] * src.m2[t, band] * src.dln2[t, band, k])
    grad[P.U_EAST] += gw[W_XI]
    grad[P.U_NORTH] += gw[W_XI + 1]
    grad[P.E_DEV] += gw[W_XI + 2] * frac_dev * (1.0 - frac_dev)
    grad[P.E_AXIS] += gw[W_XI + 3]
    grad[P.E_ANGLE] += gw[W_XI + 4]
    grad[P.E_SCALE] += gw[W_XI + 5]


@kernel
def source_loglik(params, problem, mode, grad, hess):
    """Expected log likelihood of one source's active pixels; gradient and Hessian on request.

    Parameters
    ----------
    params : ndarray (27,) float64
        Unconstrained parameters of the target source (:mod:`kernels.params`).
    problem : kernels.inputs.Problem
        Its pixels (with the neighbours' light in PIX_BGE, PIX_BGV), images, PSFs, prototypes.
    mode : int
        0 value only; 1 value and gradient; 2 value, gradient and Hessian.
    grad : ndarray (27,) float64, output (mode >= 1), overwritten
    hess : ndarray (27, 27) float64, output (mode == 2), overwritten, symmetric

    Returns
    -------
    float
        sum over pixels of x (ln E[F] - Var[F] / (2 E[F]^2)) - E[F] (AoAS 2019, eq. 13,
        without the constant -ln x!).  -inf if some E[F] <= 0.
    """
    pix, img, psf = problem.pix, problem.img, problem.psf
    src = prepare_source(params, problem)
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
    work = make_work()
    pwork = PixelWork(np.empty(N_W), np.empty(N_W), np.empty(N_W))
    Gs = np.zeros(N_XI)
    HGs = np.zeros((N_XI, N_XI))
    gp = np.zeros(2)  # per prototype (exp, dev): profile and derivatives in xi (frac_dev entry 0)
    Gp = np.zeros((2, N_XI))
    HGp = np.zeros((2, N_XI, N_XI))
    Gg = np.zeros(N_XI)
    HGg = np.zeros((N_XI, N_XI))
    total = 0.0
    for ip in range(pix.shape[0]):
        n = int(pix[ip, PIX_IMG])
        band = int(img[n, IMG_BAND])
        px = pix[ip, PIX_X]
        py = pix[ip, PIX_Y]
        if mode == 0:
            gs = star_profile(px, py, n, src, psf)
            gexp = proto_profile(px, py, n, 0, src)
            gdev = proto_profile(px, py, n, 1, src)
            gg = src.frac_dev * gdev + (1.0 - src.frac_dev) * gexp
        else:
            gs = star_profile_derivs(px, py, n, src, problem, mode, work, Gs, HGs)
            galaxy_profile_derivs(px, py, n, src, problem, mode, work, gp, Gp, HGp)
            gg = mix_galaxy(src.frac_dev, gp, Gp, HGp, mode, Gg, HGg)
        EG, VG = expected_light(src, band, gs, gg)
        x = pix[ip, PIX_COUNTS]
        iota = pix[ip, PIX_IOTA]
        E, V, l = pixel_loglik(x, iota, pix[ip, PIX_BGE], pix[ip, PIX_BGV], EG, VG)
        if E <= 0.0:
            return -np.inf
        total += l
        if mode == 0:
            continue
        band_used[band] = True
        accumulate_pixel(mode, src, band, x, iota, E, V, EG, gs, gg, Gs, HGs, Gg, HGg, pwork, gw_band[band],
                         hw_band[band])
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
            chain_to_params(src, gw_band[band], hw, band, grad, hess)
        else:
            chain_grad(src, gw_band[band], band, grad)
    if mode == 2:
        for q in range(P.N_PARAMS):
            for r in range(q):
                hess[q, r] = hess[r, q]
    return total
