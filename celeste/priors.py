"""Prior distributions of the Celeste model: the data model, and reading and writing it.

The generative model (Regier et al., AoAS 2019, Sec. 2; ICML 2015, Sec. 2)
draws, for each light source,

* its type ``a ~ Bernoulli(prob_star)`` (type 0 star, 1 galaxy);
* its r-band flux ``ln r | a ~ Normal(r_mean[a], r_var[a])`` (r in nmgy);
* its four colours ``c | a ~ sum_k colour_weight[a, k] Normal(colour_mean[a, k],
  colour_cov[a, k])`` with ``c_j = ln(f_{j+1} / f_j)`` over bands u g r i z;
* for galaxies, its shape on the unconstrained scale used by
  :mod:`kernels.params`: ``e_dev = logit(frac_dev)``, ``e_axis = logit(q)``
  (q = minor / major axis ratio) and ``e_scale = ln(half-light radius along the
  major axis, arcsec)``, each ``Normal(shape_mean[i], shape_var[i])`` in that
  order (the position angle gets a flat prior and is not stored).

Like Celeste.jl, the numbers are fitted to the SDSS Stripe 82 coadd catalog
(deep, so its types and colours are far better measured than single-epoch
ones) by ``celeste-fit-priors`` (:mod:`celeste.fitpriors`, with the Gaussian
mixtures of :mod:`celeste.gmm`); the result ships as package data
``celeste/data/priors.json``.
"""
import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from celeste.errors import DataError

N_TYPES = 2
N_COLOURS = 4
N_SHAPE = 3


@dataclass
class Priors:
    """Fitted prior parameters (see the module docstring for the model).

    Attributes
    ----------
    prob_star : float
        Prior probability that a source is a star.
    r_mean, r_var : ndarray (2,) float64
        Mean and variance of ln(r-band flux / nmgy), per type (0 star, 1 galaxy).
    colour_k : ndarray (2,) int64
        Number of mixture components in use per type (equal to K here).
    colour_weight : ndarray (2, K) float64
        Mixture weights, summing to 1 per type.
    colour_mean : ndarray (2, K, 4) float64
        Component means of the colours ln(f_g/f_u), ln(f_r/f_g), ln(f_i/f_r), ln(f_z/f_i).
    colour_cov : ndarray (2, K, 4, 4) float64
        Component covariances (symmetric positive definite).
    shape_mean, shape_var : ndarray (3,) float64
        Normal prior on (e_dev, e_axis, e_scale) = (logit frac_dev, logit axis
        ratio, ln half-light radius along the major axis / arcsec).
    provenance : dict
        Source file, its sha256, object counts, date, command, selection cuts.
    path : str
        File these were loaded from ("" if built in memory).
    """

    prob_star: float
    r_mean: np.ndarray
    r_var: np.ndarray
    colour_k: np.ndarray
    colour_weight: np.ndarray
    colour_mean: np.ndarray
    colour_cov: np.ndarray
    shape_mean: np.ndarray
    shape_var: np.ndarray
    provenance: dict = field(default_factory=dict)
    path: str = ""

    @property
    def n_components(self):
        """K, the (common) number of colour mixture components."""
        return self.colour_weight.shape[1]

    def as_arrays(self):
        """The numbers as float64 arrays ready for numba kernels.

        Returns
        -------
        dict of str -> ndarray float64
            ``prob_star`` (shape ()), ``r_mean`` (2,), ``r_var`` (2,),
            ``colour_weight`` (2, K), ``colour_log_weight`` (2, K),
            ``colour_mean`` (2, K, 4), ``colour_cov`` (2, K, 4, 4),
            ``colour_prec`` (2, K, 4, 4) (inverse covariances),
            ``colour_logdet`` (2, K) (ln det of the covariances),
            ``shape_mean`` (3,), ``shape_var`` (3,).  All C-contiguous copies.
        """
        cov = np.ascontiguousarray(self.colour_cov, dtype=np.float64)
        prec = np.linalg.inv(cov)
        prec = 0.5 * (prec + np.swapaxes(prec, -1, -2))
        logdet = np.linalg.slogdet(cov)[1]
        with np.errstate(divide="ignore"):
            logw = np.log(self.colour_weight)
        out = dict(
            prob_star=np.array(self.prob_star, dtype=np.float64),
            r_mean=self.r_mean,
            r_var=self.r_var,
            colour_weight=self.colour_weight,
            colour_log_weight=logw,
            colour_mean=self.colour_mean,
            colour_cov=cov,
            colour_prec=prec,
            colour_logdet=logdet,
            shape_mean=self.shape_mean,
            shape_var=self.shape_var,
        )
        return {k: np.ascontiguousarray(v, dtype=np.float64).copy() for k, v in out.items()}

    def to_dict(self):
        """JSON-ready dict (nested lists); inverse of :func:`priors_from_dict`."""
        return dict(
            format="celeste-priors-1",
            types=["star", "galaxy"],
            colours=["ln(f_g/f_u)", "ln(f_r/f_g)", "ln(f_i/f_r)", "ln(f_z/f_i)"],
            shape_order=["e_dev=logit(frac_dev)", "e_axis=logit(minor/major)", "e_scale=ln(r_half_major/arcsec)"],
            prob_star=float(self.prob_star),
            r_mean=np.asarray(self.r_mean).tolist(),
            r_var=np.asarray(self.r_var).tolist(),
            colour_k=[int(v) for v in self.colour_k],
            colour_weight=np.asarray(self.colour_weight).tolist(),
            colour_mean=np.asarray(self.colour_mean).tolist(),
            colour_cov=np.asarray(self.colour_cov).tolist(),
            shape_mean=np.asarray(self.shape_mean).tolist(),
            shape_var=np.asarray(self.shape_var).tolist(),
            provenance=self.provenance,
        )


