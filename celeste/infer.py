"""Inference for one box: model set-up, block-coordinate Newton passes, CYCLADES threads.

Given the images that cover a box (cutouts of its extended region) and an initial
catalog, :class:`BoxModel` builds, for every source,

* its *anchor* (the initial sky position) and, in every image, the anchor's pixel
  position and the local Jacobian d(x, y)/d(east, north) (pixels per arcsec), from
  the image's WCS (:func:`celeste.tangent.sky_to_pixel_jacobian`);
* its *active pixels*: the unmasked pixels within the radius :func:`active_radius_px`
  of the anchor, where its expected light is not negligible against the sky noise;

and keeps per image the total expected light E[G] and its variance Var[G] of all
sources (nanomaggies per pixel).  A source's update reads its background
(sky + everyone else's light) off these totals, runs the numba Newton optimizer
(:func:`kernels.newton.fit_source`) without the GIL, and writes its new light back.

Sources *conflict* when their active pixels overlap in some image.  Each pass visits the
sources in a seeded random order, cut into batches of ``batch_size``; within a batch,
the connected components of the conflict graph are independent (they touch disjoint
pixels), so ``threads`` workers update whole components concurrently (CYCLADES, Pan et
al., NIPS 2016).  Components of one batch never read what another writes, and the
batches and their order depend only on the seed, so the result is bit-for-bit the same
for any number of threads.

Passes repeat until no source's ELBO moves by more than ``pass_tol`` nats or
``max_passes`` is reached.
"""
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from kernels import params as P
from kernels.inputs import N_IMG_COLS, N_PIX_COLS, PIX_BGE, PIX_BGV, make_problem, make_settings, prior_from_arrays
from kernels.light import source_light
from kernels.newton import INFO_CONVERGED, INFO_ELBO, INFO_GNORM, INFO_ITERS, N_INFO, fit_source, optimize_source, source_elbo
from kernels.profiles import prototype_array
from kernels.uncertainty import log_flux_sd, lrvb_covariance

from . import ARCSEC_PER_DEG
from .errors import NumericalError
from .options import InferOptions
from .tangent import sky_to_pixel_jacobian

log = logging.getLogger("celeste.infer")




def active_radius_px(flux_nmgy, sky_sd_nmgy, psf_weight, psf_sigma_px, gal_sigma_px, eps, r_min, r_max):
    """Radius (pixels) within which a source's light matters.

    Each PSF component k (weight w_k, width s_k; s_k^2 grown by the galaxy's sigma^2) of
    a source of flux f puts f w_k / (2 pi s_k^2) exp(-r^2 / 2 s_k^2) nmgy in a pixel at
    distance r; the radius is the largest r where some component still exceeds ``eps``
    times the per-pixel sky noise, plus 3 galaxy sigmas for the heavy de Vaucouleurs
    wings, clipped to [r_min, r_max].  The wide, faint PSF components set the radius of
    bright stars.

    Parameters
    ----------
    flux_nmgy, sky_sd_nmgy : float
        Source flux and sky noise per pixel (nmgy).
    psf_weight, psf_sigma_px : ndarray (K,)
        PSF mixture weights and widths (pixels; sqrt of the mean of the two variances).
    gal_sigma_px : float
        Galaxy size (pixels; 0 for stars).
    eps, r_min, r_max : float

    Returns
    -------
    float
    """
    w = np.atleast_1d(np.asarray(psf_weight, float))
    s2 = np.atleast_1d(np.asarray(psf_sigma_px, float)) ** 2 + gal_sigma_px ** 2
    peak = max(float(flux_nmgy), 0.0) * w / (2 * np.pi * s2)
    ratio = np.maximum(peak / (eps * sky_sd_nmgy), 1.0)
    r = float(np.max(np.sqrt(2 * s2 * np.log(ratio)))) + 3.0 * gal_sigma_px
    return float(np.clip(r, r_min, r_max))


