"""Real Slurm runs on a single-node test cluster (slurm/cluster-up.sh).

Skipped when the Slurm client (``sinfo``) is missing or no node is idle.  The
MPI plug-in is PMI2 (what the pip ``mpich`` wheel speaks) unless
``SLURM_MPI_TYPE`` is already set.  Every MPI test asserts the communicator
size: with the wrong plug-in srun silently runs N separate size-1 jobs.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_JOB = ROOT / "jobs" / "sample.toml"
# a corner of the sample job's region cut into 4 boxes, so the runs take seconds and 2 ranks share boxes
SMALL = ["--region", "323.355", "323.365", "-0.725", "-0.715", "--box-arcsec", "20", "--overlap-arcsec", "8"]
MPI_ONE_LINER = ("from mpi4py import MPI; c = MPI.COMM_WORLD; "
                 "print('size', c.Get_size(), 'rank', c.Get_rank(), flush=True)")


def _cluster_state():
    """Why Slurm tests cannot run here, or None if a node is ready."""
    if shutil.which("sinfo") is None:
        return "sinfo not found: Slurm client not installed (see slurm/cluster-up.sh)"
    try:
        r = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return "Slurm cluster not up: sinfo timed out (run slurm/cluster-up.sh)"
    states = {s.strip().rstrip("*~#!%$@^-") for s in r.stdout.split()}
    if r.returncode != 0 or not states & {"idle", "mixed", "allocated", "completing"}:
        msg = (r.stderr.strip() or r.stdout.strip() or "no nodes").splitlines()[0]
        return f"Slurm cluster not up ({msg}); run slurm/cluster-up.sh"
    return None


_REASON = _cluster_state()
pytestmark = [pytest.mark.slurm, pytest.mark.skipif(_REASON is not None, reason=_REASON or "")]

needs_cli = pytest.mark.skipif(shutil.which("celeste-infer") is None,
                               reason="celeste-infer not available")


def slurm_env():
    env = dict(os.environ)
    env.setdefault("SLURM_MPI_TYPE", "pmi2")
    return env


def sbatch_wait(args, cwd, timeout):
    """Submit with ``sbatch --wait --parsable``; return (job id, exit status).

    The job is cancelled if it does not finish within ``timeout`` seconds.
    """
    proc = subprocess.Popen(["sbatch", "--wait", "--parsable", *map(str, args)], cwd=cwd,
                            env=slurm_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    job_id = proc.stdout.readline().strip().split(";")[0]
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        if job_id:
            subprocess.run(["scancel", job_id], timeout=30)
        proc.kill()
        proc.communicate()
        pytest.fail(f"Slurm job {job_id or '?'} did not finish within {timeout} s (cancelled)")
    assert job_id.isdigit(), f"sbatch printed no job id: {err}"
    return job_id, proc.returncode


def parse_sizes(text):
    """(size, rank) pairs from the MPI one-liner's output lines."""
    pairs = []
    for line in text.splitlines():
        words = line.split()
        if len(words) == 4 and words[0] == "size" and words[2] == "rank":
            pairs.append((int(words[1]), int(words[3])))
    return sorted(pairs)


def test_srun_two_ranks_share_one_communicator():
    r = subprocess.run(["srun", "-n", "2", "-t", "2", sys.executable, "-c", MPI_ONE_LINER],
                       capture_output=True, text=True, timeout=120, env=slurm_env())
    assert r.returncode == 0, r.stderr
    assert parse_sizes(r.stdout) == [(2, 0), (2, 1)], r.stdout + r.stderr


def test_sbatch_wait_runs_srun_step(tmp_path):
    script = tmp_path / "tiny.sbatch"
    script.write_text(
        "#!/bin/bash\n"
        "#SBATCH --job-name=celeste-test\n"
        "#SBATCH --ntasks=2\n"
        "#SBATCH --time=2\n"
        f"#SBATCH --output={tmp_path}/tiny-%j.out\n"
        f"srun {sys.executable} -c \"{MPI_ONE_LINER}\"\n"
        "echo batch-done\n"
    )
    job_id, status = sbatch_wait([script], cwd=tmp_path, timeout=180)
    out = (tmp_path / f"tiny-{job_id}.out").read_text()
    assert status == 0, out
    assert parse_sizes(out) == [(2, 0), (2, 1)], out
    assert out.rstrip().endswith("batch-done")


# ------------------------------------------------------------ celeste-infer --

def read_catalog(path):
    from astropy.table import Table
    return Table.read(path)


def assert_same_catalog(path_a, path_b):
    """Same columns in the same order, and every column exactly equal (NaN == NaN)."""
    a, b = read_catalog(path_a), read_catalog(path_b)
    assert a.colnames == b.colnames
    assert len(a) == len(b)
    assert len(a) > 0, f"{path_a} holds no sources"
    for name in a.colnames:
        np.testing.assert_array_equal(np.asarray(a[name]), np.asarray(b[name]),
                                      err_msg=f"column {name!r} differs")


@pytest.fixture(scope="module")
def local_catalog(tmp_path_factory):
    """Catalog of jobs/sample.toml from a plain (no Slurm, no MPI launcher) run."""
    if shutil.which("celeste-infer") is None:
        pytest.skip("celeste-infer not available")
    d = tmp_path_factory.mktemp("local")
    out = d / "catalog.fits"
    r = subprocess.run(["celeste-infer", "--job", str(SAMPLE_JOB), *SMALL, "--out", str(out),
                        "--run-dir", str(d / "run"), "--overwrite"],
                       cwd=ROOT, capture_output=True, text=True, timeout=3600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert out.is_file()
    return out


@needs_cli
@pytest.mark.slow
def test_infer_sbatch_matches_local_run(tmp_path, local_catalog):
    out = tmp_path / "catalog.fits"
    job_id, status = sbatch_wait(
        ["--output", tmp_path / "infer-%j.out", ROOT / "slurm" / "infer.sbatch", SAMPLE_JOB, *SMALL,
         "--out", out, "--run-dir", tmp_path / "run", "--overwrite"],
        cwd=ROOT, timeout=3600)
    log = (tmp_path / f"infer-{job_id}.out").read_text()
    assert status == 0, log[-5000:]
    assert_same_catalog(local_catalog, out)


@needs_cli
@pytest.mark.slow
def test_srun_two_ranks_matches_local_run(tmp_path, local_catalog):
    out = tmp_path / "catalog.fits"
    r = subprocess.run(["srun", "-n", "2", "celeste-infer", "--job", str(SAMPLE_JOB), *SMALL,
                        "--out", str(out), "--run-dir", str(tmp_path / "run"), "--overwrite"],
                       cwd=ROOT, capture_output=True, text=True, timeout=3600, env=slurm_env())
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert_same_catalog(local_catalog, out)
