"""Speed of the ELBO kernels and of the per-source optimizer; JAX as the baseline.

Run from the project root::

    python bench/kernels.py                 # everything, including a real-field run (~minutes)
    python bench/kernels.py --quick         # CI smoke: fewer repetitions, no real-field run
    python bench/kernels.py --catalog X.fits  # read opt_seconds from an existing catalog
    python bench/kernels.py --clock cpu     # report process CPU time (shared, loaded machine)

Measured (one core; the numba kernels are serial, JAX is restricted to one thread):

(a) nanoseconds per (active pixel, band) -- one row of the kernel's pixel table -- for the
    value, gradient and Hessian of :func:`kernels.newton.source_elbo` (mode 2), for a star
    (logit q(star) = +8) and a galaxy (-8).  Problem: 5 bands x 25 x 25 pixels around the
    source, K = 3 PSF components fitted (:func:`celeste.psf.fit_psf_mixture`) to the real
    SDSS PSF of field 2583-2-136 at (x, y) = (1024, 744), the package's galaxy prototypes
    (:func:`kernels.profiles.prototype_array`) and priors (:func:`celeste.priors.load_priors`),
    counts drawn (Poisson) from the model with SDSS-like sky and gain.  Timing: median over
    repeated blocks of calls (``time.perf_counter``) after warm-up.
(b) Newton iterations and wall time per source: :func:`kernels.newton.fit_source` (both
    type starts) on that problem, over several noise seeds, from a perturbed truth, with the
    pipeline's stopping rules (:class:`celeste.infer.InferOptions`).
(c) The same ELBO in ``jax.numpy`` (``celeste/jax_elbo.py``), value + ``jax.grad`` +
    ``jax.hessian`` under ``jax.jit``, per evaluation on the same problem; the ratio JAX / ours.
    JAX is optional (``pip install -e .[bench]``); without it the ratio prints as nan.
(d) Median (and 95th percentile) seconds per source on a real-field sample: the catalog
    column ``opt_seconds`` (optimizer wall time per source, all passes) of
    ``celeste-infer --region ... --threads 1``.

A profile of where the kernel's time goes follows (a): value-only and gradient-only modes,
the likelihood and the KL alone, the star part alone (galaxy prototypes zeroed), K = 2, 3
and 4 PSF components (the pipeline fits ``--psf-components``, default 4), and the
fraction of galaxy bivariate-normal evaluations the kernel skips (quadratic form >
``kernels.elbo.Q_SKIP``).

Wall time (``time.perf_counter``) is the default clock; on a machine shared with other jobs
it overstates our cost by the load factor, so the CPU time (``time.process_time``, all of the
process's threads) is printed next to it and ``--clock cpu`` makes it the reported figure (the
real-field median is then scaled by the celeste-infer run's CPU share of its wall time, a
rough correction since ``opt_seconds`` is wall time).

The last line printed is
``RESULT ns_per_pixel_star=... ns_per_pixel_gal=... jax_ratio=... median_s_per_source=...``.
Targets (issue): jax_ratio >= 10; median_s_per_source <= 0.1 (Celeste.jl: 0.81 s).
"""
import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

# This file is named like the ``kernels`` package: make sure the package wins.
_HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(_HERE)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
sys.path.insert(0, ROOT)
# JAX on one thread, like the numba kernel (must be set before jax is imported).
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import numpy as np  # noqa: E402

from celeste.infer import InferOptions  # noqa: E402
from celeste.priors import load_priors  # noqa: E402
from celeste.psf import fit_psf_mixture  # noqa: E402
from celeste.sdss import ARCSEC_PER_PX, read_psfield  # noqa: E402
from kernels import params as P  # noqa: E402
from kernels.elbo import source_loglik  # noqa: E402
from kernels.inputs import (N_IMG_COLS, PIX_BGE, PIX_COUNTS, PIX_IOTA, make_problem, make_settings,  # noqa: E402
                            prior_from_arrays)
