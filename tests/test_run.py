"""Tests of celeste.run: run directory, resume, time limit, merge, MPI claiming."""
import hashlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

import celeste
import celeste.run as run
from celeste.errors import ConfigError, DataError
from celeste.run import RunDir, get_comm, merge_results, open_run_dir, run_and_merge, run_tasks

DRIVER = Path(__file__).with_name("mpi_run_driver.py")
_spec = importlib.util.spec_from_file_location("mpi_run_driver", DRIVER)
driver = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(driver)
dummy_table = driver.dummy_table

MPIEXEC = shutil.which("mpiexec")
needs_mpi = pytest.mark.skipif(MPIEXEC is None, reason="mpiexec not found on PATH (pip install mpich)")
COLS = ("objid", "flux", "ra")


class Recorder:
    """A process_fn that counts its calls."""

    def __init__(self, fail=(), clock=None, step=0.0):
        self.calls = []
        self.fail = set(fail)
        self.clock, self.step = clock, step

    def __call__(self, task_id):
        self.calls.append(task_id)
        if self.clock is not None:
            self.clock.t += self.step
        if task_id in self.fail:
            raise RuntimeError(f"boom in box {task_id}")
        return dummy_table(task_id, 0)


def _reference(n):
    """The expected merged catalog of tasks 0..n-1 (objid order), columns COLS."""
    t = Table(np.concatenate([np.asarray(dummy_table(i, 0)[list(COLS)]) for i in range(n)]))
    t.sort("objid")
    return t


def _assert_same_catalog(path, n):
    got = Table.read(path, hdu=1)
    ref = _reference(n)
    assert len(got) == len(ref)
    for c in COLS:
        assert np.array_equal(np.asarray(got[c]), np.asarray(ref[c])), c
    assert len(np.unique(got["objid"])) == len(got)
    return got


def test_in_process_run_and_merge(tmp_path):
    rd = tmp_path / "run"
    fn = Recorder()
    s = run_tasks(range(10), fn, rd, progress=True)
    assert s.complete and s.status == "complete"
    assert (s.n_done, s.n_skipped, s.done_by_rank, s.remaining) == (10, 0, [10], [])
    assert sorted(fn.calls) == list(range(10))
    # box files carry provenance keys
    h = fits.getheader(RunDir(rd).box_path(7), 1)
    assert h["CEL_BOX"] == 7 and h["CEL_RANK"] == 0 and h["CEL_VER"] == celeste.__version__
    assert os.path.exists(RunDir(rd).log_path(0))
    assert "rank 0: box 7 done" in open(RunDir(rd).log_path(0)).read()
    out = tmp_path / "cat.fits"
    merged = merge_results(rd, range(10), out, meta={"RUNNAME": "test", "REGION": "0 1 0 1"})
    got = _assert_same_catalog(out, 10)
    assert np.array_equal(merged["objid"], got["objid"])
    h = fits.getheader(out, 1)
    assert h["RUNNAME"] == "test" and h["REGION"] == "0 1 0 1"
    assert "CEL_BOX" not in h
    # refuses to overwrite, unless asked
    with pytest.raises(ConfigError, match="out_path"):
        merge_results(rd, range(10), out)
    merge_results(rd, range(10), out, overwrite=True)
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


