"""Newton trust-region ascent of one source's ELBO with the exact Hessian.

The step solves the trust-region subproblem
    min_p  g^T p + 0.5 p^T H p   subject to ||p|| <= radius
for the *negated* ELBO, through the eigen-decomposition H = V diag(lam) V^T: the solution
is p(lam*) = -V diag(1 / (lam + lam*)) V^T g with lam* >= max(0, -lam_min) chosen so that
||p|| = radius unless the Newton step is interior (Nocedal & Wright, Numerical Optimization,
2nd ed., Thm. 4.1 and Sec. 4.3; the "hard case" adds a multiple of the eigenvector of lam_min).
Radius update and acceptance follow Nocedal & Wright Algorithm 4.1 (eta = 0.1).

Everything here runs without the GIL, so threads can optimize different sources at once.
"""
import math

import numpy as np

from . import params as P
from .config import kernel
from .elbo import source_loglik
from .kl import source_kl

# info vector slots
INFO_ITERS, INFO_ELBO, INFO_GNORM, INFO_CONVERGED, INFO_EVALS = range(5)
N_INFO = 5


@kernel
def tr_step(g, H, radius, p):
    """Solve the trust-region subproblem (module docstring); writes p, returns predicted decrease.

    Parameters
    ----------
    g : ndarray (n,)   gradient of the function being minimized
    H : ndarray (n, n) its symmetric Hessian (may be indefinite)
    radius : float     trust-region radius (same units as the parameters)
    p : ndarray (n,), output: the step

    Returns
    -------
    float
        Predicted decrease -(g^T p + 0.5 p^T H p) >= 0.
    """
    n = g.shape[0]
    lam, V = np.linalg.eigh(H)
    c = V.T @ g
    lmin = lam[0]
    # interior Newton step?
    if lmin > 0.0:
        nrm2 = 0.0
        for i in range(n):
            nrm2 += (c[i] / lam[i]) ** 2
        if nrm2 <= radius * radius:
            shift = 0.0
            for i in range(n):
                c[i] = -c[i] / lam[i]
            q = V @ c
            for i in range(n):
                p[i] = q[i]
            return -(g @ p + 0.5 * p @ (H @ p))
    lo = max(0.0, -lmin)
    scale = 1e-12 * max(1.0, abs(lmin), abs(lam[n - 1]))
    lo_eps = lo + scale

    def norm_at(shift):
        s = 0.0
        for i in range(n):
            s += (c[i] / (lam[i] + shift)) ** 2
        return math.sqrt(s)

    if norm_at(lo_eps) < radius:
        # hard case: g (numerically) has no component along the eigenvector v_0 of the smallest
        # eigenvalue; p = -sum_{i>0} c_i / (lam_i - lam_0) v_i + tau v_0 with tau making ||p|| = radius
        # (N&W eq. 4.45), its sign against c_0 so that the linear term does not grow
        shift = lo_eps
        coef = np.empty(n)
        s = 0.0
        for i in range(1, n):
            coef[i] = -c[i] / (lam[i] + shift)
            s += coef[i] ** 2
        tau = math.sqrt(max(radius * radius - s, 0.0))
        coef[0] = -tau if c[0] > 0.0 else tau
        q = V @ coef
        for i in range(n):
            p[i] = q[i]
        return -(g @ p + 0.5 * p @ (H @ p))
    hi = lo_eps + 1.0
    while norm_at(hi) > radius:
        hi = lo + 2.0 * (hi - lo)
    lo_b = lo_eps
    for _ in range(100):
        mid = 0.5 * (lo_b + hi)
        if norm_at(mid) > radius:
            lo_b = mid
        else:
            hi = mid
        if hi - lo_b <= 1e-12 * max(1.0, hi):
            break
    shift = hi
    for i in range(n):
        c[i] = -c[i] / (lam[i] + shift)
    q = V @ c
    for i in range(n):
        p[i] = q[i]
    return -(g @ p + 0.5 * p @ (H @ p))


@kernel
def source_elbo(params, problem, prior, mode, grad, hess):
    """ELBO of one source = expected log likelihood (:func:`kernels.elbo.source_loglik`) - KL
    (:func:`kernels.kl.source_kl`), the function the optimizer maximizes.

    Parameters
    ----------
    params : ndarray (27,)
    problem : kernels.inputs.Problem
    prior : kernels.inputs.Prior
    mode : int
        0 value; 1 and gradient; 2 and Hessian.
    grad, hess : ndarray (27,), (27, 27), outputs (overwritten by mode).

    Returns
    -------
    float
        The ELBO (nats, without the data constant sum ln x!); -inf if some E[F] <= 0.
    """
    ll = source_loglik(params, problem, mode, grad, hess)
    kl = source_kl(params, prior, mode, grad, hess, -1.0)
    return ll - kl