def init_params(row, bands_present=None):
    """Initial unconstrained parameters ``params`` (27,) from an initial-catalog row.

    Uses ``flux_<b>`` (nmgy; non-positive or missing values are filled from the r flux
    with zero colours), ``is_star_guess``, and the shape ``a``, ``b`` (arcsec),
    ``theta`` (deg east of north) when present.  Variances start at 0.01 (ln flux).
    """
    x = np.zeros(P.N_PARAMS)
    fl = np.full(5, np.nan)
    for b, name in enumerate("ugriz"):
        key = f"flux_{name}"
        if key in row.colnames:
            fl[b] = float(row[key])
    r = fl[2] if np.isfinite(fl[2]) and fl[2] > 0 else np.nanmax(np.where(fl > 0, fl, np.nan)) if np.any(fl > 0) else 1.0
    r = max(r, 0.05)
    fl = np.where(np.isfinite(fl) & (fl > 0.02 * r), fl, np.nan)
    lnf = np.log(fl)
    lnf[2] = np.log(r)
    cols = np.zeros(4)
    for j in range(4):
        if np.isfinite(lnf[j]) and np.isfinite(lnf[j + 1]):
            cols[j] = np.clip(lnf[j + 1] - lnf[j], -3.0, 3.0)
    for t in range(2):
        x[P.R_MEAN[t]] = np.log(r)
        x[P.R_LOGVAR[t]] = np.log(0.01)
        x[P.C_MEAN[t]:P.C_MEAN[t] + 4] = cols
        x[P.C_LOGVAR[t]:P.C_LOGVAR[t] + 4] = np.log(0.01)
    p = float(row["is_star_guess"]) if "is_star_guess" in row.colnames else 0.5
    p = min(max(p, 0.02), 0.98)
    x[P.A_STAR] = np.log(p / (1 - p))
    a = float(row["a"]) if "a" in row.colnames else 1.0
    b = float(row["b"]) if "b" in row.colnames else 1.0
    pa = float(row["theta"]) if "theta" in row.colnames else 0.0
    a = a if np.isfinite(a) and a > 0 else 1.0
    b = b if np.isfinite(b) and b > 0 else a
    q = min(max(b / a, 0.1), 0.95)
    x[P.E_DEV] = 0.0
    x[P.E_AXIS] = np.log(q / (1 - q))
    x[P.E_ANGLE] = np.radians(pa if np.isfinite(pa) else 0.0)
    # SEP's a is an RMS width; a half-light radius of an exponential disc is ~1.7 of it
    x[P.E_SCALE] = np.log(min(max(1.2 * a, 0.3), 10.0))
    return x


