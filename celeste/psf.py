"""The PSF as a mixture of Gaussians, fit to a survey PSF stamp.

The Celeste model needs the point-spread function in closed form so that stars and
galaxies (themselves Gaussian mixtures, :mod:`kernels.profiles`) convolve with it
analytically (Regier et al. AoAS 2019, Sec. 2.2): a PSF of K bivariate normals::

    psf(dx, dy) = sum_k w_k N((dx, dy); mu_k, Sigma_k)

in pixel offsets from the source position.  :func:`fit_psf_mixture` finds w, mu, Sigma
by least squares of this density evaluated at pixel centres against the stamp
normalized to sum 1.  The stamp is an image of a point source (SDSS psField PSFs include
the pixel response), so the mixture is the *effective* PSF, sampled, not integrated,
over pixels.

Choice of K, measured on the real SDSS PSFs by ``python bench/fit_psf.py``: both project
psField files (2583-2-136 and 94-1-12), five bands each, the 25 x 25 stamp at the frame
centre (x 1024, y 744) from :func:`celeste.sdss.read_psfield`, normalized to sum 1.
``rss`` = sum over pixels of (model - stamp)^2; ``L1`` = sum |model - stamp| / sum |stamp|,
the fraction of flux mismatched; ``R2`` = 1 - rss / sum stamp^2, the fraction of the
stamp's squared structure captured; time = median wall time of one fit (scipy 1.17,
on a 2-core machine shared with other jobs, load ~7, so only the ratios mean much)::

    K   rss (10 stamps)        L1 median / worst   R2 worst   ms / fit
    1   1.6e-04 .. 1.6e-03     0.178 / 0.291       0.9740      1.6
    2   2.2e-05 .. 1.8e-04     0.081 / 0.148       0.9928     10
    3   7.2e-06 .. 5.6e-05     0.054 / 0.085       0.9975     30

Going from K = 2 to 3 cuts rss by a factor 1.5-5 in every band and the flux mismatch by a
third, so the default of this function is ``n_components=3``; fitting costs tens of
milliseconds once per image.  The pipeline fits K = 4 (``--psf-components``,
:class:`celeste.options.ImageOptions`): on the r PSF of 2583-2-136, 1.08 % of the light lies
beyond 8 pixels, K = 3 puts 0.38 % there and bright stars whose wings it lacks are fitted
as galaxies, K = 4 puts 0.84 % there (flux mismatch L1 3.2-4.7 % over the five bands).  K = 2 is the cheaper choice when kernel time matters (every galaxy component is
convolved with every PSF component).  The L1 mismatch that remains is mostly the
PSF's extended wings (about 1 % of the flux lies beyond 8 pixels of the centre, where
a least-squares fit weighted equally per pixel follows them only roughly) and
pixel-scale structure of the Karhunen-Loeve reconstruction.
"""
from dataclasses import dataclass

import numpy as np
from scipy import optimize

from .errors import ConfigError, DataError, NumericalError

#: largest number of components accepted by :func:`fit_psf_mixture`
MAX_COMPONENTS = 6

# Deterministic start: the k-th of K components gets weight _INIT_W[K][k] and covariance
# _INIT_S[K][k] times the stamp's second-moment matrix (core narrower than the moments,
# the last one wide and faint for the wings).
_INIT_W = {
    1: (1.0,),
    2: (0.8, 0.2),
    3: (0.6, 0.3, 0.1),
}
_INIT_S = {
    1: (1.0,),
    2: (0.6, 2.5),
    3: (0.5, 1.0, 4.0),
}


