"""Soak test: a catalog run whose MPI ranks are killed at random moments, rerun until it completes.

    python bench/faults.py [--kills 5] [--np 2] [--seed 0] [--workdir DIR] [--keep]
                           [--region 323.36 323.38 -0.70 -0.68] [--box-arcsec 40] [--overlap-arcsec 10]

1. A reference run: ``mpiexec -n NP celeste-infer --region ... --box-arcsec 40 --overlap-arcsec 10``
   on the sample data, uninterrupted; its wall time is T.
2. The faulty run: the same command in its own run directory, started again and again.  While
   kills remain, each start is SIGKILLed (mpiexec and every descendant: hydra puts the ranks in
   sessions of their own) after a random delay, uniform in [0.05, 1.0] times T scaled by the
   fraction of boxes still unfinished (at least 0.2 of T: start-up and detection); a start
   that exits before its kill counts as a run, not a kill.  Once the kills are spent, the command
   runs to the end; it must exit 0.
3. The two catalogs are compared by ``objid``: sources of the reference missing from the
   faulty catalog (``sources_lost``), repeated objids (``duplicates``), objids the reference
   lacks (``extra``), and the largest relative difference of any flux and the largest
   position difference (arcsec) of the matched sources.

The last line printed is::

    RESULT runs=R kills=K sources_lost=0 duplicates=0 extra=0 max_rel_flux_diff=... max_pos_diff_arcsec=...

and the exit status is 0 iff no source was lost or duplicated and none is extra.
"""
import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def children_of(pid):
    """Every descendant process id of ``pid`` (from /proc; Linux)."""
    parent = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # the command name (field 2) may hold spaces: the fields after its ')' are fixed
        fields = stat[stat.rfind(")") + 2:].split()
        parent[int(name)] = int(fields[1])
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        todo += kids
    return out


def kill_tree(proc):
    """SIGKILL a launcher and all its descendants; wait for the launcher."""
    victims = [proc.pid] + children_of(proc.pid)
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    proc.wait()
    # let orphaned ranks vanish before the next start reads the run directory
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") and not _zombie(p) for p in victims):
        time.sleep(0.05)