class BoxModel:
    """The sources and images of one box, and their optimization.

    Parameters
    ----------
    images : list of celeste.images.Image
        Cutouts covering the box's extended region (any bands, any fields).
    psf_mixtures : list of ndarray (K, 6)
        The PSF mixture of each image (:meth:`celeste.psf.PsfMixture.as_array`).
    catalog : astropy.table.Table
        Initial catalog: ``ra``, ``dec`` (deg), ``objid`` (int64) and the columns
        :func:`init_params` reads.  Every row is optimized; which rows are reported is
        decided by the caller.
    priors : celeste.priors.Priors
    options : celeste.options.InferOptions
    params0 : list of (ndarray (27,) or None), optional
        Parameters of sources already optimized (warm start), None for new ones.
    """

    def __init__(self, images, psf_mixtures, catalog, priors, options=None, params0=None):
        self.options = options or InferOptions()
        self.images = images
        self.catalog = catalog
        self.n_src = len(catalog)
        K = max(m.shape[0] for m in psf_mixtures)
        self.psf = np.zeros((len(images), K, 6))
        for n, m in enumerate(psf_mixtures):
            self.psf[n, :m.shape[0]] = m
            self.psf[n, m.shape[0]:, 3] = 1.0  # zero-weight padding with a valid covariance
            self.psf[n, m.shape[0]:, 5] = 1.0
        self.proto = prototype_array()
        self.prior = prior_from_arrays(priors.as_arrays())
        self.settings = make_settings(self.options.max_iter, self.options.f_tol, self.options.g_tol)
        #: (n_src, 27) unconstrained parameters of every source (:mod:`kernels.params`)
        self.params = np.array([init_params(catalog[i]) for i in range(self.n_src)]).reshape(self.n_src, P.N_PARAMS)
        #: sources already optimized (warm start): their first update is a single Newton run
        self.fitted = np.zeros(self.n_src, dtype=bool)
        if params0 is not None:
            for i, x in enumerate(params0):
                if x is not None:
                    self.params[i] = x
                    self.fitted[i] = True
        self.anchor = np.stack([np.asarray(catalog["ra"], float), np.asarray(catalog["dec"], float)], axis=1)
        self.info = np.zeros((self.n_src, N_INFO))
        self.seconds = np.zeros(self.n_src)  # optimizer wall time per source, summed over passes
        self.elbo = np.full(self.n_src, -np.inf)
        #: the last update met a non-finite ELBO at its start (:meth:`update_source`)
        self.numerical = np.zeros(self.n_src, dtype=bool)
        self.passes_done = 0
        # per-image arrays
        self.sky = [np.asarray(im.sky, float) for im in images]
        self.iota = [np.broadcast_to(np.asarray(im.iota, float)[None, :], im.shape) for im in images]
        self.counts = [np.asarray(im.counts, float) for im in images]
        self.good = [~np.asarray(im.mask, bool) & np.isfinite(im.counts) for im in images]
        self.E_tot = [np.zeros(im.shape) for im in images]
        self.V_tot = [np.zeros(im.shape) for im in images]
        self._build_sources()

    # ---------------------------------------------------------------- set-up
    def _psf_components(self, n):
        """Weights and widths (pixels) of image n's PSF components."""
        m = self.psf[n]
        return m[:, 0].copy(), np.sqrt(0.5 * (m[:, 3] + m[:, 5]))

    def _build_sources(self):
        opt = self.options
        n_img = len(self.images)
        ns = self.n_src
        self.src_img = [[] for _ in range(ns)]   # image indices with active pixels
        self.src_flat = [[] for _ in range(ns)]  # flat pixel indices in those images
        self.src_imgrow = [[] for _ in range(ns)]  # img-table rows (N_IMG_COLS,)
        self.src_radius = np.zeros((ns, n_img))
        for n, im in enumerate(self.images):
            H, W = im.shape
            xy, jac = sky_to_pixel_jacobian(im.wcs, self.anchor[:, 0], self.anchor[:, 1])
            band = im.band
            psf_w, psf_sig = self._psf_components(n)
            px_arcsec = 1.0 / math.sqrt(abs(np.linalg.det(jac.mean(axis=0))))
            sky_sd = np.sqrt(np.median(self.sky[n]) / np.median(self.iota[n]))
            for s in range(ns):
                x = self.params[s]
                t_flux = math.exp(x[P.R_MEAN[0]] + P.COLOUR_TO_BAND[band] @ x[P.C_MEAN[0]:P.C_MEAN[0] + 4])
                chi = P.sigmoid(x[P.A_STAR])
                gal_sig = 0.0 if chi > 0.8 else math.exp(x[P.E_SCALE]) / px_arcsec
                r = active_radius_px(t_flux, sky_sd, psf_w, psf_sig, gal_sig, opt.active_eps, opt.min_radius_px,
                                     opt.max_radius_px)
                x0, y0 = xy[s]
                if not (np.isfinite(x0) and np.isfinite(y0)):
                    continue
                xa, xb = int(max(math.floor(x0 - r), 0)), int(min(math.ceil(x0 + r) + 1, W))
                ya, yb = int(max(math.floor(y0 - r), 0)), int(min(math.ceil(y0 + r) + 1, H))
                if xa >= xb or ya >= yb:
                    continue
                yy, xx = np.mgrid[ya:yb, xa:xb]
                sel = ((xx - x0) ** 2 + (yy - y0) ** 2 <= r * r) & self.good[n][ya:yb, xa:xb]
                if not sel.any():
                    continue
                flat = (yy[sel] * W + xx[sel]).astype(np.int64)
                self.src_img[s].append(n)
                self.src_flat[s].append(flat)
                self.src_imgrow[s].append([band, x0, y0, jac[s, 0, 0], jac[s, 0, 1], jac[s, 1, 0], jac[s, 1, 1]])
                self.src_radius[s, n] = r
        # static pixel tables and the neighbour (conflict) graph
        self.src_pix = []
        self.src_imgtab = []
        self.src_psf = []
        owners = [dict() for _ in range(n_img)]
        for s in range(ns):
            rows = []
            for k, (n, flat) in enumerate(zip(self.src_img[s], self.src_flat[s])):
                W = self.images[n].shape[1]
                tab = np.empty((len(flat), N_PIX_COLS))
                tab[:, 0] = k
                tab[:, 1] = flat % W
                tab[:, 2] = flat // W
                tab[:, 3] = self.counts[n].ravel()[flat]
                tab[:, 4] = self.iota[n].ravel()[flat]
                rows.append(tab)
            self.src_pix.append(np.ascontiguousarray(np.concatenate(rows)) if rows else np.zeros((0, N_PIX_COLS)))
            self.src_imgtab.append(np.ascontiguousarray(np.array(self.src_imgrow[s], float).reshape(-1, N_IMG_COLS)))
            self.src_psf.append(np.ascontiguousarray(self.psf[self.src_img[s]]))
        # conflict graph: sources sharing any active pixel (pairs found by sorting (pixel, source))
        self.neighbours = [set() for _ in range(ns)]
        for n in range(n_img):
            pix_l, src_l = [], []
            for s in range(ns):
                for nn, flat in zip(self.src_img[s], self.src_flat[s]):
                    if nn == n:
                        pix_l.append(flat)
                        src_l.append(np.full(len(flat), s, np.int64))
            if not pix_l:
                continue
            pp = np.concatenate(pix_l)
            ss = np.concatenate(src_l)
            order = np.lexsort((ss, pp))
            pp, ss = pp[order], ss[order]
            starts = np.flatnonzero(np.r_[True, pp[1:] != pp[:-1]])
            counts = np.diff(np.r_[starts, len(pp)])
            pairs = set()
            for st, c in zip(starts[counts > 1], counts[counts > 1]):
                group = ss[st:st + c]
                for i in range(c):
                    for j in range(i + 1, c):
                        pairs.add((int(group[i]), int(group[j])))
            for a, b in pairs:
                self.neighbours[a].add(b)
                self.neighbours[b].add(a)
        for s in range(ns):
            self.neighbours[s].discard(s)
        self.src_eg = [None] * ns
        self.src_vg = [None] * ns
        self.no_pixels = np.array([len(p) == 0 for p in self.src_pix])
        # initial light of everyone: kernels in parallel (no GIL), then the sums in order
        lights = self._map(lambda s: self._light(s, self.params[s]), range(ns))
        for s, (eg, vg) in enumerate(lights):
            self._add_light(s, eg, vg)

    def _map(self, fn, items):
        """``[fn(i) for i in items]``, on ``options.threads`` threads when there are several."""
        items = list(items)
        if self.options.threads > 1 and len(items) > 1:
            with ThreadPoolExecutor(max_workers=self.options.threads) as pool:
                return list(pool.map(fn, items))
        return [fn(i) for i in items]

    # ---------------------------------------------------------------- light bookkeeping
    def _problem(self, s, pix):
        """Source s's pixel problem (checked once here; :func:`kernels.inputs.make_problem`)."""
        return make_problem(pix, self.src_imgtab[s], self.src_psf[s], self.proto)

    def _light(self, s, x):
        """E[G], Var[G] (n_pix,) of source s with parameters ``x`` on its active pixels."""
        pix = self.src_pix[s]
        eg = np.zeros(len(pix))
        vg = np.zeros(len(pix))
        if len(pix):
            source_light(x, self._problem(s, pix), eg, vg)
        return eg, vg

    def _set_light(self, s, x):
        eg, vg = self._light(s, x)
        self._add_light(s, eg, vg)

    def _add_light(self, s, eg, vg):
        """Replace source s's light in the per-image totals by ``eg``, ``vg``."""
        off = 0
        for n, flat in zip(self.src_img[s], self.src_flat[s]):
            m = len(flat)
            E = self.E_tot[n].ravel()
            V = self.V_tot[n].ravel()
            if self.src_eg[s] is not None:
                E[flat] -= self.src_eg[s][off:off + m]
                V[flat] -= self.src_vg[s][off:off + m]
            E[flat] += eg[off:off + m]
            V[flat] += vg[off:off + m]
            off += m
        self.src_eg[s] = eg
        self.src_vg[s] = vg

    def _pixels_with_background(self, s):
        pix = self.src_pix[s].copy()
        off = 0
        for n, flat in zip(self.src_img[s], self.src_flat[s]):
            m = len(flat)
            pix[off:off + m, PIX_BGE] = (self.sky[n].ravel()[flat] + self.E_tot[n].ravel()[flat]
                                         - self.src_eg[s][off:off + m])
            pix[off:off + m, PIX_BGV] = np.maximum(self.V_tot[n].ravel()[flat] - self.src_vg[s][off:off + m], 0.0)
            off += m
        return pix

    # ---------------------------------------------------------------- optimization
    def update_source(self, s, first):
        """Optimize source s with its neighbours fixed; returns its ELBO change (nats).

        A source whose ELBO is not finite where the optimizer starts (:class:`NumericalError`
        from :meth:`_optimize`) keeps its parameters and light, is logged and flagged
        (``numerical`` in :meth:`source_results`, catalog flag 32); the box goes on.
        """
        if self.no_pixels[s]:
            return 0.0
        try:
            x, f, info = self._optimize(s, first)
        except NumericalError as exc:
            log.warning("%s", exc)
            self.numerical[s] = True
            return 0.0
        self.numerical[s] = False
        old = self.elbo[s]
        self.params[s] = x
        self.info[s] = info
        self.elbo[s] = f
        self._set_light(s, x)
        return abs(f - old) if np.isfinite(old) else np.inf

    def _optimize(self, s, first):
        """Run the Newton optimizer on source s (both type starts on its first update).

        Returns the new parameters (27,), the ELBO (nats) and the optimizer's info vector.

        Raises
        ------
        NumericalError
            If the ELBO is not finite at the starting point (the optimizer then moves nowhere).
        """
        problem = self._problem(s, self._pixels_with_background(s))
        x = self.params[s].copy()
        info = np.zeros(N_INFO)
        t0 = time.perf_counter()
        if first and not self.fitted[s]:
            f = fit_source(x, problem, self.prior, self.settings, info)
        else:
            f = optimize_source(x, problem, self.prior, self.settings, info)
        self.seconds[s] += time.perf_counter() - t0
        if not np.isfinite(f):
            ra, dec = self.anchor[s]
            objid = self.catalog["objid"][s] if "objid" in self.catalog.colnames else s
            raise NumericalError(f"source {objid} at RA {ra:.6f} Dec {dec:.6f}: ELBO {f} at its starting point; "
                                 f"parameters left unchanged (flag 32)")
        return x, f, info

    def _components(self, batch):
        """Connected components of the conflict graph restricted to ``batch`` (ordered lists)."""
        inb = {s: i for i, s in enumerate(batch)}
        parent = list(range(len(batch)))

        def find(i):
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for i, s in enumerate(batch):
            for t in self.neighbours[s]:
                j = inb.get(t)
                if j is not None:
                    ri, rj = find(i), find(j)
                    if ri != rj:
                        parent[max(ri, rj)] = min(ri, rj)
        comps = {}
        for i, s in enumerate(batch):
            comps.setdefault(find(i), []).append(s)
        return [comps[k] for k in sorted(comps)]

    def run(self, progress=None):
        """Block-coordinate passes until converged; returns the number of passes."""
        opt = self.options
        rng = np.random.default_rng(opt.seed)
        pool = ThreadPoolExecutor(max_workers=opt.threads) if opt.threads > 1 else None
        try:
            for it in range(opt.max_passes):
                first = it == 0
                order = rng.permutation(self.n_src)
                if first:
                    # brightest first on the first pass: their light dominates their neighbours'
                    order = np.argsort(-self.params[:, P.R_MEAN[0]], kind="stable")
                    self._first_pass = True
                deltas = np.zeros(self.n_src)
                t0 = time.time()
                n_batches = max(1, -(-self.n_src // opt.batch_size))
                for chunk in np.array_split(order, n_batches):  # near-equal batches: no tiny last batch
                    batch = [int(s) for s in chunk]
                    comps = self._components(batch)
                    if pool:
                        # largest expected cost first, so the threads finish together (the components are
                        # independent, so the order does not change the result)
                        cost = [sum(len(self.src_pix[s]) * (2 if first and not self.fitted[s] else 1) for s in c)
                                for c in comps]
                        comps = [comps[i] for i in np.argsort(cost, kind="stable")[::-1]]

                    def work(comp, first=first):
                        return [(s, self.update_source(s, first)) for s in comp]

                    results = pool.map(work, comps) if pool else map(work, comps)
                    for res in results:
                        for s, d in res:
                            deltas[s] = d
                    if progress is not None:
                        progress(len(batch))
                self.passes_done = it + 1
                dmax = float(np.max(deltas)) if self.n_src else 0.0
                log.info("pass %d: %d sources, max |dELBO| %.3g, %.1f s", it + 1, self.n_src, dmax, time.time() - t0)
                if dmax < opt.pass_tol:
                    break
        finally:
            if pool:
                pool.shutdown()
        return self.passes_done

    # ---------------------------------------------------------------- results
    def positions(self):
        """Current posterior positions: dict with ``ra``, ``dec`` (n,) in degrees."""
        dec0 = self.anchor[:, 1]
        dec = dec0 + self.params[:, P.U_NORTH] / ARCSEC_PER_DEG
        ra = (self.anchor[:, 0] + self.params[:, P.U_EAST] / ARCSEC_PER_DEG / np.cos(np.radians(dec0))) % 360.0
        return {"ra": ra, "dec": dec}

    def source_results(self):
        """Per-source posterior summaries (dict of arrays, one entry per catalog row).

        Keys: ``ra``, ``dec`` (deg), ``ra_sd``, ``dec_sd`` (arcsec, linear response),
        ``is_star``, ``flux`` (n, 5) nmgy (posterior mean under the more probable type),
        ``flux_sd`` (n, 5) nmgy, ``gal_frac_dev``, ``gal_axis_ratio``, ``gal_angle_deg``
        ([0, 180) east of north), ``gal_radius_arcsec`` (circularized: re sqrt(q)),
        ``elbo``, ``n_iter``, ``converged``, ``grad_max``, ``no_pixels``, ``numerical`` (bool: the
        ELBO was not finite at the last update's start), ``opt_seconds``, ``n_pixels``, ``params`` (n, 27).
        """
        ns = self.n_src
        out = {k: np.full(ns, np.nan) for k in ("ra", "dec", "ra_sd", "dec_sd", "is_star", "gal_frac_dev",
                                                 "gal_axis_ratio", "gal_angle_deg", "gal_radius_arcsec", "elbo",
                                                 "grad_max")}
        out["flux"] = np.full((ns, 5), np.nan)
        out["flux_sd"] = np.full((ns, 5), np.nan)
        out["n_iter"] = self.info[:, INFO_ITERS].astype(np.int32)
        out["converged"] = self.info[:, INFO_CONVERGED].astype(bool)
        out["no_pixels"] = self.no_pixels.copy()
        out["numerical"] = self.numerical.copy()
        out["opt_seconds"] = self.seconds.copy()
        out["n_pixels"] = np.array([len(p) for p in self.src_pix], dtype=np.int32)
        def hessian(s):
            if self.no_pixels[s]:
                return None
            g = np.zeros(P.N_PARAMS)
            H = np.zeros((P.N_PARAMS, P.N_PARAMS))
            source_elbo(self.params[s], self._problem(s, self._pixels_with_background(s)), self.prior, 2, g, H)
            return H

        hessians = self._map(hessian, range(ns))
        for s in range(ns):
            x = self.params[s]
            ra0, dec0 = self.anchor[s]
            out["dec"][s] = dec0 + x[P.U_NORTH] / ARCSEC_PER_DEG
            out["ra"][s] = (ra0 + x[P.U_EAST] / ARCSEC_PER_DEG / math.cos(math.radians(dec0))) % 360.0
            chi = P.sigmoid(x[P.A_STAR])
            out["is_star"][s] = chi
            t = P.STAR if chi >= 0.5 else P.GAL
            base = P.R_MEAN[t]
            mean = x[base] + P.COLOUR_TO_BAND @ x[P.C_MEAN[t]:P.C_MEAN[t] + 4]
            var = math.exp(x[P.R_LOGVAR[t]]) + (P.COLOUR_TO_BAND ** 2) @ np.exp(x[P.C_LOGVAR[t]:P.C_LOGVAR[t] + 4])
            flux = np.exp(mean + 0.5 * var)
            out["flux"][s] = flux
            q = P.sigmoid(x[P.E_AXIS])
            out["gal_frac_dev"][s] = P.sigmoid(x[P.E_DEV])
            out["gal_axis_ratio"][s] = q
            out["gal_angle_deg"][s] = math.degrees(x[P.E_ANGLE]) % 180.0
            out["gal_radius_arcsec"][s] = math.exp(x[P.E_SCALE]) * math.sqrt(q)
            out["elbo"][s] = self.info[s, INFO_ELBO]
            out["grad_max"][s] = self.info[s, INFO_GNORM]
            if self.no_pixels[s]:
                continue
            H = hessians[s]
            idx, cov = lrvb_covariance(H, t)
            sd_ln = log_flux_sd(x, H, t)
            # lognormal: sd of f given sd of ln f (the VI variance adds in quadrature)
            tot = sd_ln ** 2 + var
            out["flux_sd"][s] = flux * np.sqrt(np.expm1(tot))
            out["ra_sd"][s] = math.sqrt(cov[0, 0]) if np.isfinite(cov[0, 0]) else np.nan
            out["dec_sd"][s] = math.sqrt(cov[1, 1]) if np.isfinite(cov[1, 1]) else np.nan
        out["params"] = self.params.copy()
        return out

    def residual_stats(self, inside):
        """Sum of squared residuals (x - F) / sqrt(F) and pixel counts per band.

        Parameters
        ----------
        inside : callable (ra, dec) -> bool array
            Selects the pixels to count (e.g. the box core within the region).

        Returns
        -------
        rss, npix : ndarray (5,)
            Over unmasked pixels whose centres satisfy ``inside``; the residual sd of band b
            is sqrt(rss[b] / npix[b]).  The model includes every source of the box.
        """
        rss = np.zeros(5)
        npix = np.zeros(5)
        for n, im in enumerate(self.images):
            H, W = im.shape
            yy, xx = np.mgrid[0:H, 0:W]
            ra, dec = im.wcs.all_pix2world(xx.ravel(), yy.ravel(), 0)
            sel = np.asarray(inside(ra, dec), bool).reshape(H, W) & self.good[n]
            r = self.residual_image(n)[sel]
            r = r[np.isfinite(r)]
            rss[im.band] += float(np.sum(r * r))
            npix[im.band] += r.size
        return rss, npix

    def residual_peaks(self, band=2, snr=6.0, min_sep_px=2.0, contrast=1.0):
        """Unmodelled point sources: peaks of the PSF-matched residual of every image in ``band``.

        For image n, R = (x - F) / iota (nmgy) and V = F / iota^2 its variance; with the PSF
        stamp p of the image (the mixture rendered on a 15 x 15 grid), the matched-filter
        significance is S = (R * p) / sqrt(V * p^2) (* = correlation), and
        f = (R * p) / sum p^2 the flux of a point source at that pixel.  A peak is a pixel
        where S > ``snr`` and S is the 3 x 3 maximum, farther than ``min_sep_px`` from every
        modelled source, whose f exceeds ``contrast`` times the same estimate from the model
        light there (PSF-shaped residuals of bright stars are not new sources).  Its position
        is refined by a parabola through the 3 x 3 neighbourhood of S.

        Returns
        -------
        ra, dec, flux : ndarray (m,)
            Degrees, degrees, nmgy (in ``band``).
        """
        from scipy.ndimage import correlate, maximum_filter

        from .psf import PsfMixture, psf_mixture_image

        out_ra, out_dec, out_f = [], [], []
        res = self.positions()
        for n, im in enumerate(self.images):
            if im.band != band:
                continue
            m = self.psf[n]
            mix = PsfMixture(weight=m[:, 0], mean=m[:, 1:3],
                             cov=np.stack([np.stack([m[:, 3], m[:, 4]], -1), np.stack([m[:, 4], m[:, 5]], -1)], 1))
            p = psf_mixture_image(mix, (15, 15))
            F = self.model_image(n)
            iota = self.iota[n]
            good = self.good[n]
            R = np.where(good, (self.counts[n] - F) / iota, 0.0)
            V = np.where(good, F / iota ** 2, 0.0)
            num = correlate(R, p, mode="constant")
            den = np.sqrt(np.maximum(correlate(V, p * p, mode="constant"), 1e-30))
            S = num / den
            flux = num / np.sum(p * p)
            mflux = correlate(self.E_tot[n], p, mode="constant") / np.sum(p * p)
            peak = (S > snr) & (S == maximum_filter(S, size=3)) & good & (flux > contrast * mflux)
            H, W = S.shape
            peak[:2, :] = peak[-2:, :] = False
            peak[:, :2] = peak[:, -2:] = False
            ys, xs = np.nonzero(peak)
            if len(xs) == 0:
                continue
            sx, sy = im.wcs.all_world2pix(res["ra"], res["dec"], 0)
            from scipy.spatial import cKDTree

            keep = np.ones(len(xs), bool)
            known = np.stack([sx, sy], 1)
            known = known[np.all(np.isfinite(known), axis=1)]
            if len(known):
                d, _ = cKDTree(known).query(np.stack([xs, ys], 1))
                keep &= d > min_sep_px
            xs, ys = xs[keep], ys[keep]
            # sub-pixel refinement
            fx = np.zeros(len(xs))
            fy = np.zeros(len(xs))
            for i, (x, y) in enumerate(zip(xs, ys)):
                c, l, r_ = S[y, x], S[y, x - 1], S[y, x + 1]
                dn, up = S[y - 1, x], S[y + 1, x]
                den_x = l - 2 * c + r_
                den_y = dn - 2 * c + up
                fx[i] = np.clip(0.5 * (l - r_) / den_x, -0.5, 0.5) if den_x < 0 else 0.0
                fy[i] = np.clip(0.5 * (dn - up) / den_y, -0.5, 0.5) if den_y < 0 else 0.0
            ra, dec = im.wcs.all_pix2world(xs + fx, ys + fy, 0)
            out_ra.append(ra)
            out_dec.append(dec)
            out_f.append(flux[ys, xs])
        if not out_ra:
            return np.zeros(0), np.zeros(0), np.zeros(0)
        ra, dec, f = np.concatenate(out_ra), np.concatenate(out_dec), np.concatenate(out_f)
        # peaks from overlapping images of the same band: keep the first within min_sep
        order = np.lexsort((dec, ra))
        ra, dec, f = ra[order], dec[order], f[order]
        if len(ra) > 1:
            from scipy.spatial import cKDTree

            cosd = np.cos(np.radians(np.median(dec)))
            pts = np.stack([ra * cosd, dec], 1) * ARCSEC_PER_DEG
            pairs = cKDTree(pts).query_pairs(0.8, output_type="ndarray")
            drop = np.zeros(len(ra), bool)
            if len(pairs):
                drop[np.maximum(pairs[:, 0], pairs[:, 1])] = True
            ra, dec, f = ra[~drop], dec[~drop], f[~drop]
        return ra, dec, f

    def model_image(self, n):
        """Expected counts F = iota (sky + sum E[G]) of image n (electrons), shape (H, W)."""
        return self.iota[n] * (self.sky[n] + self.E_tot[n])

    def residual_image(self, n):
        """(x - F) / sqrt(F) for image n; NaN on masked pixels."""
        F = self.model_image(n)
        r = (self.counts[n] - F) / np.sqrt(F)
        return np.where(self.good[n], r, np.nan)