@kernel
def optimize_source(params, problem, prior, settings, info):
    """Maximize one source's ELBO in place by trust-region Newton steps.

    Parameters
    ----------
    params : ndarray (27,), in/out
        Unconstrained parameters; updated to the optimum found.
    problem : kernels.inputs.Problem
        The source's pixel problem; ``problem.pix`` holds the neighbours' light in its
        background columns.
    prior : kernels.inputs.Prior
    settings : kernels.inputs.NewtonSettings
        ``max_iter`` Newton iterations at most; stop when an accepted step improves the ELBO
        by less than ``f_tol`` (nats) or the largest gradient entry is below ``g_tol``.
    info : ndarray (N_INFO,), output
        iterations, final ELBO, final max |gradient|, converged flag (1/0), evaluations.

    Returns
    -------
    float
        The final ELBO (nats, without the data constant sum ln x!).
    """
    max_iter, f_tol, g_tol = settings.max_iter, settings.f_tol, settings.g_tol
    n = params.shape[0]
    g = np.zeros(n)
    H = np.zeros((n, n))
    gn = np.zeros(n)
    Hn = np.zeros((n, n))
    p = np.zeros(n)
    trial = np.empty(n)
    f = source_elbo(params, problem, prior, 2, g, H)
    evals = 1
    radius = 1.0
    converged = 0
    it = 0
    if not np.isfinite(f):
        info[INFO_ITERS] = 0
        info[INFO_ELBO] = f
        info[INFO_GNORM] = np.inf
        info[INFO_CONVERGED] = 0
        info[INFO_EVALS] = evals
        return f
    for it in range(1, max_iter + 1):
        gmax = 0.0
        for i in range(n):
            gmax = max(gmax, abs(g[i]))
        if gmax < g_tol:
            converged = 1
            break
        # minimize -f: gradient -g, Hessian -H
        for i in range(n):
            gn[i] = -g[i]
            for j in range(n):
                Hn[i, j] = -H[i, j]
        pred = tr_step(gn, Hn, radius, p)
        pnorm = 0.0
        for i in range(n):
            trial[i] = params[i] + p[i]
            pnorm += p[i] * p[i]
        pnorm = math.sqrt(pnorm)
        f_new = source_elbo(trial, problem, prior, 0, gn, Hn)
        evals += 1
        actual = f_new - f
        rho = actual / pred if pred > 0.0 else -1.0
        if not np.isfinite(f_new) or rho < 0.25:
            radius = 0.25 * pnorm
        elif rho > 0.75 and pnorm > 0.99 * radius:
            radius = min(2.0 * radius, 10.0)
        if np.isfinite(f_new) and rho > 0.1:
            for i in range(n):
                params[i] = trial[i]
            f = source_elbo(params, problem, prior, 2, g, H)
            evals += 1
            if actual < f_tol:
                converged = 1
                break
        if radius < 1e-10:
            converged = 1
            break
    gmax = 0.0
    for i in range(n):
        gmax = max(gmax, abs(g[i]))
    info[INFO_ITERS] = it
    info[INFO_ELBO] = f
    info[INFO_GNORM] = gmax
    info[INFO_CONVERGED] = converged
    info[INFO_EVALS] = evals
    return f


@kernel
def fit_source(params, problem, prior, settings, info):
    """Optimize from a star-leaning and then a galaxy-leaning start; keep the higher ELBO.

    The ELBO is bimodal in the type: a galaxy shrunk below the PSF mimics a star and is a
    local optimum from which Newton steps do not leave.  The first run starts at ``params``
    with logit q(star) = +3; the second starts from the first run's optimum with
    logit q(star) = -3 and the galaxy's brightness set to the star's (a warm start: position
    and colours are already good, so it needs few iterations).  ``params`` and ``info``
    receive the better result (ties go to the star start, so results are deterministic).
    Arguments as :func:`optimize_source`; ``info[INFO_ITERS]`` and ``info[INFO_EVALS]``
    count both runs.
    """
    n = params.shape[0]
    p_s = params.copy()
    p_s[P.A_STAR] = 3.0
    info_s = np.zeros(N_INFO)
    info_g = np.zeros(N_INFO)
    f_s = optimize_source(p_s, problem, prior, settings, info_s)
    p_g = p_s.copy()
    if not np.isfinite(f_s):
        for i in range(n):
            p_g[i] = params[i]
    else:
        for k in range(P.N_BRIGHT):
            p_g[P.R_MEAN[1] + k] = p_s[P.R_MEAN[0] + k]
    p_g[P.A_STAR] = -3.0
    f_g = optimize_source(p_g, problem, prior, settings, info_g)
    if f_s >= f_g or not np.isfinite(f_g):
        best = p_s
        for i in range(N_INFO):
            info[i] = info_s[i]
    else:
        best = p_g
        for i in range(N_INFO):
            info[i] = info_g[i]
    info[INFO_ITERS] = info_s[INFO_ITERS] + info_g[INFO_ITERS]
    info[INFO_EVALS] = info_s[INFO_EVALS] + info_g[INFO_EVALS]
    for i in range(n):
        params[i] = best[i]
    return max(f_s, f_g)
