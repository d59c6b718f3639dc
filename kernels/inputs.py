"""The kernels' structured inputs, and the one place where they are checked.

The numba kernels take three named tuples instead of long positional lists:

* :class:`Problem` - one source's pixel problem: its active pixels, the images they lie in,
  the PSF mixture of each image and the galaxy prototypes;
* :class:`Prior` - the prior of every source (:mod:`kernels.kl`);
* :class:`NewtonSettings` - the optimizer's stopping rules (:mod:`kernels.newton`).

The kernels trust their inputs (no checks inside the pixel loops); build the tuples with
:func:`make_problem`, :func:`make_prior` (or :func:`prior_from_arrays`) and
:func:`make_settings`, which check shapes, dtypes and contiguity once and raise ``ValueError``
naming the array (the STUMPY pattern: one checking Python wrapper before private kernels).

Array layouts (all float64, C-contiguous):

* ``pix`` (n_pix, N_PIX_COLS): columns PIX_IMG (image index, 0..n_img-1), PIX_X, PIX_Y (0-based
  pixel centre, x = column, y = row), PIX_COUNTS (electrons), PIX_IOTA (electrons per nmgy),
  PIX_BGE (nmgy: sky plus the neighbours' expected light), PIX_BGV (nmgy^2: the neighbours'
  variance).
* ``img`` (n_img, N_IMG_COLS): IMG_BAND (0..4 = u g r i z), IMG_AX, IMG_AY (pixel position of the
  source's anchor), IMG_J00, IMG_J01, IMG_J10, IMG_J11 (d(x, y) / d(east, north), pixels per arcsec).
* ``psf`` (n_img, K, 6): weight, mean_x, mean_y (pixels), cov_xx, cov_xy, cov_yy (pixels^2);
  padding components have weight 0 and a valid covariance.
* ``proto`` (2, J, 2): galaxy prototypes (0 = exponential, 1 = de Vaucouleurs); [.., 0] the
  amplitude, [.., 1] the variance in units of the squared half-light radius; zero amplitudes pad
  (:func:`kernels.profiles.prototype_array`).
* prior arrays: ``prob_star`` float; ``r_prior`` (2, 2) [type, (mean, var)] of ln r;
  ``c_weight`` (2, C); ``c_mean`` (2, C, 4); ``c_prec`` (2, C, 4, 4) precision matrices;
  ``c_logdet`` (2, C) ln det of the covariances; ``shape_prior`` (3, 2)
  [(e_dev, e_axis, e_scale), (mean, var)].
"""
from collections import namedtuple

import numpy as np

from . import params as P

PIX_IMG, PIX_X, PIX_Y, PIX_COUNTS, PIX_IOTA, PIX_BGE, PIX_BGV = range(7)
N_PIX_COLS = 7
IMG_BAND, IMG_AX, IMG_AY, IMG_J00, IMG_J01, IMG_J10, IMG_J11 = range(7)
N_IMG_COLS = 7

#: one source's pixel problem (module docstring for the layouts)
Problem = namedtuple("Problem", ["pix", "img", "psf", "proto"])
#: the prior (module docstring; :mod:`kernels.kl`)
Prior = namedtuple("Prior", ["prob_star", "r_prior", "c_weight", "c_mean", "c_prec", "c_logdet", "shape_prior"])
#: stopping rules of :func:`kernels.newton.optimize_source`
NewtonSettings = namedtuple("NewtonSettings", ["max_iter", "f_tol", "g_tol"])


def _array(name, a, shape):
    """``a`` if it is a C-contiguous float64 ndarray of ``shape`` (None entries: any size)."""
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{name}: expected a numpy array, got {type(a).__name__}")
    if a.dtype != np.float64:
        raise ValueError(f"{name}: expected float64, got {a.dtype}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name}: not C-contiguous (use np.ascontiguousarray)")
    if a.ndim != len(shape) or any(s is not None and s != n for s, n in zip(shape, a.shape)):
        want = "(" + ", ".join("n" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name}: expected shape {want}, got {a.shape}")
    return a


def make_problem(pix, img, psf, proto):
    """A checked :class:`Problem` (layouts in the module docstring).

    Raises
    ------
    ValueError
        If an array has the wrong type, dtype, shape or memory layout, the image sizes
        disagree, a pixel names an image that does not exist or an image a band outside 0..4.
    """
    _array("pix", pix, (None, N_PIX_COLS))
    _array("img", img, (None, N_IMG_COLS))
    n_img = img.shape[0]
    _array("psf", psf, (n_img, None, 6))
    _array("proto", proto, (2, None, 2))
    if psf.shape[1] < 1 or proto.shape[1] < 1:
        raise ValueError(f"psf {psf.shape} / proto {proto.shape}: no components")
    if len(pix):
        lo, hi = pix[:, PIX_IMG].min(), pix[:, PIX_IMG].max()
        if lo < 0 or hi >= n_img:
            raise ValueError(f"pix: image index in [{lo:g}, {hi:g}], but there are {n_img} images")
    if n_img and not np.all(np.isin(img[:, IMG_BAND], np.arange(P.N_BANDS))):
        raise ValueError(f"img: band column {img[:, IMG_BAND]} outside 0..{P.N_BANDS - 1}")
    return Problem(pix, img, psf, proto)


def make_prior(prob_star, r_prior, c_weight, c_mean, c_prec, c_logdet, shape_prior):
    """A checked :class:`Prior` (shapes in the module docstring); ``ValueError`` names a bad array."""
    prob_star = float(prob_star)
    if not 0.0 < prob_star < 1.0:
        raise ValueError(f"prob_star: {prob_star} is not in (0, 1)")
    _array("r_prior", r_prior, (2, 2))
    _array("c_weight", c_weight, (2, None))
    n_c = c_weight.shape[1]
    _array("c_mean", c_mean, (2, n_c, 4))
    _array("c_prec", c_prec, (2, n_c, 4, 4))
    _array("c_logdet", c_logdet, (2, n_c))
    _array("shape_prior", shape_prior, (3, 2))
    if np.any(r_prior[:, 1] <= 0) or np.any(shape_prior[:, 1] <= 0):
        raise ValueError("r_prior / shape_prior: variances must be positive")
    return Prior(prob_star, r_prior, c_weight, c_mean, c_prec, c_logdet, shape_prior)


def prior_from_arrays(pa):
    """:class:`Prior` from :meth:`celeste.priors.Priors.as_arrays` (a dict of float64 arrays)."""
    return make_prior(
        float(np.asarray(pa["prob_star"]).reshape(())),
        np.ascontiguousarray(np.stack([pa["r_mean"], pa["r_var"]], axis=1)),
        np.ascontiguousarray(pa["colour_weight"], dtype=np.float64),
        np.ascontiguousarray(pa["colour_mean"], dtype=np.float64),
        np.ascontiguousarray(pa["colour_prec"], dtype=np.float64),
        np.ascontiguousarray(pa["colour_logdet"], dtype=np.float64),
        np.ascontiguousarray(np.stack([pa["shape_mean"], pa["shape_var"]], axis=1)),
    )


def make_settings(max_iter, f_tol, g_tol):
    """Checked :class:`NewtonSettings`: ``max_iter`` >= 1 iterations, tolerances >= 0 (nats, nats per unit)."""
    max_iter = int(max_iter)
    f_tol = float(f_tol)
    g_tol = float(g_tol)
    if max_iter < 1 or not (f_tol >= 0.0) or not (g_tol >= 0.0):
        raise ValueError(f"Newton settings: max_iter={max_iter} f_tol={f_tol} g_tol={g_tol}")
    return NewtonSettings(max_iter, f_tol, g_tol)