@dataclass(frozen=True)
class PsfMixture:
    """A PSF as K Gaussians in pixel offsets from the source position.

    Attributes
    ----------
    weight : ndarray (K,) float64
        Component fluxes, positive, summing to 1.
    mean : ndarray (K, 2) float64
        Component centres (x, y) in pixels relative to the stamp's centre pixel
        (P // 2, P // 2), i.e. to the source position.
    cov : ndarray (K, 2, 2) float64
        Component covariances in pixels^2 (x = column first), symmetric positive definite.
    """

    weight: np.ndarray
    mean: np.ndarray
    cov: np.ndarray

    @property
    def n_components(self):
        return int(self.weight.shape[0])

    def as_array(self):
        """The mixture as one float64 array (K, 6) for the numba kernels.

        Returns
        -------
        ndarray (K, 6) float64, C-contiguous
            Columns: weight, mean_x, mean_y (pixels), cov_xx, cov_xy, cov_yy (pixels^2).
        """
        k = self.n_components
        out = np.empty((k, 6), dtype=np.float64)
        out[:, 0] = self.weight
        out[:, 1:3] = self.mean
        out[:, 3] = self.cov[:, 0, 0]
        out[:, 4] = self.cov[:, 0, 1]
        out[:, 5] = self.cov[:, 1, 1]
        return out


