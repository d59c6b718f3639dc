"""End-to-end benchmark: the ordinary-sky half of the sample field on 1 and 2 threads.

    python bench/e2e.py                     # both thread counts (about 10-20 minutes on 2 cores)
    python bench/e2e.py --threads 2         # one
    python bench/e2e.py --region 323.30 323.33 -0.70 -0.67   # a smaller region

Runs ``celeste-infer`` as a subprocess per thread count (fresh run directory each time),
and prints, from the catalog and the process accounting: sources, wall time, sources per
second, seconds of optimizer time per source (median, p95; column opt_seconds of the box files),
peak resident memory of the run, and the r-band residual sd over the region (header
RESSD_R).  The last line is
``RESULT sources=... s_per_source_median=... wall_s=... peak_rss_mb=...`` for the last
thread count run.
"""
import argparse
import glob
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
from astropy.io import fits
from astropy.table import Table

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
EAST = (323.26, 323.43, -0.73, -0.62)


def run(region, threads, workdir, extra=()):
    out = os.path.join(workdir, f"e2e-t{threads}.fits")
    cmd = [sys.executable, "-m", "celeste.cli", "--region", *map(str, region),
           "--data-dir", os.path.join(ROOT, "data", "sdss"), "--out", out, "--run-dir", out[:-5] + ".run",
           "--threads", str(threads), "--overwrite", "--restart", "--no-progress", *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.time() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(f"celeste-infer failed with status {proc.returncode}")
    rss = max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, before) / 1024.0
    cat = Table.read(out)
    hdr = fits.getheader(out, 1)
    boxes = sorted(glob.glob(os.path.join(out[:-5] + ".run", "boxes", "box-*.fits")))
    s = np.concatenate([np.asarray(Table.read(b)["opt_seconds"], float) for b in boxes])
    return dict(threads=threads, sources=len(cat), wall_s=wall, src_per_s=len(cat) / wall,
                s_med=float(np.median(s)), s_p95=float(np.percentile(s, 95)), rss_mb=rss,
                resid_sd_r=hdr.get("RESSD_R", float("nan")))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--region", nargs=4, type=float, default=EAST)
    ap.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args(argv)
    workdir = args.workdir or tempfile.mkdtemp(prefix="celeste-e2e-")
    print(f"region {tuple(args.region)}; load average {os.getloadavg()[0]:.2f}; work dir {workdir}")
    rows = [run(args.region, t, workdir) for t in args.threads]
    print(f"{'threads':>7} {'sources':>7} {'wall_s':>8} {'src/s':>7} {'s/src med':>9} {'s/src p95':>9} "
          f"{'rss_MB':>7} {'resid_sd_r':>10}")
    for r in rows:
        print(f"{r['threads']:>7} {r['sources']:>7} {r['wall_s']:>8.1f} {r['src_per_s']:>7.2f} {r['s_med']:>9.4f} "
              f"{r['s_p95']:>9.4f} {r['rss_mb']:>7.0f} {r['resid_sd_r']:>10.4f}")
    if len(rows) == 2:
        print(f"2-thread speed-up {rows[0]['wall_s'] / rows[1]['wall_s']:.2f}")
    r = rows[-1]
    print(f"RESULT sources={r['sources']} s_per_source_median={r['s_med']:.4f} wall_s={r['wall_s']:.1f} "
          f"peak_rss_mb={r['rss_mb']:.0f}")


if __name__ == "__main__":
    main()
