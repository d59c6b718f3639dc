"""Posterior covariance of the point-like parameters by linear response (LRVB).

Mean-field VI underestimates posterior variances: q's variance of ln r reflects the
curvature in every band, while the colours could absorb the other bands' information
(Regier et al. AoAS 2019 report 20% of true r fluxes within 1 sd).  Linear-response
variational Bayes (Giordano, Broderick & Jordan, NeurIPS 2015, eq. 8; JMLR 2018) corrects
this: the covariance of the variational means is (-H)^-1, H the ELBO Hessian in those
means at the optimum.  We apply it to the block of the probable type: position, mean of
ln r and colour means, and (galaxies) the four shape parameters; the log-variance
parameters are held at their optimum.
"""
import numpy as np

from . import params as P


def lrvb_indices(t):
    """Indices of the parameters whose covariance is reported for type t (0 star, 1 galaxy)."""
    idx = [P.U_EAST, P.U_NORTH, P.R_MEAN[t]] + list(range(P.C_MEAN[t], P.C_MEAN[t] + 4))
    if t == P.GAL:
        idx += [P.E_DEV, P.E_AXIS, P.E_ANGLE, P.E_SCALE]
    return np.array(idx, dtype=np.int64)


def lrvb_covariance(hess, t):
    """Covariance of the parameters ``lrvb_indices(t)`` from the ELBO Hessian.

    Parameters
    ----------
    hess : ndarray (27, 27)
        ELBO Hessian at the optimum (unconstrained parameters).
    t : int
        The probable type.

    Returns
    -------
    idx : ndarray (m,) int
    cov : ndarray (m, m)
        (-H[idx, idx])^-1; NaN-filled if that block is not negative definite.
    """
    idx = lrvb_indices(t)
    A = -hess[np.ix_(idx, idx)]
    try:
        L = np.linalg.cholesky(A)
    except np.linalg.LinAlgError:
        return idx, np.full((len(idx), len(idx)), np.nan)
    Linv = np.linalg.inv(L)
    return idx, Linv.T @ Linv


def log_flux_sd(theta, hess, t):
    """Posterior sd of ln f_b for each band (5,) under type t, by linear response.

    var(ln f_b) = a^T C a with a the coefficients of (ln r, colours) in ln f_b
    (:data:`kernels.params.COLOUR_TO_BAND`) and C their LRVB covariance.
    """
    idx, cov = lrvb_covariance(hess, t)
    sub = cov[2:7, 2:7]
    A = np.hstack([np.ones((P.N_BANDS, 1)), P.COLOUR_TO_BAND])
    return np.sqrt(np.einsum("bi,ij,bj->b", A, sub, A))
