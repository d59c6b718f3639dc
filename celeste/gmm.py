"""Gaussian mixtures with full covariances, fitted by EM, and the choice of K by BIC.

Used to fit the colour priors (:mod:`celeste.fitpriors`).  Deterministic: every EM
restart is seeded from (seed, K, restart).  References: Dempster, Laird & Rubin (1977);
Bishop, *Pattern Recognition and Machine Learning*, Sec. 9.2.2 (E and M steps);
Schwarz (1978) for the BIC.
"""
import math

import numpy as np

from celeste.errors import ConfigError, NumericalError


def gmm_log_density(x, weights, means, covs):
    """Per-point, per-component log of ``w_k N(x; mu_k, Sigma_k)``.

    Parameters
    ----------
    x : ndarray (N, D) float64
    weights : ndarray (K,) float64
    means : ndarray (K, D) float64
    covs : ndarray (K, D, D) float64, positive definite

    Returns
    -------
    ndarray (N, K) float64

    Raises
    ------
    numpy.linalg.LinAlgError
        If a covariance is not positive definite.
    """
    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    k = len(weights)
    out = np.empty((n, k))
    with np.errstate(divide="ignore"):
        logw = np.log(weights)
    for j in range(k):
        chol = np.linalg.cholesky(covs[j])
        z = np.linalg.solve(chol, (x - means[j]).T)  # (D, N)
        maha = np.sum(z * z, axis=0)
        logdet = 2.0 * np.sum(np.log(np.diag(chol)))
        out[:, j] = logw[j] - 0.5 * (maha + logdet + d * math.log(2.0 * math.pi))
    return out


