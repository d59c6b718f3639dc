"""Strong and weak scaling on this machine, and the scheduler simulated at scale.

Two ways to run it:

* **Sweep** (what a person types; prints the ``RESULT`` line)::

      python bench/scaling.py [--job jobs/sample.toml] [--box-arcsec 60] [--reps 3]

  1. stages the field's files into ``<work-dir>/data`` with the frames decompressed
     (as a production run stages to a burst buffer; ``--no-stage`` keeps the ``.bz2``
     frames, which every box then decompresses whole);
  2. runs detection once (one task per field: it does not parallelize with one field)
     and writes it as the initial catalog (``--init``) of every timed run;
  3. times the box stage (claiming, loading, optimizing, writing every box; detection
     excluded) for (ranks, threads) = (1, 1), (1, 2), (2, 1) on the job's region
     (strong scaling) and (1, 1) on its lower-declination half (weak scaling: work per
     rank constant), each ``--reps`` times, as separate processes (``mpiexec -n R``);
  4. feeds the measured per-box load times and per-source optimizer times to
     :mod:`schedsim` (the scheduler at 1 to 8,192 nodes);
  5. prints sources per second, parallel efficiency ``T(1,1) / (p T(p))`` (medians),
     the load average next to every timing, and finally::

         RESULT threads2_efficiency=... ranks2_efficiency=... sim_efficiency_8192=... peak_rss_mb_per_rank=...

* **Point** (one configuration; what ``slurm/scaling.sbatch`` runs under ``srun``)::

      srun -n R python bench/scaling.py --job JOB --threads T [--point] [--init FILE] ...

  ``--threads`` without ``--point`` also selects this mode.  The ranks come from MPI.
  Rank 0 prints a ``POINT {json}`` line (and writes ``--json-out``): wall times, sources,
  per-box times, peak RSS per rank (``ru_maxrss``), load average.

Efficiency uses the box stage's wall time; detection is reported on its own line.
"""
import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# bench/ holds a kernels.py that would shadow the kernels package: take bench/ off the path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(ROOT))