from kernels.kl import source_kl  # noqa: E402
from kernels.light import Q_SKIP, source_light  # noqa: E402
from kernels.profiles import prototype_array  # noqa: E402
from kernels.bvn import bvn_log_derivs  # noqa: E402
from kernels.config import kernel  # noqa: E402
from kernels.newton import INFO_CONVERGED, INFO_EVALS, INFO_ITERS, N_INFO, fit_source, source_elbo  # noqa: E402

PSFIELD = os.path.join(ROOT, "data", "sdss", "2583", "2", "136", "psField-002583-2-0136.fits")
PSF_X, PSF_Y = 1024.0, 744.0
REGION = (323.30, 323.33, -0.70, -0.67)
HALF = 12  # 25 x 25 pixels per band
# SDSS-like per-band sky (nmgy per pixel) and electrons per nmgy (gain / nmgy-per-count)
SKY_NMGY = np.array([0.15, 0.35, 0.7, 1.1, 2.5])
IOTA = np.array([170.0, 760.0, 940.0, 700.0, 140.0])


# ------------------------------------------------------------------ problem
def real_psf(k):
    """(5, k, 6) PSF mixtures fitted to the real psField at the frame centre."""
    out = np.zeros((5, k, 6))
    for b in range(5):
        stamp = read_psfield(PSFIELD, b).psf_at(PSF_X, PSF_Y)
        out[b] = fit_psf_mixture(stamp, n_components=k).as_array()
    return out


def prior_args():
    return prior_from_arrays(load_priors().as_arrays())


def truth_theta(kind):
    """A plausible star or galaxy: r = 10 nmgy, ordinary colours; galaxy r_e = 1.5 arcsec."""
    th = np.zeros(P.N_PARAMS)
    th[P.U_EAST] = 0.1
    th[P.U_NORTH] = -0.15
    th[P.A_STAR] = 8.0 if kind == "star" else -8.0
    for t in range(2):
        th[P.R_MEAN[t]] = np.log(10.0)
        th[P.R_LOGVAR[t]] = np.log(0.01)
        th[P.C_MEAN[t]:P.C_MEAN[t] + 4] = [1.0, 0.5, 0.2, 0.1]
        th[P.C_LOGVAR[t]:P.C_LOGVAR[t] + 4] = np.log(0.01)
    th[P.E_DEV] = P.logit(0.3)
    th[P.E_AXIS] = P.logit(0.6)
    th[P.E_ANGLE] = 0.7
    th[P.E_SCALE] = np.log(1.5)
    return th


def make_tables(psf, half=HALF, angle=0.3):
    """Pixel table (counts zero for now) and image table: 5 bands, (2 half + 1)^2 pixels each."""
    n_img = psf.shape[0]
    img = np.zeros((n_img, N_IMG_COLS))
    c, s = np.cos(angle), np.sin(angle)
    # x grows to the west (flip), y to the north, rotated: SDSS-like orientation
    jm = (1.0 / ARCSEC_PER_PX) * np.array([[-c, -s], [-s, c]])
    side = 2 * half + 1
    yy, xx = np.mgrid[0:side, 0:side]
    rows = []
    for n in range(n_img):
        img[n] = [n, half + 0.3, half - 0.2, *jm.ravel()]
        t = np.zeros((side * side, 7))
        t[:, 0] = n
        t[:, 1] = xx.ravel()
        t[:, 2] = yy.ravel()
        t[:, PIX_IOTA] = IOTA[n]
        t[:, PIX_BGE] = SKY_NMGY[n]
        rows.append(t)
    return np.ascontiguousarray(np.concatenate(rows)), img


def render(rng, theta, pix, img, psf, proto):
    eg = np.zeros(len(pix))
    vg = np.zeros(len(pix))
    source_light(theta, make_problem(pix, img, psf, proto), eg, vg)
    out = pix.copy()
    out[:, PIX_COUNTS] = rng.poisson(out[:, PIX_IOTA] * (out[:, PIX_BGE] + eg))
    return out


# ------------------------------------------------------------------ timing
#: "wall" (time.perf_counter, the default) or "cpu" (time.process_time: this process's CPU time,
#: all threads; robust when other jobs share the cores)
CLOCK = "wall"