def _arr(d, key, shape_desc, where, ndim):
    if key not in d:
        raise DataError(f"{where}: priors key '{key}' is missing")
    try:
        a = np.asarray(d[key], dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{where}: priors key '{key}' is not numeric ({shape_desc})") from None
    if a.ndim != ndim:
        raise DataError(f"{where}: priors key '{key}' has shape {a.shape}, expected {shape_desc}")
    if not np.all(np.isfinite(a)):
        raise DataError(f"{where}: priors key '{key}' has non-finite values")
    return a


def priors_from_dict(d, where="<dict>"):
    """Build and validate :class:`Priors` from a dict as written by :meth:`Priors.to_dict`.

    Raises
    ------
    DataError
        Naming ``where`` (the file) if a key is missing, a shape is wrong, a
        value is non-finite, prob_star is outside (0, 1), a variance is not
        positive, weights are negative or do not sum to 1, or a covariance is
        not symmetric positive definite.
    """
    if not isinstance(d, dict):
        raise DataError(f"{where}: priors must be a JSON object")
    ps = _arr(d, "prob_star", "()", where, 0)
    r_mean = _arr(d, "r_mean", "(2,)", where, 1)
    r_var = _arr(d, "r_var", "(2,)", where, 1)
    w = _arr(d, "colour_weight", "(2, K)", where, 2)
    m = _arr(d, "colour_mean", "(2, K, 4)", where, 3)
    c = _arr(d, "colour_cov", "(2, K, 4, 4)", where, 4)
    sm = _arr(d, "shape_mean", "(3,)", where, 1)
    sv = _arr(d, "shape_var", "(3,)", where, 1)
    k = w.shape[1] if w.ndim == 2 else 0
    ck = np.asarray(d.get("colour_k", [k, k]))
    if r_mean.shape != (2,) or r_var.shape != (2,):
        raise DataError(f"{where}: r_mean and r_var must have shape (2,)")
    if w.shape[0] != 2 or k < 1 or m.shape != (2, k, N_COLOURS) or c.shape != (2, k, N_COLOURS, N_COLOURS):
        raise DataError(
            f"{where}: colour shapes inconsistent: weight {w.shape}, mean {m.shape}, cov {c.shape}; "
            f"expected (2, K), (2, K, 4), (2, K, 4, 4)"
        )
    if ck.shape != (2,) or np.any(ck < 1) or np.any(ck > k):
        raise DataError(f"{where}: colour_k must be two integers in [1, {k}]")
    if sm.shape != (N_SHAPE,) or sv.shape != (N_SHAPE,):
        raise DataError(f"{where}: shape_mean and shape_var must have shape (3,)")
    if not (0.0 < float(ps) < 1.0):
        raise DataError(f"{where}: prob_star={float(ps)} is not in (0, 1)")
    if np.any(r_var <= 0) or np.any(sv <= 0):
        raise DataError(f"{where}: r_var and shape_var must be positive")
    if np.any(w < 0) or np.any(np.abs(w.sum(axis=1) - 1.0) > 1e-6):
        raise DataError(f"{where}: colour_weight must be non-negative and sum to 1 per type")
    for t in range(2):
        for j in range(k):
            cj = c[t, j]
            if np.max(np.abs(cj - cj.T)) > 1e-9 * max(1.0, np.max(np.abs(cj))):
                raise DataError(f"{where}: colour_cov[{t}][{j}] is not symmetric")
            try:
                np.linalg.cholesky(cj)
            except np.linalg.LinAlgError:
                raise DataError(f"{where}: colour_cov[{t}][{j}] is not positive definite") from None
    prov = d.get("provenance", {})
    return Priors(
        prob_star=float(ps),
        r_mean=r_mean,
        r_var=r_var,
        colour_k=ck.astype(np.int64),
        colour_weight=w,
        colour_mean=m,
        colour_cov=c,
        shape_mean=sm,
        shape_var=sv,
        provenance=prov if isinstance(prov, dict) else {},
        path=str(where) if where != "<dict>" else "",
    )


def load_priors(path=None):
    """Read and validate priors from JSON.

    Parameters
    ----------
    path : str or path-like, optional
        A priors JSON file; by default the package's ``celeste/data/priors.json``.

    Returns
    -------
    Priors

    Raises
    ------
    DataError
        If the file is missing, not JSON, or fails validation (message names the file).
    """
    if path is None:
        ref = resources.files("celeste") / "data" / "priors.json"
        where = str(ref)
        try:
            text = ref.read_text(encoding="utf-8")
        except OSError as e:
            raise DataError(f"{where}: cannot read the package priors ({e.strerror or e})") from None
    else:
        where = os.fspath(path)
        try:
            text = Path(where).read_text(encoding="utf-8")
        except OSError as e:
            raise DataError(f"{where}: cannot read priors ({e.strerror or e})") from None
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: not valid JSON ({e.msg} at line {e.lineno})") from None
    return priors_from_dict(d, where)


def save_priors(priors, path):
    """Write priors as JSON (numbers at full float64 precision via ``repr``).

    Raises
    ------
    DataError
        If the file cannot be written (message names it).
    """
    text = json.dumps(priors.to_dict(), indent=1) + "\n"
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as e:
        raise DataError(f"{path}: cannot write priors ({e.strerror or e})") from None