def _logsumexp_rows(a):
    m = np.max(a, axis=1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return (m + np.log(np.sum(np.exp(a - m), axis=1, keepdims=True)))[:, 0]


def _m_step(x, resp, reg_covar):
    n, d = x.shape
    nk = resp.sum(axis=0) + 10.0 * np.finfo(np.float64).eps
    weights = nk / n
    means = (resp.T @ x) / nk[:, None]
    covs = np.empty((len(nk), d, d))
    for j in range(len(nk)):
        diff = x - means[j]
        c = (resp[:, j, None] * diff).T @ diff / nk[j]
        c = 0.5 * (c + c.T)
        c[np.diag_indices(d)] += reg_covar
        covs[j] = c
    return weights, means, covs


def _init_resp(x, k, rng):
    """k-means++ seeding followed by hard nearest-centre assignment."""
    n = x.shape[0]
    centres = [x[rng.integers(n)]]
    for _ in range(1, k):
        d2 = np.min(((x[:, None, :] - np.array(centres)[None]) ** 2).sum(-1), axis=1)
        tot = d2.sum()
        p = d2 / tot if tot > 0 else np.full(n, 1.0 / n)
        centres.append(x[rng.choice(n, p=p)])
    c = np.array(centres)
    lab = np.argmin(((x[:, None, :] - c[None]) ** 2).sum(-1), axis=1)
    resp = np.zeros((n, k))
    resp[np.arange(n), lab] = 1.0
    return resp


def fit_gmm(x, k, seed=0, n_init=4, max_iter=1000, tol=1e-10, reg_covar=1e-4, min_count=None):
    """Maximum-likelihood Gaussian mixture with full covariances, by EM.

    Deterministic: restart ``i`` is seeded with ``numpy.random.default_rng([seed, k, i])``;
    the restart with the highest log likelihood wins; components are returned
    sorted by decreasing weight.

    Parameters
    ----------
    x : ndarray (N, D) float64
        Data points.
    k : int
        Number of components, 1 <= k <= N.
    seed, n_init, max_iter : int
        Seed, number of restarts, EM iterations per restart.
    tol : float
        Stop when the mean log likelihood per point improves by less than this.
    reg_covar : float
        Added to every covariance diagonal (a floor that keeps them positive
        definite when a component collapses onto few points).
    min_count : float, optional
        A restart that ends with a component whose effective number of points
        (sum of responsibilities) is below this (default D + 1) is *degenerate*
        (a component fitted to a handful of outliers); non-degenerate restarts
        win over degenerate ones whatever their likelihood.

    Returns
    -------
    weights : ndarray (K,) float64
    means : ndarray (K, D) float64
    covs : ndarray (K, D, D) float64
    loglik : float
        Total log likelihood of ``x`` at the returned parameters.

    Raises
    ------
    ConfigError
        If ``k`` or ``x`` are unusable (names the argument).

    See Also
    --------
    fit_gmm_checked : the same, also telling whether the result is degenerate.

    Notes
    -----
    Dempster, Laird & Rubin (1977); Bishop, *Pattern Recognition and Machine
    Learning*, Sec. 9.2.2 (E and M steps for a Gaussian mixture).
    """
    return fit_gmm_checked(x, k, seed, n_init, max_iter, tol, reg_covar, min_count)[:4]


def _em(x, k, rng, max_iter, tol, reg_covar):
    """One EM run from a k-means++ start: ((weights, means, covs), total log likelihood)."""
    n = x.shape[0]
    resp = _init_resp(x, k, rng) if k > 1 else np.ones((n, 1))
    params = _m_step(x, resp, reg_covar)
    prev = -np.inf
    for _ in range(max_iter):
        logp = gmm_log_density(x, *params)
        norm = _logsumexp_rows(logp)
        ll = float(norm.mean())
        resp = np.exp(logp - norm[:, None])
        params = _m_step(x, resp, reg_covar)
        if ll - prev < tol:
            break
        prev = ll
    return params, float(_logsumexp_rows(gmm_log_density(x, *params)).sum())


def fit_gmm_checked(x, k, seed=0, n_init=4, max_iter=1000, tol=1e-10, reg_covar=1e-4, min_count=None):
    """:func:`fit_gmm`, returning ``(weights, means, covs, loglik, degenerate)``.

    ``degenerate`` is True when every restart ended with a component holding
    fewer than ``min_count`` effective points.

    Raises
    ------
    ConfigError
        As :func:`fit_gmm`.
    NumericalError
        A covariance stopped being positive definite during EM (names K and the restart).
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or not np.all(np.isfinite(x)):
        raise ConfigError("fit_gmm: x must be a finite (N, D) array")
    n, d = x.shape
    if not (1 <= int(k) <= n):
        raise ConfigError(f"fit_gmm: k={k} must be in [1, N={n}]")
    k = int(k)
    if min_count is None:
        min_count = d + 1
    best = None
    for i in range(max(1, int(n_init)) if k > 1 else 1):
        try:
            params, ll_total = _em(x, k, np.random.default_rng([int(seed), k, i]), max_iter, tol, reg_covar)
        except np.linalg.LinAlgError as exc:
            raise NumericalError(f"fit_gmm: K={k}, restart {i}: a covariance lost positive definiteness "
                                 f"({exc}); raise reg_covar") from None
        degenerate = bool(np.min(params[0]) * n < min_count)
        key = (not degenerate, ll_total)
        if best is None or key[0] > best[0][0] or (key[0] == best[0][0] and key[1] > best[0][1] + 1e-9):
            best = (key, params, ll_total, degenerate)
    (w, m, c), ll, degenerate = best[1], best[2], best[3]
    order = np.lexsort((m[:, 0], -np.round(w, 12)))
    return w[order].copy(), m[order].copy(), c[order].copy(), ll, degenerate


def gmm_n_params(k, d):
    """Free parameters of a K-component, D-dimensional full-covariance mixture."""
    return (k - 1) + k * d + k * d * (d + 1) // 2


def gmm_bic(loglik, k, n, d):
    """Bayesian information criterion ``-2 ln L + p ln N`` (Schwarz 1978); lower is better."""
    return -2.0 * loglik + gmm_n_params(k, d) * math.log(n)


def select_k_bic(x, k_max=6, **fit_kw):
    """Number of mixture components with the lowest BIC among 1..k_max.

    Parameters
    ----------
    x : ndarray (N, D) float64
    k_max : int
    **fit_kw
        Passed to :func:`fit_gmm`.

    Returns
    -------
    k : int
        The BIC-best number of components.
    bics : ndarray (k_max,) float64
        BIC for K = 1..k_max; ``inf`` where the mixture has as many free
        parameters as points, or where every restart was degenerate (see
        :func:`fit_gmm`).
    """
    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    bics = np.full(int(k_max), np.inf)
    for k in range(1, int(k_max) + 1):
        if gmm_n_params(k, d) >= n:
            break
        *_, ll, degenerate = fit_gmm_checked(x, k, **fit_kw)
        if not degenerate:
            bics[k - 1] = gmm_bic(ll, k, n, d)
    return int(np.argmin(bics)) + 1, bics