def time_call(fn, reps, block, both=False):
    """Median seconds per call over ``reps`` blocks of ``block`` calls, after warm-up.

    Returns the median on :data:`CLOCK`, or ``(wall, cpu)`` medians with ``both=True``.
    """
    for _ in range(3):
        fn()
    wall = []
    cpu = []
    for _ in range(reps):
        c0 = time.process_time()
        t0 = time.perf_counter()
        for _ in range(block):
            fn()
        wall.append((time.perf_counter() - t0) / block)
        cpu.append((time.process_time() - c0) / block)
    w, c = float(np.median(wall)), float(np.median(cpu))
    if both:
        return w, c
    return w if CLOCK == "wall" else c


def ours_call(theta, pix, img, psf, proto, args, mode=2):
    g = np.zeros(P.N_PARAMS)
    H = np.zeros((P.N_PARAMS, P.N_PARAMS))
    prob = make_problem(pix, img, psf, proto)
    return lambda: source_elbo(theta, prob, args, mode, g, H)


def skip_fraction(theta, pix, img, psf, proto):
    """Fraction of (pixel, galaxy component) pairs with nonzero amplitude the kernel skips."""
    Jm = img[:, 3:7].reshape(-1, 2, 2)
    q = P.sigmoid(theta[P.E_AXIS])
    phi = theta[P.E_ANGLE]
    re2 = np.exp(2 * theta[P.E_SCALE])
    a = np.array([np.sin(phi), np.cos(phi)])
    b = np.array([np.cos(phi), -np.sin(phi)])
    W = re2 * (np.outer(a, a) + q * q * np.outer(b, b))
    n_tot = n_skip = 0
    for n in range(img.shape[0]):
        sel = pix[:, 0] == n
        cpos = img[n, 1:3] + Jm[n] @ theta[:2]
        S = Jm[n] @ W @ Jm[n].T
        for p in range(2):
            for j in range(proto.shape[1]):
                if proto[p, j, 0] == 0:
                    continue
                for k in range(psf.shape[1]):
                    C = proto[p, j, 1] * S + np.array([[psf[n, k, 3], psf[n, k, 4]], [psf[n, k, 4], psf[n, k, 5]]])
                    d = pix[sel, 1:3] - (cpos + psf[n, k, 1:3])
                    qf = np.einsum("ni,ij,nj->n", d, np.linalg.inv(C), d)
                    n_tot += qf.size
                    n_skip += int(np.sum(qf > Q_SKIP))
    return n_skip / max(n_tot, 1)


@kernel
def _bvn_loop(n, g, h):
    """n calls of bvn_log_derivs on varying offsets (a micro-benchmark of the inner step)."""
    acc = 0.0
    for i in range(n):
        dx = 0.001 * (i % 997) - 0.5
        acc += bvn_log_derivs(dx, 0.3 - dx, 2.0, 0.3, 1.5, g, h) + h[2, 3]
    return acc


def bvn_ns(reps):
    g = np.zeros(5)
    h = np.zeros((5, 5))
    n = 200_000
    return time_call(lambda: _bvn_loop(n, g, h), reps, 1) / n * 1e9


def bench_kernel(kind, prob, args, reps, block, profile):
    pix, img, psf, proto = prob
    th = truth_theta(kind)
    n_rows = len(pix)
    t2w, t2c = time_call(ours_call(th, *prob, args, 2), reps, block, both=True)
    t2 = t2w if CLOCK == "wall" else t2c
    out = {"t2": t2, "t2_wall": t2w, "t2_cpu": t2c, "ns": t2 / n_rows * 1e9, "n_rows": n_rows}
    if profile:
        out["t1"] = time_call(ours_call(th, *prob, args, 1), reps, block)
        out["t0"] = time_call(ours_call(th, *prob, args, 0), reps, block)
        g = np.zeros(P.N_PARAMS)
        H = np.zeros((P.N_PARAMS, P.N_PARAMS))
        pr = make_problem(*prob)
        out["t_ll"] = time_call(lambda: source_loglik(th, pr, 2, g, H), reps, block)
        out["t_kl"] = time_call(lambda: source_kl(th, args, 2, g, H, 1.0), reps, max(block, 200))
        zero = proto.copy()
        zero[:, :, 0] = 0.0
        out["t_star_only"] = time_call(ours_call(th, pix, img, psf, zero, args, 2), reps, block)
        out["skip"] = skip_fraction(th, *prob)
    return out