def _zombie(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
        return s[s.rfind(")") + 2] == "Z"
    except OSError:
        return True


def _boxes_done(run_dir):
    d = os.path.join(run_dir, "boxes")
    return [f for f in os.listdir(d) if f.startswith("box-") and f.endswith(".fits")] if os.path.isdir(d) else []


def command(args, out, run_dir):
    return ["mpiexec", "-n", str(args.np), sys.executable, "-m", "celeste.cli",
            "--region", *map(str, args.region), "--data-dir", args.data_dir, "--out", out, "--run-dir", run_dir,
            "--box-arcsec", str(args.box_arcsec), "--overlap-arcsec", str(args.overlap_arcsec),
            "--no-progress", "--overwrite"]


def start(cmd, log_path):
    log = open(log_path, "ab")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
    proc._log = log
    return proc


def finish(proc):
    proc._log.close()
    return proc.returncode


def compare(ref_path, got_path):
    """(sources_lost, duplicates, extra, max relative flux difference, max position difference arcsec)."""
    from astropy.table import Table

    from celeste import BANDS

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nmgy is not a FITS unit
        ref, got = Table.read(ref_path), Table.read(got_path)
    rid, gid = np.asarray(ref["objid"]), np.asarray(got["objid"])
    duplicates = len(gid) - len(np.unique(gid))
    lost = int(np.sum(~np.isin(rid, gid)))
    extra = int(np.sum(~np.isin(np.unique(gid), rid)))
    common, ri, gi = np.intersect1d(rid, gid, return_indices=True)
    rel, pos = 0.0, 0.0
    if len(common):
        for b in BANDS:
            a, c = np.asarray(ref[f"flux_{b}"])[ri], np.asarray(got[f"flux_{b}"])[gi]
            ok = np.isfinite(a) & np.isfinite(c)
            if ok.any():
                rel = max(rel, float(np.max(np.abs(a[ok] - c[ok]) / np.maximum(np.abs(a[ok]), 1e-12))))
        dra = (np.asarray(ref["ra"])[ri] - np.asarray(got["ra"])[gi]) * np.cos(np.radians(np.asarray(ref["dec"])[ri]))
        ddec = np.asarray(ref["dec"])[ri] - np.asarray(got["dec"])[gi]
        pos = float(np.max(np.hypot(dra, ddec)) * 3600.0)
    return lost, duplicates, extra, rel, pos


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=5, help="runs to kill before letting one finish (default 5)")
    p.add_argument("--np", type=int, default=2, help="MPI ranks (default 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    p.add_argument("--region", nargs=4, type=float, default=[323.36, 323.38, -0.70, -0.68])
    p.add_argument("--box-arcsec", type=float, default=40.0)
    p.add_argument("--overlap-arcsec", type=float, default=10.0)
    p.add_argument("--data-dir", default=os.path.join(ROOT, "data", "sdss"))
    p.add_argument("--workdir", help="where the runs go (default: a new temporary directory)")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--max-runs", type=int, default=50, help="give up after this many starts")
    args = p.parse_args(argv)
    if shutil.which("mpiexec") is None:
        print("faults.py: mpiexec not found (pip install mpich)", file=sys.stderr)
        return 2
    work = args.workdir or tempfile.mkdtemp(prefix="celeste-faults-")
    os.makedirs(work, exist_ok=True)
    rng = random.Random(args.seed)
    try:
        ref_out = os.path.join(work, "ref.fits")
        t0 = time.monotonic()
        proc = start(command(args, ref_out, os.path.join(work, "ref.run")), os.path.join(work, "ref.log"))
        proc.wait()
        if finish(proc) != 0:
            print(f"faults.py: the reference run failed; see {work}/ref.log", file=sys.stderr)
            return 2
        t_ref = time.monotonic() - t0
        n_boxes = len(_boxes_done(os.path.join(work, "ref.run")))
        print(f"reference run: {t_ref:.1f} s, {n_boxes} boxes", flush=True)

        out = os.path.join(work, "faulty.fits")
        cmd = command(args, out, os.path.join(work, "faulty.run"))
        runs = kills = 0
        status = None
        while runs < args.max_runs:
            runs += 1
            proc = start(cmd, os.path.join(work, f"faulty-{runs:02d}.log"))
            if kills < args.kills:
                left = 1.0 - len(_boxes_done(os.path.join(work, "faulty.run"))) / max(n_boxes, 1)
                delay = rng.uniform(0.05, 1.0) * t_ref * max(left, 0.2)
                try:
                    proc.wait(timeout=delay)
                except subprocess.TimeoutExpired:
                    kill_tree(proc)
                    finish(proc)
                    kills += 1
                    done = len(_boxes_done(os.path.join(work, "faulty.run")))
                    print(f"run {runs}: killed after {delay:.1f} s ({done} of {n_boxes} boxes finished)", flush=True)
                    continue
            else:
                proc.wait()
            status = finish(proc)
            print(f"run {runs}: exit status {status}", flush=True)
            if status == 0:
                break
            if status not in (0, 3):
                print(f"faults.py: run {runs} failed with status {status}; see {work}/faulty-{runs:02d}.log",
                      file=sys.stderr)
                break
        if status != 0:
            print(f"RESULT runs={runs} kills={kills} sources_lost=nan duplicates=nan extra=nan incomplete=1")
            return 1
        lost, dup, extra, rel, pos = compare(ref_out, out)
        print(f"RESULT runs={runs} kills={kills} sources_lost={lost} duplicates={dup} extra={extra} "
              f"max_rel_flux_diff={rel:.3g} max_pos_diff_arcsec={pos:.3g}")
        return 0 if lost == dup == extra == 0 else 1
    finally:
        if args.keep or args.workdir:
            print(f"work directory: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