def _schedsim():
    import importlib.util

    spec = importlib.util.spec_from_file_location("schedsim", HERE / "schedsim.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["schedsim"] = mod
    spec.loader.exec_module(mod)
    return mod


def loadavg():
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return float("nan")


def peak_rss_mb():
    """Peak resident set size of this process, MiB.

    ``VmHWM`` of /proc/self/status (Linux): the high-water mark of this process image.
    ``ru_maxrss`` is the fallback; on Linux it keeps the high-water mark of the image a
    process had before ``exec``, so a child of a big parent would report the parent's.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ------------------------------------------------------------------------------- options

def job_options(args, region=None):
    """celeste.pipeline.JobOptions from the job file and the overrides."""
    from celeste.infer import InferOptions
    from celeste.jobs import load_job
    from celeste.pipeline import JobOptions

    job = load_job(args.job) if args.job else {}
    reg = region or args.region or job.get("region")
    if reg is None:
        raise SystemExit("scaling.py: give --job or --region")
    data_dir = args.data_dir or job.get("data_dir")
    opts = JobOptions(region=tuple(float(v) for v in reg), data_dir=str(data_dir),
                      box_arcsec=args.box_arcsec, overlap_arcsec=args.overlap_arcsec,
                      init=args.init, infer=InferOptions(threads=args.threads or 1))
    return opts


# ------------------------------------------------------------------------------- point mode

def box_records(run_dir):
    """Per-box CEL_BOX, CEL_RANK, CEL_SEC, CEL_OPT, CEL_NSRC and rows, from the box headers."""
    from astropy.io import fits

    recs = []
    for p in sorted((Path(run_dir) / "boxes").glob("box-*.fits")):
        h = fits.getheader(p, 1)
        recs.append({"box": int(h["CEL_BOX"]), "rank": int(h["CEL_RANK"]), "sec": float(h["CEL_SEC"]),
                     "opt": float(h.get("CEL_OPT", 0.0)), "nsrc_ext": int(h.get("CEL_NSRC", 0)),
                     "rows": int(h["NAXIS2"])})
    return recs


def run_point(args):
    """One (ranks, threads) run of the box stage; rank 0 returns the record."""
    from celeste.partition import make_boxes
    from celeste.pipeline import run_job
    from celeste.run import barrier, get_comm, rank_size
    from astropy.table import Table

    comm = get_comm()
    rank, size = rank_size(comm)
    opts = job_options(args)
    tag = args.tag or f"r{size}-t{opts.infer.threads}"
    work = Path(args.work_dir)
    run_dir, out = work / "runs" / tag, work / "runs" / f"{tag}.fits"
    if rank == 0:
        shutil.rmtree(run_dir, ignore_errors=True)
        os.makedirs(run_dir.parent, exist_ok=True)
    rss_before = peak_rss_mb()
    la0 = loadavg()
    barrier(comm)
    t0 = time.perf_counter()
    res = run_job(opts, str(out), str(run_dir), overwrite=True, progress=False)
    barrier(comm)
    wall = time.perf_counter() - t0
    rss = peak_rss_mb()
    rss_all = comm.gather(rss, root=0) if comm is not None and size > 1 else [rss]
    before_all = comm.gather(rss_before, root=0) if comm is not None and size > 1 else [rss_before]
    if rank != 0:
        return None
    boxes = make_boxes(opts.region, opts.box_arcsec, opts.overlap_arcsec)
    ext = [((b.ext_u_max - b.ext_u_min) * np.cos(np.radians(0.5 * (b.ext_dec_min + b.ext_dec_max))))
           * (b.ext_dec_max - b.ext_dec_min) for b in boxes]
    # per-source optimizer times are kept in the box files (column opt_seconds), not the catalog
    src_sec = []
    for p in sorted((run_dir / "boxes").glob("box-*.fits")):
        t = Table.read(p, hdu=1)
        if "opt_seconds" in t.colnames:
            src_sec += [float(v) for v in t["opt_seconds"]]
    rec = {
        "ranks": size, "threads": opts.infer.threads, "region": list(opts.region), "box_arcsec": opts.box_arcsec,
        "overlap_arcsec": opts.overlap_arcsec, "data_dir": opts.data_dir, "init": bool(opts.init),
        "n_boxes": res.n_boxes, "n_sources": res.n_sources,
        "box_stage_s": round(res.summary.elapsed_s, 3), "wall_s": round(wall, 3),
        "peak_rss_mb": [round(v, 1) for v in rss_all], "rss_before_run_mb": [round(v, 1) for v in before_all],
        "loadavg_start": la0, "loadavg_end": loadavg(),
        "boxes": box_records(run_dir), "ext_deg2_mean": float(np.mean(ext)),
        "source_opt_seconds": [round(v, 5) for v in src_sec],
    }
    line = "POINT " + json.dumps({k: v for k, v in rec.items() if k not in ("boxes", "source_opt_seconds")})
    print(line, flush=True)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(rec, f)
    return rec


# ------------------------------------------------------------------------------- sweep mode

def stage_data(src_root, fields, dest):
    """Copy the fields' files under ``dest`` with .bz2 frames decompressed (seconds taken)."""
    import bz2

    t0 = time.perf_counter()
    for run, camcol, fld in fields:
        sd = Path(src_root) / str(run) / str(camcol) / str(fld)
        dd = Path(dest) / str(run) / str(camcol) / str(fld)
        dd.mkdir(parents=True, exist_ok=True)
        pf = Path(src_root) / str(run) / str(camcol) / f"photoField-{run:06d}-{camcol}.fits"
        if pf.exists() and not (dd.parent / pf.name).exists():
            shutil.copy(pf, dd.parent)
        for f in sd.iterdir():
            target = dd / (f.name[:-4] if f.name.endswith(".bz2") else f.name)
            if target.exists():
                continue
            if f.name.endswith(".bz2"):
                with bz2.open(f, "rb") as fin, open(target, "wb") as fout:
                    shutil.copyfileobj(fin, fout, 1 << 20)
            else:
                shutil.copy(f, target)
    return time.perf_counter() - t0


def point_command(args, ranks, threads, region, tag, json_out, data_dir, init):
    cmd = [sys.executable, str(Path(__file__).resolve()), "--point", "--threads", str(threads),
           "--region", *[repr(float(v)) for v in region], "--data-dir", str(data_dir), "--init", str(init),
           "--box-arcsec", str(args.box_arcsec), "--overlap-arcsec", str(args.overlap_arcsec),
           "--work-dir", str(args.work_dir), "--tag", tag, "--json-out", str(json_out)]
    mpiexec = shutil.which("mpiexec")
    if mpiexec is not None:
        cmd = [mpiexec, "-n", str(ranks)] + cmd
    elif ranks > 1:
        raise SystemExit("scaling.py: mpiexec not found (pip install mpi4py mpich)")
    return cmd


def sweep(args):
    from celeste.initcat import detect_field
    from celeste.pipeline import fields_for_region

    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    opts = job_options(args)
    fields = fields_for_region(opts)
    print(f"scaling: region {opts.region}, {args.box_arcsec:.0f}\" boxes + {args.overlap_arcsec:.0f}\" overlap, "
          f"{len(fields)} field(s), {os.cpu_count()} cores, load average {loadavg()}", flush=True)
    data_dir = opts.data_dir
    if not args.no_stage:
        stage_s = stage_data(opts.data_dir, fields, work / "data")
        data_dir = str(work / "data")
        print(f"staged frames decompressed into {data_dir} in {stage_s:.1f} s", flush=True)
    opts.data_dir = data_dir
    init = work / "init.fits"
    t0 = time.perf_counter()
    parts = [detect_field(opts, *f) for f in fields]
    from astropy.table import vstack

    cat = vstack(parts) if len(parts) > 1 else parts[0]
    cat.write(init, overwrite=True)
    detect_s = time.perf_counter() - t0
    print(f"detection (serial, one task per field): {detect_s:.1f} s for {len(cat)} sources "
          f"(load average {loadavg()})", flush=True)

    full = opts.region
    half = (full[0], full[1], full[2], 0.5 * (full[2] + full[3]))
    configs = [("strong", 1, 1, full), ("strong", 1, 2, full), ("strong", 2, 1, full), ("weak", 1, 1, half)]
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    recs = {}
    print(f"{'kind':>6} {'rep':>3} {'ranks':>5} {'thr':>3} {'boxes':>5} {'src':>5} {'box_s':>8} {'wall_s':>8} "
          f"{'src/s':>7} {'rss_mb':>12} {'load':>11}", flush=True)
    for rep in range(args.reps):
        for kind, r, t, reg in configs:
            tag = f"{kind}-r{r}-t{t}"
            jout = work / f"{tag}-rep{rep}.json"
            if args.reuse and jout.exists():
                rec = json.loads(jout.read_text())
                recs.setdefault((kind, r, t), []).append(rec)
                continue
            cmd = point_command(args, r, t, reg, tag, jout, data_dir, init)
            p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
            if p.returncode != 0:
                raise SystemExit(f"scaling.py: {' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
            rec = json.loads(jout.read_text())
            recs.setdefault((kind, r, t), []).append(rec)
            print(f"{kind:>6} {rep:>3} {r:>5} {t:>3} {rec['n_boxes']:>5} {rec['n_sources']:>5} "
                  f"{rec['box_stage_s']:>8.2f} {rec['wall_s']:>8.2f} {rec['n_sources'] / rec['box_stage_s']:>7.2f} "
                  f"{','.join(f'{v:.0f}' for v in rec['peak_rss_mb']):>12} "
                  f"{rec['loadavg_start']:>5.2f}-{rec['loadavg_end']:<5.2f}", flush=True)

    def med(key):
        return statistics.median(r["box_stage_s"] for r in recs[key])

    t11, t12, t21 = med(("strong", 1, 1)), med(("strong", 1, 2)), med(("strong", 2, 1))
    tw = med(("weak", 1, 1))
    n_src = recs[("strong", 1, 1)][0]["n_sources"]
    eff_t, eff_r = t11 / (2 * t12), t11 / (2 * t21)
    eff_w = tw / t21
    print(f"\nmedians of {args.reps} (box stage; detection {detect_s:.1f} s extra, serial):")
    for (kind, r, t), v in sorted(recs.items()):
        m = statistics.median(x["box_stage_s"] for x in v)
        print(f"  {kind:>6} ranks={r} threads={t}: {m:.2f} s, {v[0]['n_sources'] / m:.2f} sources/s")
    print(f"strong scaling efficiency T(1,1)/(2 T): threads x2 {eff_t:.3f}, ranks x2 {eff_r:.3f}")
    print(f"weak scaling efficiency T(1 rank, half region)/T(2 ranks, full region): {eff_w:.3f}")

    # per-box figures of the (1,1) runs (the simulation's input)
    ref = recs[("strong", 1, 1)]
    loads = np.array([b["sec"] - b["opt"] for r in ref for b in r["boxes"]])
    opts_s = np.array([b["opt"] for r in ref for b in r["boxes"]])
    src_s = np.array([s for r in ref for s in r["source_opt_seconds"]])
    # opt_seconds counts the Newton kernel only; a box's optimize time (CEL_OPT) also holds the
    # Python work around it (pixels, light bookkeeping, batches, residual round, uncertainties).
    # Scale the per-source times so that they add up to the measured box times per source.
    per_src_box = np.array([b["opt"] / b["nsrc_ext"] for r in ref for b in r["boxes"] if b["nsrc_ext"] > 0])
    src_scale = float(np.mean(per_src_box) / np.mean(src_s))
    print(f"per box (1 rank, 1 thread, {len(loads)} box runs): load+setup {np.median(loads):.2f} s median "
          f"({np.min(loads):.2f}-{np.max(loads):.2f}), optimize {np.median(opts_s):.2f} s median "
          f"({np.min(opts_s):.2f}-{np.max(opts_s):.2f}); per source {np.median(src_s):.3f} s median, "
          f"{np.mean(src_s):.3f} s mean, {np.max(src_s):.2f} s max")
    peak = max(v for rs in recs.values() for r in rs for v in r["peak_rss_mb"])
    base = max(v for rs in recs.values() for r in rs for v in r["rss_before_run_mb"])
    print(f"peak RSS per rank: {peak:.0f} MiB (after imports, before the run: {base:.0f} MiB)")

    schedsim = _schedsim()
    print(f"per-source kernel times scaled by {src_scale:.2f} to the measured box time per source "
          f"({np.mean(per_src_box):.3f} s)")
    meas = schedsim.Measured(src_s * src_scale, loads, ref[0]["ext_deg2_mean"])
    prm = schedsim.SimParams(seed=args.seed)
    print()
    sim = schedsim.report(meas, prm, boxes_per_rank=args.sim_boxes_per_rank, strong_boxes=args.sim_strong_boxes)
    sim8192 = [r for r in sim["strong"] if r.nodes == 8192][0].efficiency
    summary = {"threads2_efficiency": eff_t, "ranks2_efficiency": eff_r, "weak_ranks2_efficiency": eff_w,
               "sources": n_src, "t11_s": t11, "t12_s": t12, "t21_s": t21, "detect_s": detect_s,
               "sim_efficiency_8192": sim8192, "peak_rss_mb_per_rank": peak, "loadavg_end": loadavg()}
    (work / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"\nRESULT threads2_efficiency={eff_t:.3f} ranks2_efficiency={eff_r:.3f} "
          f"sim_efficiency_8192={sim8192:.3f} peak_rss_mb_per_rank={peak:.0f}")


def build_parser():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--job", default=str(ROOT / "jobs" / "sample.toml"), help="job file (region, data_dir)")
    ap.add_argument("--region", nargs=4, type=float, help="override the job's region (deg)")
    ap.add_argument("--data-dir", help="override the job's data_dir")
    ap.add_argument("--box-arcsec", type=float, default=60.0, help="box core size (default 60: 6 boxes on the sample)")
    ap.add_argument("--overlap-arcsec", type=float, default=20.0)
    ap.add_argument("--threads", type=int, help="point mode: threads per rank")
    ap.add_argument("--point", action="store_true", help="run one configuration (ranks from MPI)")
    ap.add_argument("--init", help="initial catalog (point mode; the sweep makes one)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions per configuration (medians)")
    ap.add_argument("--reuse", action="store_true", help="reuse the point records already in --work-dir")
    ap.add_argument("--no-stage", action="store_true", help="read the .bz2 frames as they are")
    ap.add_argument("--work-dir", default=str(HERE / "out" / "scaling"))
    ap.add_argument("--tag", help="point mode: name of the run directory")
    ap.add_argument("--json-out", help="point mode: write the record here")
    ap.add_argument("--sim-boxes-per-rank", type=int, default=20, help="weak-scaling simulation workload")
    ap.add_argument("--sim-strong-boxes", type=int, help="strong-scaling simulation workload (default: the "
                                                         "SDSS survey at 240\" boxes, ~3.3 million)")
    ap.add_argument("--seed", type=int, default=0, help="simulation seed")
    return ap


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.point or args.threads is not None:
        run_point(args)
    else:
        sweep(args)


if __name__ == "__main__":
    main()