def bench_newton(kind, prob, args, seeds, opts):
    pix0, img, psf, proto = prob
    truth = truth_theta(kind)
    iters, evals, secs, cpus, conv, right = [], [], [], [], [], []
    info = np.zeros(N_INFO)
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        pix = render(rng, truth, pix0, img, psf, proto)
        th = truth.copy()
        th[P.U_EAST] += 0.2
        th[P.R_MEAN] += 0.2
        th[P.A_STAR] = 0.0
        c0 = time.process_time()
        t0 = time.perf_counter()
        fit_source(th, make_problem(pix, img, psf, proto), args, make_settings(opts.max_iter, opts.f_tol, opts.g_tol),
                   info)
        secs.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        iters.append(info[INFO_ITERS])
        evals.append(info[INFO_EVALS])
        conv.append(info[INFO_CONVERGED])
        right.append((th[P.A_STAR] > 0) == (kind == "star"))
    return {"iters": float(np.median(iters)), "evals": float(np.median(evals)), "s": float(np.median(secs)),
            "cpu": float(np.median(cpus)), "conv": float(np.mean(conv)),
            "type_ok": float(np.mean(right))}


def bench_jax(kind, prob, args, reps, block):
    try:
        import jax.numpy as jnp

        from celeste.jax_elbo import compiled, compiled_hessian
    except ImportError:
        return None
    th = jnp.asarray(truth_theta(kind))
    data = tuple(jnp.asarray(a) for a in prob) + (args[0],) + tuple(jnp.asarray(a) for a in args[1:])
    vgh = compiled()
    hes = compiled_hessian()
    t0 = time.perf_counter()
    vgh(th, *data)[2].block_until_ready()
    t_compile = time.perf_counter() - t0
    t_vgh_w, t_vgh_c = time_call(lambda: vgh(th, *data)[2].block_until_ready(), reps, block, both=True)
    t_vgh = t_vgh_w if CLOCK == "wall" else t_vgh_c
    hes(th, *data).block_until_ready()
    t_h = time_call(lambda: hes(th, *data).block_until_ready(), reps, block)
    # agreement with ours on this problem (the oracle check, at benchmark scale)
    g = np.zeros(P.N_PARAMS)
    H = np.zeros((P.N_PARAMS, P.N_PARAMS))
    source_elbo(np.asarray(th), make_problem(*prob), args, 2, g, H)
    Hj = np.asarray(vgh(th, *data)[2])
    rel = float(np.abs(H - Hj).max() / np.abs(Hj).max())
    return {"t_vgh": t_vgh, "t_vgh_wall": t_vgh_w, "t_vgh_cpu": t_vgh_c, "t_h": t_h, "compile": t_compile, "rel": rel}


# ------------------------------------------------------------------ real field
def run_field(region, out_dir, threads=1):
    out = os.path.join(out_dir, "catalog.fits")
    cmd = ["celeste-infer", "--region", *map(str, region), "--data-dir", os.path.join(ROOT, "data", "sdss"),
           "--out", out, "--threads", str(threads), "--overwrite"]
    print("running:", " ".join(cmd), flush=True)
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    log_path = os.path.join(out_dir, "celeste-infer.log")
    with open(log_path, "w") as log:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        sys.exit(f"celeste-infer failed (exit {proc.returncode}); see {log_path}")
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return out, wall, cpu


def field_stats(path):
    import warnings

    from astropy.table import Table

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # non-FITS unit strings such as nmgy
        t = Table.read(path)
    s = np.asarray(t["opt_seconds"], dtype=float)
    s = s[np.isfinite(s)]
    return {"n": len(s), "median": float(np.median(s)), "p95": float(np.percentile(s, 95)),
            "mean": float(np.mean(s)), "total": float(np.sum(s)),
            "n_pixels": float(np.median(np.asarray(t["n_pixels"], dtype=float)))}