def test_rerun_skips_finished(tmp_path):
    rd = tmp_path / "run"
    run_tasks(range(8), Recorder(), rd, progress=False)
    fn = Recorder()
    s = run_tasks(range(8), fn, rd, progress=False)
    assert fn.calls == [] and s.n_skipped == 8 and s.complete
    # a missing and a truncated box file are both redone
    os.remove(RunDir(rd).box_path(3))
    p5 = RunDir(rd).box_path(5)
    data = open(p5, "rb").read()
    open(p5, "wb").write(data[: len(data) // 2])
    fn = Recorder()
    s = run_tasks(range(8), fn, rd, progress=False)
    assert sorted(fn.calls) == [3, 5] and s.n_skipped == 6 and s.n_done == 2 and s.complete
    merge_results(rd, range(8), tmp_path / "c.fits")
    _assert_same_catalog(tmp_path / "c.fits", 8)


def test_manifest_checks(tmp_path, monkeypatch):
    inp = tmp_path / "frame.fits"
    inp.write_bytes(b"x" * 5000)
    rd = tmp_path / "run"
    opts = {"box_arcsec": 60.0, "bands": ["r", "i"]}
    open_run_dir(rd, opts, [inp])
    man = json.load(open(rd / "manifest.json"))
    assert man["version"] == celeste.__version__ and man["options"] == opts
    assert man["inputs"][0]["size"] == 5000
    assert man["inputs"][0]["sha256"] == hashlib.sha256(b"x" * 5000).hexdigest()
    run_tasks(range(4), Recorder(), rd, progress=False)
    # same settings (tuple vs list does not matter): accepted, results kept
    open_run_dir(rd, {"bands": ("r", "i"), "box_arcsec": 60.0}, [inp])
    assert len(os.listdir(rd / "boxes")) == 4
    with pytest.raises(ConfigError, match=r"option 'box_arcsec': manifest has 60.0, now 90.0"):
        open_run_dir(rd, {"box_arcsec": 90.0, "bands": ["r", "i"]}, [inp])
    with pytest.raises(ConfigError, match=r"option 'newopt'"):
        open_run_dir(rd, dict(opts, newopt=1), [inp])
    inp.write_bytes(b"y" * 5000)
    with pytest.raises(ConfigError, match=r"input file 'frame.fits'.*changed"):
        open_run_dir(rd, opts, [inp])
    with pytest.raises(ConfigError, match=r"input file 'frame.fits' is in the manifest but not given"):
        open_run_dir(rd, opts, [])
    inp.write_bytes(b"x" * 5000)
    monkeypatch.setattr(celeste, "__version__", "9.9.9")
    with pytest.raises(ConfigError, match="software version"):
        open_run_dir(rd, opts, [inp])
    monkeypatch.undo()
    # restart: accepted, old results removed, new manifest written
    open_run_dir(rd, {"box_arcsec": 90.0}, [inp], restart=True)
    assert os.listdir(rd / "boxes") == []
    assert json.load(open(rd / "manifest.json"))["options"] == {"box_arcsec": 90.0}
    open_run_dir(rd, {"box_arcsec": 90.0}, [inp])
    # corrupt manifest, missing input
    (rd / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="manifest"):
        open_run_dir(rd, {"box_arcsec": 90.0}, [inp])
    with pytest.raises(DataError, match="nothere.fits"):
        open_run_dir(rd, {}, [tmp_path / "nothere.fits"], restart=True)
    with pytest.raises(ConfigError, match="options"):
        open_run_dir(rd, {"f": object()}, [], restart=True)


class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_time_limit_then_resume(tmp_path, monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(run, "_clock", clock)
    rd = tmp_path / "run"
    fn = Recorder(clock=clock, step=10.0)
    # each task takes 10 s: after 1 task 10 + 15 <= 35, after 2 20 + 15 <= 35, after 3 30 + 15 > 35
    s = run_tasks(range(10), fn, rd, time_limit_s=35.0, progress=False)
    assert fn.calls == [0, 1, 2]
    assert not s.complete and s.status == "incomplete" and s.stopped_by_time_limit
    assert s.remaining == list(range(3, 10)) and s.n_done == 3
    out = tmp_path / "cat.fits"
    s = run_and_merge(range(10), fn, rd, out, time_limit_s=35.0, progress=False)
    assert not s.complete and not out.exists() and fn.calls == [0, 1, 2, 3, 4, 5]
    fn2 = Recorder()
    s = run_and_merge(range(10), fn2, rd, out, progress=False)
    assert s.complete and fn2.calls == [6, 7, 8, 9] and s.n_skipped == 6
    _assert_same_catalog(out, 10)


def test_failures_leave_no_partial_file(tmp_path, monkeypatch):
    rd = tmp_path / "run"
    s = run_tasks(range(5), Recorder(fail={2}), rd, progress=False)
    assert not s.complete and s.remaining == [2] and list(s.failed) == [2]
    assert "boom in box 2" in s.failed[2]
    assert "boom in box 2" in open(RunDir(rd).log_path(0)).read()
    assert sorted(os.listdir(rd / "boxes")) == [f"box-{i:06d}.fits" for i in (0, 1, 3, 4)]

    # a write that fails mid-way (partial bytes on disk, then an error)
    real_writeto = fits.HDUList.writeto

    def broken_writeto(self, name, *a, **k):
        if not isinstance(name, (str, os.PathLike)):  # in-memory encoding of the table, not the file
            return real_writeto(self, name, *a, **k)
        with open(name, "wb") as f:
            f.write(b"SIMPLE  =                    T" + b" " * 100)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fits.HDUList, "writeto", broken_writeto)
    s = run_tasks(range(5), Recorder(), rd, progress=False)
    assert s.remaining == [2] and "No space left" in s.failed[2]
    monkeypatch.setattr(fits.HDUList, "writeto", real_writeto)
    assert sorted(os.listdir(rd / "boxes")) == [f"box-{i:06d}.fits" for i in (0, 1, 3, 4)]

    # a result that cannot be written as FITS, and a result of the wrong type
    def bad(task_id):
        t = dummy_table(task_id, 0)
        t["obj"] = [{"a": 1}] * len(t)
        return t

    s = run_tasks([2, 6], bad, rd, progress=False)
    assert set(s.failed) == {2, 6}
    s = run_tasks([2, 7], lambda t: {"objid": [t]}, rd, progress=False)
    assert "not an astropy Table" in s.failed[2] and set(s.remaining) == {2, 7}
    assert sorted(os.listdir(rd / "boxes")) == [f"box-{i:06d}.fits" for i in (0, 1, 3, 4)]
    # the fixed function finishes the job
    fn = Recorder()
    s = run_tasks(range(5), fn, rd, progress=False)
    assert s.complete and fn.calls == [2]


def test_stale_temp_files_removed(tmp_path):
    rd = RunDir(tmp_path / "run")
    rd.ensure_dirs()
    stale = os.path.join(rd.box_dir, ".box-000001.fits.tmp-999-abcdef12")
    open(stale, "wb").write(b"partial")
    s = run_tasks(range(3), Recorder(), rd, progress=False)
    assert s.complete and not os.path.exists(stale)


def test_merge_errors(tmp_path):
    rd = RunDir(tmp_path / "run")
    run_tasks(range(4), Recorder(), rd, progress=False)
    # a duplicate objid: box 3 also holds an object of box 2
    t = dummy_table(3, 0)
    t.add_row((2001, 1.0, 2.0, 0))
    rd.write_result(3, t)
    with pytest.raises(DataError, match=r"objid 2001 appears 2 times.*box-000002.fits.*box-000003.fits"):
        merge_results(rd, range(4), tmp_path / "c.fits")
    assert not (tmp_path / "c.fits").exists()
    rd.write_result(3, dummy_table(3, 0))
    with pytest.raises(DataError, match="box-000004.fits"):
        merge_results(rd, range(5), tmp_path / "c.fits")
    t = dummy_table(3, 0)
    t["extra"] = 1.0
    rd.write_result(3, t)
    with pytest.raises(DataError, match="columns"):
        merge_results(rd, range(4), tmp_path / "c.fits")
    t = dummy_table(3, 0)
    t.remove_column("objid")
    rd.write_result(3, t)
    with pytest.raises(DataError, match="objid"):
        merge_results(rd, range(4), tmp_path / "c.fits")
    with pytest.raises(ConfigError, match="task_ids"):
        merge_results(rd, [], tmp_path / "c.fits")
    with pytest.raises(ConfigError, match="task_ids"):
        run_tasks([1, 1], Recorder(), rd)


def test_run_and_merge_checks_output_first(tmp_path):
    out = tmp_path / "cat.fits"
    out.write_bytes(b"old")
    fn = Recorder()
    with pytest.raises(ConfigError, match="out_path"):
        run_and_merge(range(3), fn, tmp_path / "run", out, progress=False)
    assert fn.calls == []


def test_get_comm_without_launcher(monkeypatch):
    for v in ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "HYDI_CONTROL_FD",
              "SLURM_STEP_ID", "SLURM_NTASKS"):
        monkeypatch.delenv(v, raising=False)
    assert get_comm() is None
    # a launcher is present but mpi4py cannot be imported: None, no exception
    monkeypatch.setenv("PMI_RANK", "0")
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    assert get_comm() is None


# ---------------------------------------------------------------------------
# under mpiexec

def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(DRIVER.parent.parent) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _driver_cmd(n, tmp, tasks, sleep, calls):
    return [MPIEXEC, "-n", str(n), sys.executable, "-m", "mpi4py", str(DRIVER), str(tmp / "run"),
            str(tmp / "cat.fits"), "--tasks", str(tasks), "--expect-size", str(n), "--calls-dir", str(calls),
            "--sleep", str(sleep)]


def _calls(calls_dir):
    out = {}
    for name in os.listdir(calls_dir):
        rank = int(name.split("-")[-1].split(".")[0])
        for line in open(os.path.join(calls_dir, name)):
            out.setdefault(int(line), []).append(rank)
    return out


@needs_mpi
@pytest.mark.parametrize("n", [2, 3])
def test_mpi_same_catalog_each_task_once(tmp_path, n):
    tasks = 12
    p = subprocess.run(_driver_cmd(n, tmp_path, tasks, 0.05, tmp_path / "calls"), env=_env(),
                       capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert summary["size"] == n and summary["complete"] and summary["n_done"] == tasks
    got = _assert_same_catalog(tmp_path / "cat.fits", tasks)
    calls = _calls(tmp_path / "calls")
    assert sorted(calls) == list(range(tasks))
    assert all(len(r) == 1 for r in calls.values()), calls
    # the rank column of the catalog is the rank that ran the task
    for row in got:
        assert [int(row["rank"])] == calls[int(row["objid"]) // 1000]
    ranks_used = {r[0] for r in calls.values()}
    assert ranks_used <= set(range(n)) and len(ranks_used) >= 2
    assert sum(summary["done_by_rank"]) == tasks and len(summary["done_by_rank"]) == n
    assert fits.getheader(tmp_path / "cat.fits", 1)["NRANKS"] == n
    assert sorted(os.listdir(tmp_path / "run" / "logs")) == [f"rank-{r:04d}.log" for r in range(n)]


def _descendants(pid):
    out = []
    try:
        kids = []
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids += [int(x) for x in f.read().split()]
    except OSError:
        return out
    for k in kids:
        out.append(k)
        out += _descendants(k)
    return out


@needs_mpi
def test_mpi_killed_then_resumed(tmp_path):
    tasks = 16
    proc = subprocess.Popen(_driver_cmd(2, tmp_path, tasks, 0.3, tmp_path / "calls1"), env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    boxes = tmp_path / "run" / "boxes"
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < 120:
            done = [f for f in os.listdir(boxes) if f.endswith(".fits") and f.startswith("box-")] \
                if boxes.exists() else []
            if len(done) >= 4 or proc.poll() is not None:
                break
            time.sleep(0.05)
    finally:
        # SIGKILL mpiexec's whole tree (hydra puts the ranks in their own sessions)
        victims = _descendants(proc.pid)
        for pid in [proc.pid] + victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    time.sleep(0.3)
    finished_before = sorted(int(f[4:10]) for f in os.listdir(boxes) if f.startswith("box-"))
    assert 4 <= len(finished_before) < tasks
    assert not (tmp_path / "cat.fits").exists()
    p = subprocess.run(_driver_cmd(2, tmp_path, tasks, 0.0, tmp_path / "calls2"), env=_env(),
                       capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert summary["complete"] and summary["n_skipped"] == len(finished_before)
    _assert_same_catalog(tmp_path / "cat.fits", tasks)
    rerun_calls = _calls(tmp_path / "calls2")
    assert not set(rerun_calls) & set(finished_before)
    assert all(len(r) == 1 for r in rerun_calls.values())
    assert sorted(set(rerun_calls) | set(finished_before)) == list(range(tasks))
    assert not [f for f in os.listdir(boxes) if ".tmp-" in f]
