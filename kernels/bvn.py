"""Bivariate normal densities with exact derivatives in their mean and covariance.

For a pixel at p = (x, y), mean m and covariance Sigma = [[a, b], [b, c]] (pixels, pixels^2),
with d = p - m, D = ac - b^2, P = Sigma^-1 and z = P d, the log density is

    f = -ln(2 pi) - 0.5 ln D - 0.5 d^T P d.

Its derivatives, with E_a = [[1,0],[0,0]], E_b = [[0,1],[1,0]], E_c = [[0,0],[0,1]] the
derivatives of Sigma in (a, b, c) (standard matrix calculus, e.g. Petersen & Pedersen,
"The Matrix Cookbook", eqs. 57, 61, 81), are

    df/dm          = z                       d2f/dm dm^T   = -P
    df/dS_s        = 0.5 (z^T E_s z - tr(P E_s))
    d2f/dm dS_s    = -P E_s z
    d2f/dS_s dS_t  = -(E_s z)^T P (E_t z) + 0.5 tr(P E_s P E_t)

Variables are ordered (m_x, m_y, a, b, c).  The density's own derivatives follow from
dN = N df and d2N = N (df df^T + d2f).
"""
import math

import numpy as np

from .config import kernel

LOG_2PI = math.log(2.0 * math.pi)


@kernel
def bvn_log_derivs(dx, dy, a, b, c, g, h):
    """Log density of a bivariate normal at offset (dx, dy) = p - m, with derivatives.

    Parameters
    ----------
    dx, dy : float
        Pixel position minus mean (pixels).
    a, b, c : float
        Covariance entries Sigma_xx, Sigma_xy, Sigma_yy (pixels^2); must be positive definite.
    g : ndarray (5,) float64, output
        df/d(m_x, m_y, a, b, c).
    h : ndarray (5, 5) float64, output
        Symmetric second derivatives in the same order.

    Returns
    -------
    float
        f = ln N(p; m, Sigma).  See the module docstring for the formulas.
    """
    pre = np.empty(N_PRE)
    bvn_precompute(a, b, c, pre)
    return bvn_log_derivs_pre(dx, dy, pre, g, h)


def bvn_logpdf_reference(dx, dy, a, b, c):
    """Slow NumPy reference of the log density (for tests)."""
    S = np.array([[a, b], [b, c]])
    d = np.array([dx, dy])
    return -LOG_2PI - 0.5 * np.log(np.linalg.det(S)) - 0.5 * d @ np.linalg.solve(S, d)


# Precomputed per-component constants for the pixel loops: the precision matrix, the
# normalizing constant and the traces tr(P E_s P E_t), which do not depend on the pixel.
PRE_P00, PRE_P01, PRE_P11, PRE_C0, PRE_TAA, PRE_TAB, PRE_TAC, PRE_TBB, PRE_TBC, PRE_TCC = range(10)
N_PRE = 10


@kernel
def bvn_precompute(a, b, c, out):
    """Fill ``out`` (N_PRE,) with the pixel-independent constants of N(.; m, [[a, b], [b, c]])."""
    det = a * c - b * b
    p00 = c / det
    p01 = -b / det
    p11 = a / det
    out[PRE_P00] = p00
    out[PRE_P01] = p01
    out[PRE_P11] = p11
    out[PRE_C0] = -LOG_2PI - 0.5 * math.log(det)
    out[PRE_TAA] = p00 * p00
    out[PRE_TAB] = 2.0 * p00 * p01
    out[PRE_TAC] = p01 * p01
    out[PRE_TBB] = 2.0 * (p01 * p01 + p00 * p11)
    out[PRE_TBC] = 2.0 * p01 * p11
    out[PRE_TCC] = p11 * p11


@kernel
def bvn_quad(dx, dy, pre):
    """d^T P d for offset (dx, dy) with precomputed constants ``pre``."""
    return pre[PRE_P00] * dx * dx + 2.0 * pre[PRE_P01] * dx * dy + pre[PRE_P11] * dy * dy


@kernel
def bvn_log_derivs_pre(dx, dy, pre, g, h):
    """:func:`bvn_log_derivs` with the pixel-independent constants precomputed (same outputs)."""
    p00 = pre[PRE_P00]
    p01 = pre[PRE_P01]
    p11 = pre[PRE_P11]
    z0 = p00 * dx + p01 * dy
    z1 = p01 * dx + p11 * dy
    f = pre[PRE_C0] - 0.5 * (dx * z0 + dy * z1)
    g[0] = z0
    g[1] = z1
    g[2] = 0.5 * (z0 * z0 - p00)
    g[3] = z0 * z1 - p01
    g[4] = 0.5 * (z1 * z1 - p11)
    h[0, 0] = -p00
    h[0, 1] = -p01
    h[1, 0] = -p01
    h[1, 1] = -p11
    # -P E_s z for s = a (E_a z = (z0, 0)), b ((z1, z0)), c ((0, z1))
    pz00 = p00 * z0
    pz10 = p01 * z0
    pz01 = p01 * z1
    pz11 = p11 * z1
    h[0, 2] = -pz00
    h[1, 2] = -pz10
    h[0, 3] = -(p00 * z1 + p01 * z0)
    h[1, 3] = -(p01 * z1 + p11 * z0)
    h[0, 4] = -pz01
    h[1, 4] = -pz11
    for i in range(2):
        for j in range(2, 5):
            h[j, i] = h[i, j]
    zz00 = z0 * z0
    zz01 = z0 * z1
    zz11 = z1 * z1
    qaa = zz00 * p00
    qab = z0 * (p00 * z1 + p01 * z0)
    qac = zz01 * p01
    qbb = z1 * (p00 * z1 + p01 * z0) + z0 * (p01 * z1 + p11 * z0)
    qbc = z1 * (p01 * z1 + p11 * z0)
    qcc = zz11 * p11
    h[2, 2] = -qaa + 0.5 * pre[PRE_TAA]
    h[2, 3] = -qab + 0.5 * pre[PRE_TAB]
    h[2, 4] = -qac + 0.5 * pre[PRE_TAC]
    h[3, 3] = -qbb + 0.5 * pre[PRE_TBB]
    h[3, 4] = -qbc + 0.5 * pre[PRE_TBC]
    h[4, 4] = -qcc + 0.5 * pre[PRE_TCC]
    h[3, 2] = h[2, 3]
    h[4, 2] = h[2, 4]
    h[4, 3] = h[3, 4]
    return f