# ------------------------------------------------------------------ main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="few repetitions, no real-field run (CI smoke)")
    ap.add_argument("--catalog", help="read opt_seconds from this catalog instead of running celeste-infer")
    ap.add_argument("--region", nargs=4, type=float, default=REGION, metavar=("RA_MIN", "RA_MAX", "DEC_MIN", "DEC_MAX"),
                    help="real-field sample region (default %(default)s)")
    ap.add_argument("--no-field", action="store_true", help="skip the real-field measurement")
    ap.add_argument("--no-jax", action="store_true", help="skip the JAX baseline")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="clock of the reported figures: wall (perf_counter, default) or cpu (process time; "
                         "use on a shared machine; the real-field median is then scaled by the run's CPU share)")
    a = ap.parse_args(argv)
    global CLOCK
    CLOCK = a.clock
    reps, block, seeds = (5, 5, 3) if a.quick else (21, 20, 20)
    profile = not a.quick

    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} cores)")
    psf3 = real_psf(3)
    proto = prototype_array()
    args = prior_args()
    pix, img = make_tables(psf3)
    prob = (pix, img, psf3, proto)
    n_gal = int(np.sum(proto[:, :, 0] > 0))
    print(f"problem: 5 bands x {2 * HALF + 1}^2 pixels = {len(pix)} rows; K = 3 PSF components; "
          f"{n_gal} galaxy prototype components -> {n_gal * 3} galaxy + 3 star bivariate normals per row")

    # counts from the model (the kernel's cost does not depend on them, the optimizer's does)
    res = {}
    for kind in ("star", "gal"):
        p = (render(np.random.default_rng(0), truth_theta(kind), *prob),) + prob[1:]
        res[kind] = bench_kernel(kind, p, args, reps, block, profile)
    print(f"\n(a) value + gradient + Hessian of source_elbo (mode 2), median per call (clock: {CLOCK})")
    print(f"{'':8s}{'us/call':>10s}{'ns/(pixel,band)':>18s}{'wall us':>10s}{'cpu us':>10s}")
    for kind in ("star", "gal"):
        r = res[kind]
        print(f"{kind:8s}{r['t2'] * 1e6:10.1f}{r['ns']:18.1f}{r['t2_wall'] * 1e6:10.1f}{r['t2_cpu'] * 1e6:10.1f}")
    if profile:
        print("\n    profile (us per call; same problem)")
        print(f"    {'':6s}{'mode0':>9s}{'mode1':>9s}{'mode2':>9s}{'loglik2':>9s}{'kl2':>9s}{'star-only2':>12s}"
              f"{'skipped':>9s}")
        for kind in ("star", "gal"):
            r = res[kind]
            print(f"    {kind:6s}{r['t0'] * 1e6:9.1f}{r['t1'] * 1e6:9.1f}{r['t2'] * 1e6:9.1f}{r['t_ll'] * 1e6:9.1f}"
                  f"{r['t_kl'] * 1e6:9.2f}{r['t_star_only'] * 1e6:12.1f}{r['skip']:9.1%}")
        for k in (2, 3, 4):
            psfk = real_psf(k)
            pk = (render(np.random.default_rng(0), truth_theta("gal"), pix, img, psfk, proto), img, psfk, proto)
            t_k = time_call(ours_call(truth_theta("gal"), *pk, args, 2), reps, block)
            print(f"    galaxy, K = {k} PSF components: {t_k * 1e6:8.1f} us/call ({t_k / len(pix) * 1e9:.1f} ns/row)")
        print(f"    one bvn_log_derivs call (value, 5 first, 15 second derivatives): {bvn_ns(reps):.1f} ns")
        for kind in ("star", "gal"):
            r = res[kind]
            n_eval = r["n_rows"] * n_gal * 3 * (1 - r["skip"])
            print(f"    {kind}: galaxy part {(r['t2'] - r['t_star_only']) / r['t2']:.0%} of mode 2, "
                  f"{(r['t2'] - r['t_star_only']) / n_eval * 1e9:.1f} ns per evaluated galaxy component")
        print("    (star-only2 = galaxy prototype amplitudes set to zero: the star profile, the per-pixel\n"
              "     bookkeeping and the chain rule; the rest of mode2 is the galaxy mixture)")

    opts = InferOptions()
    print(f"\n(b) fit_source (both type starts; max_iter={opts.max_iter}, f_tol={opts.f_tol}, g_tol={opts.g_tol}), "
          f"median over {seeds} noise seeds")
    newton = {}
    for kind in ("star", "gal"):
        p = (render(np.random.default_rng(0), truth_theta(kind), *prob),) + prob[1:]
        newton[kind] = n = bench_newton(kind, p, args, seeds, opts)
        print(f"{kind:8s} iterations {n['iters']:5.1f}   ELBO evaluations {n['evals']:5.1f}   wall {n['s'] * 1e3:7.1f} ms   cpu {n['cpu'] * 1e3:7.1f} ms   converged {n['conv']:.0%}"
              f"   type right {n['type_ok']:.0%}")

    jax_ratio = float("nan")
    if not a.no_jax:
        jres = {}
        for kind in ("star", "gal"):
            p = (render(np.random.default_rng(0), truth_theta(kind), *prob),) + prob[1:]
            jres[kind] = bench_jax(kind, p, args, 3 if a.quick else 7, 1)
        if jres["star"] is None:
            print("\n(c) JAX not installed (pip install -e .[bench]): ratio not measured")
        else:
            print("\n(c) JAX (jit; value+grad+hessian in one call; one thread), median per call")
            print(f"{'':8s}{'JAX vgh us':>12s}{'JAX hess us':>13s}{'ours us':>10s}{'ratio':>8s}{'compile s':>11s}"
                  f"{'max|dH|/max|H|':>16s}")
            ratios = []
            for kind in ("star", "gal"):
                j = jres[kind]
                ratio = j["t_vgh"] / res[kind]["t2"]
                print(f"    {kind}: wall ratio {j['t_vgh_wall'] / res[kind]['t2_wall']:.1f}, "
                      f"cpu ratio {j['t_vgh_cpu'] / res[kind]['t2_cpu']:.1f}")
                ratios.append(ratio)
                print(f"{kind:8s}{j['t_vgh'] * 1e6:12.1f}{j['t_h'] * 1e6:13.1f}{res[kind]['t2'] * 1e6:10.1f}"
                      f"{ratio:8.1f}{j['compile']:11.1f}{j['rel']:16.1e}")
            jax_ratio = float(min(ratios))
            print(f"jax_ratio (the smaller of star, galaxy) = {jax_ratio:.1f}  (target >= 10)")

    median_s = float("nan")
    if a.catalog or not (a.quick or a.no_field):
        if a.catalog:
            path, wall, cpu = a.catalog, None, None
        else:
            tmp = tempfile.mkdtemp(prefix="celeste-bench-")
            path, wall, cpu = run_field(a.region, tmp)
        f = field_stats(path)
        median_s = f["median"]
        print(f"\n(d) real field: {path}")
        print(f"    sources {f['n']}; opt_seconds median {f['median']:.4f} s, p95 {f['p95']:.4f} s, "
              f"mean {f['mean']:.4f} s, sum {f['total']:.1f} s" + (f"; celeste-infer wall {wall:.1f} s" if wall else ""))
        print(f"    median active (pixel, band) rows per source: {f['n_pixels']:.0f}")
        if wall:
            share = cpu / wall
            print(f"    celeste-infer CPU {cpu:.1f} s over wall {wall:.1f} s (share of a core {share:.2f}); "
                  f"median scaled by that share: {f['median'] * min(share, 1.0):.4f} s")
            if CLOCK == "cpu":
                median_s = f["median"] * min(share, 1.0)
        print(f"    target median <= 0.1 s per source (Celeste.jl published median: 0.81 s)")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"RESULT ns_per_pixel_star={res['star']['ns']:.1f} ns_per_pixel_gal={res['gal']['ns']:.1f} "
          f"jax_ratio={jax_ratio:.1f} median_s_per_source={median_s:.4f}")


if __name__ == "__main__":
    main()
