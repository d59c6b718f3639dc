"""The catalog does not depend on how the work is spread, and a killed run resumes.

Real data: a 72 x 72 arcsec region of SDSS field 2583-2-136 cut by ``--box-arcsec 30
--overlap-arcsec 10`` into a 3 x 3 grid of 24-arcsec box cores, about thirty sources.  Every run starts from the same initial catalog (SEP detection on
the field, written once as an ``--init`` file) and reads frames decompressed once
into a temporary data directory, so a run costs seconds, not the minute that
detection and bzip2 decompression of every box would add.

* ``mpiexec -n 1``, ``-n 2`` and ``-n 3``: the merged catalogs are bit-for-bit equal
  (every column except ``opt_seconds``, a timing).  Each MPI run must show one log file
  per rank (``logs/rank-NNNN.log``): a launcher that started N separate size-1 jobs
  would leave only ``rank-0000.log``.
Runs from an ``--init`` catalog skip the residual round unless asked; the tests ask for one
(``--residual-rounds 1``, the default of detection runs), so sources found in the model
residuals are covered too.

* ``--threads 1`` and ``--threads 2``: bit-for-bit equal (CYCLADES batches depend only
  on the seed; see :mod:`celeste.infer`).
* A run under ``mpiexec -n 2`` killed (SIGKILL to its process group) after some boxes
  finished, then rerun with the same command on one rank: completes, every source of
  the uninterrupted run appears exactly once, with the same values.

Everything here launches processes and takes minutes: marked ``slow`` (and ``mpi``).
"""
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from fielddata import ROOT, cli_command, read_catalog
from fielddata import run_command as run_cli

#: columns that are timings, not results
TIMING_COLUMNS = ("opt_seconds",)

MPIEXEC = shutil.which("mpiexec")
needs_mpi = pytest.mark.skipif(MPIEXEC is None, reason="mpiexec not found on PATH (pip install mpi4py mpich)")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def staged(plain_data, detected_init):
    """(data_dir, init_path) shared by the module's runs (conftest.py)."""
    return plain_data, detected_init


def assert_identical(a, b, what):
    """Every column but the timings equal bit for bit (NaN == NaN), same row order."""
    assert a.colnames == b.colnames, what
    assert len(a) == len(b), f"{what}: {len(a)} vs {len(b)} rows"
    for name in a.colnames:
        if name in TIMING_COLUMNS:
            continue
        x, y = np.asarray(a[name]), np.asarray(b[name])
        nan_ok = x.dtype.kind == "f"
        assert np.array_equal(x, y, equal_nan=nan_ok), (
            f"{what}: column {name} differs in {int(np.sum(x != y))} rows, max |diff| "
            f"{np.nanmax(np.abs(x.astype(float) - y.astype(float))) if x.dtype.kind in 'fiu' else '-'}")


def rank_logs(run_dir):
    return sorted(p.name for p in (Path(run_dir) / "logs").glob("rank-*.log"))


def box_ranks(run_dir):
    """CEL_RANK of every box result, by box id."""
    out = {}
    for p in sorted((Path(run_dir) / "boxes").glob("box-*.fits")):
        h = fits.getheader(p, 1)
        out[int(h["CEL_BOX"])] = int(h["CEL_RANK"])
    return out


@pytest.fixture(scope="module")
def reference(staged, tmp_path_factory):
    """The 1-rank, 1-thread catalog (no MPI launcher)."""
    data_dir, init = staged
    d = tmp_path_factory.mktemp("ref")
    out, rd = d / "cat.fits", d / "cat.run"
    run_cli(cli_command(data_dir, init, out, rd, threads=1))
    cat = read_catalog(out)
    return cat, rd


def test_reference_region_shape(reference):
    """The region keeps several ranks busy: 9 boxes, a few dozen sources, all finite."""
    cat, rd = reference
    assert len(box_ranks(rd)) == 9
    assert 20 <= len(cat) <= 60, len(cat)
    assert len(np.unique(cat["objid"])) == len(cat)
    assert np.all(np.isfinite(cat["flux_r"]))


def test_threads_identical(staged, reference, tmp_path):
    """--threads 2 gives the same catalog, bit for bit, as --threads 1."""
    data_dir, init = staged
    out, rd = tmp_path / "t2.fits", tmp_path / "t2.run"
    run_cli(cli_command(data_dir, init, out, rd, threads=2))
    assert_identical(reference[0], read_catalog(out), "threads 2 vs 1")


@needs_mpi
@pytest.mark.mpi
@pytest.mark.parametrize("ranks", [1, 2, 3])
def test_ranks_identical(staged, reference, tmp_path, ranks):
    """mpiexec -n 1, 2, 3 give the reference catalog bit for bit, with one log per rank."""
    data_dir, init = staged
    out, rd = tmp_path / f"n{ranks}.fits", tmp_path / f"n{ranks}.run"
    run_cli(cli_command(data_dir, init, out, rd, ranks=ranks))
    assert rank_logs(rd) == [f"rank-{r:04d}.log" for r in range(ranks)], "communicator size is not %d" % ranks
    used = set(box_ranks(rd).values())
    assert used <= set(range(ranks)) and len(box_ranks(rd)) == 9
    assert_identical(reference[0], read_catalog(out), f"mpiexec -n {ranks} vs in-process")


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


@needs_mpi
@pytest.mark.mpi
def test_killed_run_resumes(staged, reference, tmp_path):
    """Kill an mpiexec -n 2 run after >= 2 boxes; rerun on 1 rank: nothing lost or duplicated."""
    data_dir, init = staged
    out, rd = tmp_path / "k.fits", tmp_path / "k.run"
    cmd = cli_command(data_dir, init, out, rd, ranks=2)
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    boxes = Path(rd) / "boxes"
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 300:
            done = list(boxes.glob("box-*.fits")) if boxes.is_dir() else []
            if len(done) >= 2 or proc.poll() is not None:
                break
            time.sleep(0.05)
    finally:
        _kill_group(proc)
    before = {p.name: p.stat().st_mtime_ns for p in boxes.glob("box-*.fits")}
    assert 2 <= len(before) < 9, f"kill came too late or too early: {len(before)} boxes finished"
    assert not out.exists()
    run_cli(cli_command(data_dir, init, out, rd, ranks=1))
    after = box_ranks(rd)
    assert sorted(after) == list(range(9))
    for name, mtime in before.items():  # finished boxes were kept, not recomputed
        assert (boxes / name).stat().st_mtime_ns == mtime, f"{name} was recomputed"
    cat = read_catalog(out)
    assert len(np.unique(cat["objid"])) == len(cat), "duplicated sources"
    assert set(cat["objid"]) == set(reference[0]["objid"]), "sources lost or added"
    assert_identical(reference[0], cat, "killed and resumed vs uninterrupted")