def _pixel_offsets(shape):
    """Offsets (dx, dy) of every pixel centre from the centre pixel, each (H * W,)."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    return (xx - w // 2).ravel().astype(np.float64), (yy - h // 2).ravel().astype(np.float64)


def _unpack(p, k):
    """Parameter vector -> (weight (k,), mean (k, 2), chol entries a, c, e (k,) each).

    Layout: k - 1 weight logits (the first logit is fixed at 0), then per component
    mean_x, mean_y, ln a, c, ln e with Cholesky factor L = [[a, 0], [c, e]], Sigma = L L^T.
    """
    logits = np.concatenate([[0.0], p[: k - 1]])
    w = np.exp(logits - logits.max())
    w /= w.sum()
    q = p[k - 1:].reshape(k, 5)
    return w, q[:, 0:2], np.exp(q[:, 2]), q[:, 3], np.exp(q[:, 4])


def _components(dx, dy, mean, a, c, e):
    """Normalized Gaussian densities g (k, n) and whitened offsets u1, u2 (k, n)."""
    d1 = dx[None, :] - mean[:, 0:1]
    d2 = dy[None, :] - mean[:, 1:2]
    u1 = d1 / a[:, None]
    u2 = (d2 - c[:, None] * u1) / e[:, None]
    g = np.exp(-0.5 * (u1 * u1 + u2 * u2)) / (2.0 * np.pi * (a * e)[:, None])
    return g, u1, u2


def _model(p, k, dx, dy):
    w, mean, a, c, e = _unpack(p, k)
    g, _, _ = _components(dx, dy, mean, a, c, e)
    return w @ g


def _jacobian(p, k, dx, dy):
    """d model / d p, shape (n_pixels, len(p)); derivation in the comments below."""
    w, mean, a, c, e = _unpack(p, k)
    g, u1, u2 = _components(dx, dy, mean, a, c, e)
    m = w @ g
    n = dx.size
    jac = np.empty((n, p.size))
    # softmax weights with logit 0 fixed: d m / d alpha_j = w_j (g_j - m)
    for j in range(1, k):
        jac[:, j - 1] = w[j] * (g[j] - m)
    # Sigma^{-1} d = L^{-T} u: v2 = u2 / e, v1 = (u1 - c v2) / a; d g / d mu = g Sigma^{-1} d
    v2 = u2 / e[:, None]
    v1 = (u1 - c[:, None] * v2) / a[:, None]
    wg = w[:, None] * g
    base = k - 1
    for j in range(k):
        col = base + 5 * j
        jac[:, col] = wg[j] * v1[j]
        jac[:, col + 1] = wg[j] * v2[j]
        # ln g = -(u1^2 + u2^2)/2 - ln a - ln e - ln 2pi, u1 = d1/a, u2 = (d2 - c u1)/e
        jac[:, col + 2] = wg[j] * (u1[j] * u1[j] - u2[j] * c[j] * u1[j] / e[j] - 1.0)
        jac[:, col + 3] = wg[j] * (u1[j] * u2[j] / e[j])
        jac[:, col + 4] = wg[j] * (u2[j] * u2[j] - 1.0)
    return jac


def _moments(img, dx, dy):
    """Centroid (2,) and second-moment matrix (2, 2) of the positive part of img (ravelled)."""
    f = np.clip(img, 0.0, None)
    f = f / f.sum()
    mx, my = f @ dx, f @ dy
    ex, ey = dx - mx, dy - my
    m2 = np.array([[f @ (ex * ex), f @ (ex * ey)], [f @ (ex * ey), f @ (ey * ey)]])
    # a pixel-sized floor keeps a one-pixel spike positive definite
    m2 += np.eye(2) * (1.0 / 12.0)
    return np.array([mx, my]), m2


def _initial(k, mean0, m2):
    if k in _INIT_W:
        w0, s0 = np.array(_INIT_W[k]), np.array(_INIT_S[k])
    else:
        w0 = np.geomspace(1.0, 0.1, k)
        w0 /= w0.sum()
        s0 = np.geomspace(0.5, 4.0, k)
    p = [np.log(w0[1:] / w0[0])]
    for j in range(k):
        lj = np.linalg.cholesky(m2 * s0[j])
        p.append([mean0[0], mean0[1], np.log(lj[0, 0]), lj[1, 0], np.log(lj[1, 1])])
    return np.concatenate([np.ravel(x) for x in p])


def fit_psf_mixture(stamp, n_components=3, source="PSF stamp"):
    """Fit a K-component Gaussian mixture to a PSF image.

    Minimizes ``sum_pixels (sum_k w_k N(pixel centre; mu_k, Sigma_k) - stamp / sum(stamp))^2``
    with ``scipy.optimize.least_squares`` (Levenberg-Marquardt, MINPACK, with an analytic Jacobian).
    Parameterization: weights by a softmax (positive, summing to 1), covariances by a
    Cholesky factor with log-diagonal (positive definite).  Start (deterministic): every
    component at the stamp's centroid with covariance a fixed multiple of its second
    moments (narrow core ... one wide, faint component for the wings; see ``_INIT_S``).
    Gaussian-mixture PSFs: Regier et al. AoAS 2019, Sec. 2.2; Hogg & Lang 2013, PASP 125, 719.

    Parameters
    ----------
    stamp : array_like (H, W) float
        PSF image (any normalization, total > 0) of a point source centred on the pixel
        (W // 2, H // 2); H, W >= 5.
    n_components : int
        K, 1 .. MAX_COMPONENTS.  The default 3 is chosen by the measurement in the
        module docstring.
    source : str
        What the stamp is (e.g. the psField path and band), used in error messages.

    Returns
    -------
    PsfMixture
        Means relative to the centre pixel, pixels; covariances pixels^2; components
        ordered by increasing size (trace of the covariance).

    Raises
    ------
    ConfigError
        If ``n_components`` is not an integer in 1 .. MAX_COMPONENTS, or ``stamp`` is not
        a 2-D array of at least 5 x 5 pixels.
    DataError
        If the stamp has non-finite values or a non-positive total (names ``source``).
    NumericalError
        If the optimizer fails, or returns a non-finite or degenerate mixture.
    """
    if isinstance(n_components, bool) or not isinstance(n_components, (int, np.integer)) \
            or not 1 <= n_components <= MAX_COMPONENTS:
        raise ConfigError(f"n_components: expected an integer in 1..{MAX_COMPONENTS}, got {n_components!r}")
    k = int(n_components)
    try:
        img = np.asarray(stamp, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"stamp: expected a 2-D numeric array, got {type(stamp).__name__}") from None
    if img.ndim != 2 or min(img.shape) < 5:
        raise ConfigError(f"stamp: expected a 2-D array of at least 5 x 5 pixels, got shape {img.shape}")
    if not np.all(np.isfinite(img)):
        raise DataError(f"{source}: PSF stamp has non-finite pixels")
    total = img.sum()
    if not total > 0 or np.clip(img, 0.0, None).sum() <= 0:
        raise DataError(f"{source}: PSF stamp has non-positive total {total}")
    target = (img / total).ravel()
    dx, dy = _pixel_offsets(img.shape)
    mean0, m2 = _moments(target, dx, dy)
    p0 = _initial(k, mean0, m2)

    def resid(p):
        return _model(p, k, dx, dy) - target

    def jac(p):
        return _jacobian(p, k, dx, dy)

    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        try:
            sol = optimize.least_squares(resid, p0, jac=jac, method="lm", xtol=1e-10, ftol=1e-12,
                                         gtol=1e-12, max_nfev=200 * (k + 1))
        except (ValueError, np.linalg.LinAlgError) as exc:
            raise NumericalError(f"{source}: PSF mixture fit with K={k} failed: {exc}") from exc
    if sol.status <= 0 or not np.all(np.isfinite(sol.x)) or not np.isfinite(sol.cost):
        raise NumericalError(f"{source}: PSF mixture fit with K={k} did not converge: {sol.message}")
    w, mean, a, c, e = _unpack(sol.x, k)
    cov = np.empty((k, 2, 2))
    cov[:, 0, 0] = a * a
    cov[:, 0, 1] = cov[:, 1, 0] = a * c
    cov[:, 1, 1] = c * c + e * e
    det = cov[:, 0, 0] * cov[:, 1, 1] - cov[:, 0, 1] ** 2
    size = cov[:, 0, 0] + cov[:, 1, 1]
    if not (np.all(np.isfinite(cov)) and np.all(det > 0) and np.all(w > 0) and np.all(size < stamp.size)):
        raise NumericalError(f"{source}: PSF mixture fit with K={k} gave a degenerate component")
    order = np.argsort(cov[:, 0, 0] + cov[:, 1, 1], kind="stable")
    return PsfMixture(weight=w[order].copy(), mean=mean[order].copy(), cov=cov[order].copy())


def psf_mixture_image(mix, shape):
    """Render a PSF mixture at the pixel centres of an array.

    Parameters
    ----------
    mix : PsfMixture
        The mixture; its means are offsets from the centre pixel (W // 2, H // 2).
    shape : tuple of int (H, W)
        Shape of the image to render.

    Returns
    -------
    ndarray (H, W) float64
        ``sum_k w_k N(pixel centre - centre; mu_k, Sigma_k)``: the density, per pixel^2,
        sampled at pixel centres (sums to about 1 when the stamp holds the PSF).

    Raises
    ------
    ConfigError
        If ``shape`` is not two positive integers or ``mix`` has non-positive-definite
        covariances.
    """
    try:
        h, w = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise ConfigError(f"shape: expected (H, W), got {shape!r}") from None
    if h < 1 or w < 1:
        raise ConfigError(f"shape: expected positive (H, W), got {shape!r}")
    cov = np.asarray(mix.cov, dtype=np.float64)
    a2, b, c2 = cov[:, 0, 0], cov[:, 0, 1], cov[:, 1, 1]
    det = a2 * c2 - b * b
    if not (np.all(a2 > 0) and np.all(det > 0)):
        raise ConfigError("mix: covariances must be positive definite")
    dx, dy = _pixel_offsets((h, w))
    ex = dx[None, :] - mix.mean[:, 0:1]
    ey = dy[None, :] - mix.mean[:, 1:2]
    q = (c2[:, None] * ex * ex - 2 * b[:, None] * ex * ey + a2[:, None] * ey * ey) / det[:, None]
    g = np.exp(-0.5 * q) / (2 * np.pi * np.sqrt(det))[:, None]
    return (np.asarray(mix.weight, dtype=np.float64) @ g).reshape(h, w)
