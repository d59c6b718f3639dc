"""The run directory, resume, dynamic task claiming over MPI, and the merge.

A *run directory* holds everything one catalog run writes::

    run_dir/
        manifest.json          software version, options, input files (size, sha256)
        boxes/box-000123.fits  the result table of box 123 (written atomically)
        logs/rank-0000.log     one log file per MPI rank

Resume: a box is finished iff its result file exists and opens (its FITS
checksums verify).  Result files are written to a temporary name in the same
directory and renamed with :func:`os.replace`, so a killed job leaves either
the whole file or none; rerunning the same command skips the finished boxes.
A rerun with other inputs or options is refused (:class:`ConfigError`) unless
``restart=True``, which deletes the old box results.

Scheduling (:func:`run_tasks`): under MPI every rank, rank 0 included, claims
the next task from one shared counter (an MPI RMA window on rank 0 updated by
``MPI_Fetch_and_op`` with ``MPI_SUM``), so fast and slow boxes balance
themselves and no rank sits idle as a dispatcher.  Without mpi4py, or with one
rank, the same loop runs in-process.  Nothing here knows what a box is: the
caller passes ``process_fn(task_id) -> astropy.table.Table``.

Passive-target RMA progress: MPICH only serves a ``Fetch_and_op`` aimed at
rank 0 when rank 0 is inside an MPI call.  Rank 0 spends its time in
``process_fn``, so while tasks run it keeps a helper thread that calls
``MPI_Iprobe`` every few milliseconds (needs ``MPI_THREAD_MULTIPLE``, which
mpi4py requests by default).
"""
from dataclasses import dataclass, field
import contextlib
import hashlib
import json
import logging
import os
import statistics
import threading
import time
import traceback
import uuid
import warnings

import numpy as np

import celeste
from celeste.errors import CelesteError, ConfigError, DataError

__all__ = [
    "RunDir", "RunSummary", "open_run_dir", "run_tasks", "merge_results", "run_and_merge",
    "get_comm", "rank_size", "barrier", "file_record",
]

logger = logging.getLogger("celeste.run")

MANIFEST = "manifest.json"
BOX_DIR = "boxes"
LOG_DIR = "logs"
#: header keys run_tasks adds to each box table (dropped again by the merge)
PROVENANCE_KEYS = ("CEL_BOX", "CEL_RANK", "CEL_SEC", "CEL_VER")
_FITS_HOUSEKEEPING = ("CHECKSUM", "DATASUM", "EXTNAME")

#: the clock used for time limits (tests replace it)
_clock = time.monotonic


# ---------------------------------------------------------------------------
# MPI helpers

def get_comm():
    """The MPI world communicator if this process was started by an MPI launcher.

    Returns
    -------
    mpi4py.MPI.Comm or None
        ``MPI.COMM_WORLD`` if mpi4py imports with a working MPI library and
        either the world has more than one rank or a launcher's environment
        variable is set (``PMI_RANK``, ``PMI_SIZE``, ``PMIX_RANK``,
        ``OMPI_COMM_WORLD_SIZE``, ``MPI_LOCALNRANKS``, ``SLURM_STEP_ID``
        with ``SLURM_NTASKS``); otherwise None.  Never raises: a missing or
        broken MPI library gives None (and a debug log line).
    """
    launched = any(v in os.environ for v in (
        "PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "HYDI_CONTROL_FD",
    )) or ("SLURM_STEP_ID" in os.environ and "SLURM_NTASKS" in os.environ)
    if not launched:
        return None
    try:
        from mpi4py import MPI
        comm = MPI.COMM_WORLD
        comm.Get_size()
    except Exception as exc:  # ImportError, RuntimeError("cannot load MPI library"), ...
        logger.debug("no usable MPI (%s: %s); running in-process", type(exc).__name__, exc)
        return None
    ntasks = os.environ.get("SLURM_NTASKS", "1")
    if comm.Get_size() == 1 and ntasks.isdigit() and int(ntasks) > 1:
        logger.warning("SLURM_NTASKS=%s but the MPI world has 1 rank: each task runs alone (launch with "
                       "srun --mpi=pmi2 or mpiexec)", ntasks)
    return comm


def rank_size(comm):
    """``(rank, size)`` of ``comm``; ``(0, 1)`` for None."""
    if comm is None:
        return 0, 1
    return comm.Get_rank(), comm.Get_size()


def barrier(comm):
    """``comm.Barrier()``, or nothing when ``comm`` is None."""
    if comm is not None and comm.Get_size() > 1:
        comm.Barrier()


def _on_root(comm, fn):
    """Run ``fn()`` on rank 0, broadcast its result, raise its error everywhere.

    A :class:`CelesteError` raised on rank 0 is raised again (same class and
    message) on every rank, so no rank is left waiting in a collective call.
    """
    rank, size = rank_size(comm)
    if size == 1:
        return fn()
    payload = None
    if rank == 0:
        try:
            payload = ("ok", fn())
        except CelesteError as exc:
            payload = ("celeste", type(exc).__name__, str(exc))
            comm.bcast(payload, root=0)
            raise
        except Exception as exc:
            payload = ("other", type(exc).__name__, str(exc))
            comm.bcast(payload, root=0)
            raise
    payload = comm.bcast(payload, root=0)
    if payload[0] == "ok":
        return payload[1]
    if payload[0] == "celeste":
        cls = {"ConfigError": ConfigError, "DataError": DataError}.get(payload[1], CelesteError)
        raise cls(payload[2])
    raise CelesteError(f"rank 0 failed with {payload[1]}: {payload[2]}")


# ---------------------------------------------------------------------------
# files

def file_record(path):
    """Identity of an input file: absolute path, name, size and SHA-256.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    dict
        ``{"path": str, "name": str, "size": int, "sha256": str (hex)}``.

    Raises
    ------
    DataError
        If the file cannot be read (names the file).
    """
    path = os.path.abspath(os.fspath(path))
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        size = os.path.getsize(path)
    except OSError as exc:
        raise DataError(f"input file {path}: cannot read ({exc.strerror or exc})") from None
    return {"path": path, "name": os.path.basename(path), "size": size, "sha256": h.hexdigest()}


def _temp_name(path):
    d, b = os.path.split(path)
    return os.path.join(d, f".{b}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _is_temp_name(name):
    return name.startswith(".") and ".tmp-" in name


def _atomic_replace(tmp, path):
    """fsync ``tmp`` and rename it onto ``path``."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


@contextlib.contextmanager
def _atomic_path(path):
    """A temporary name beside ``path`` to write to: renamed onto ``path`` (after fsync) when
    the block ends, removed if it raises, so that ``path`` is never a partial file."""
    tmp = _temp_name(path)
    try:
        yield tmp
        _atomic_replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def _write_fits_atomic(table, path):
    """Write ``table`` as HDU 1 of a new FITS file at ``path``, atomically.

    The file is written under a temporary name in the same directory (with
    FITS CHECKSUM/DATASUM keywords) and renamed over ``path``; on any error the
    temporary file is removed and the error re-raised, so ``path`` is never a
    partial file.  Units are written as :func:`celeste.catalog.fits_table_hdu` describes.
    """
    from astropy.io import fits

    from celeste.catalog import fits_table_hdu

    with _atomic_path(path) as tmp:
        fits.HDUList([fits.PrimaryHDU(), fits_table_hdu(table)]).writeto(tmp, checksum=True)


def _write_json_atomic(obj, path):
    with _atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def _fits_table_ok(path):
    """Whether ``path`` is a readable FITS file with a table in HDU 1 whose
    checksums (if present) verify."""
    from astropy.io import fits
    from astropy.utils.exceptions import AstropyUserWarning

    try:
        with warnings.catch_warnings():
            # checksum mismatch and truncation are AstropyUserWarnings
            warnings.simplefilter("error", AstropyUserWarning)
            with fits.open(path, checksum=True, memmap=False) as hdul:
                if len(hdul) < 2 or not isinstance(hdul[1], fits.BinTableHDU):
                    return False
                hdul[1].data  # noqa: B018  (forces the read)
        return True
    except Exception:
        return False


# ---------------------------------------------------------------------------
# the run directory

class RunDir:
    """A run directory: manifest, per-box results, per-rank logs.

    Parameters
    ----------
    path : str or os.PathLike
        The directory (created on demand by :meth:`ensure_dirs`).
    """

    def __init__(self, path):
        self.path = os.path.abspath(os.fspath(path))

    def __repr__(self):
        return f"RunDir({self.path!r})"

    @property
    def manifest_path(self):
        return os.path.join(self.path, MANIFEST)

    @property
    def box_dir(self):
        return os.path.join(self.path, BOX_DIR)

    @property
    def log_dir(self):
        return os.path.join(self.path, LOG_DIR)

    def box_path(self, task_id):
        """Path of the result file of box ``task_id``: ``boxes/box-<id:06d>.fits``."""
        return os.path.join(self.box_dir, f"box-{int(task_id):06d}.fits")

    def log_path(self, rank):
        """Path of the log file of MPI rank ``rank``: ``logs/rank-<rank:04d>.log``."""
        return os.path.join(self.log_dir, f"rank-{int(rank):04d}.log")

    def ensure_dirs(self):
        """Create the directory and its ``boxes/`` and ``logs/`` subdirectories.

        Raises
        ------
        ConfigError
            If they cannot be created (names ``run_dir``).
        """
        try:
            os.makedirs(self.box_dir, exist_ok=True)
            os.makedirs(self.log_dir, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"run_dir {self.path}: cannot create ({exc.strerror or exc})") from None

    def read_manifest(self):
        """The manifest as a dict, or None if there is none.

        Raises
        ------
        DataError
            If ``manifest.json`` exists but is not valid JSON.
        """
        try:
            with open(self.manifest_path) as f:
                return json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise DataError(f"{self.manifest_path}: unreadable manifest ({exc}); "
                            "use restart=True (--restart) to start the run over") from None

    def is_finished(self, task_id):
        """Whether box ``task_id`` has a complete result file (exists, opens, checksums verify)."""
        p = self.box_path(task_id)
        return os.path.exists(p) and _fits_table_ok(p)

    def finished(self, task_ids):
        """The subset of ``task_ids`` whose result files are complete (a set of int)."""
        try:
            present = set(os.listdir(self.box_dir))
        except FileNotFoundError:
            return set()
        out = set()
        for t in task_ids:
            if os.path.basename(self.box_path(t)) in present:
                if _fits_table_ok(self.box_path(t)):
                    out.add(int(t))
                else:
                    logger.warning("box file %s is unreadable; box %d will be run again", self.box_path(t), t)
        return out

    def count_present(self, names):
        """How many of the file names ``names`` are in ``boxes/`` (cheap; no opening)."""
        try:
            return len(names.intersection(os.listdir(self.box_dir)))
        except FileNotFoundError:
            return 0

    def remove_stale_temp(self):
        """Delete temporary files left in ``boxes/`` by killed writers; returns how many."""
        n = 0
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(self.box_dir):
                if _is_temp_name(name):
                    with contextlib.suppress(OSError):
                        os.remove(os.path.join(self.box_dir, name))
                        n += 1
        return n

    def remove_results(self):
        """Delete every box result (and temporary) file in ``boxes/``; returns how many."""
        n = 0
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(self.box_dir):
                if (name.startswith("box-") and name.endswith(".fits")) or _is_temp_name(name):
                    os.remove(os.path.join(self.box_dir, name))
                    n += 1
        return n

    def write_result(self, task_id, table):
        """Write the result table of box ``task_id`` atomically (temp file + os.replace)."""
        _write_fits_atomic(table, self.box_path(task_id))

    def read_result(self, task_id):
        """The result table of box ``task_id``.

        Raises
        ------
        DataError
            If the file is missing or unreadable (names the file).
        """
        from astropy.table import Table

        p = self.box_path(task_id)
        if not os.path.exists(p):
            raise DataError(f"{p}: box {task_id} has no result file (run not finished?)")
        if not _fits_table_ok(p):
            raise DataError(f"{p}: box result file is corrupt; run again to redo box {task_id}")
        try:
            return Table.read(p, format="fits", hdu=1)
        except Exception as exc:
            raise DataError(f"{p}: cannot read box result ({exc})") from None


def _normalize_options(options):
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise ConfigError(f"options must be a dict, got {type(options).__name__}")
    try:
        return json.loads(json.dumps(options, sort_keys=True))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"options must be JSON-serializable ({exc})") from None


def _inputs_by_key(records):
    names = [r["name"] for r in records]
    use_name = len(set(names)) == len(names)
    return {(r["name"] if use_name else r["path"]): r for r in records}


def _manifest_differences(old, new):
    """Human-readable differences between two manifests (empty list if the same)."""
    diffs = []
    if old.get("version") != new["version"]:
        diffs.append(f"software version: manifest has {old.get('version')!r}, this is {new['version']!r}")
    oo, no = old.get("options", {}), new["options"]
    for k in sorted(set(oo) | set(no)):
        if k not in no:
            diffs.append(f"option {k!r} was {oo[k]!r} in the manifest and is not given now")
        elif k not in oo:
            diffs.append(f"option {k!r} = {no[k]!r} is not in the manifest")
        elif oo[k] != no[k]:
            diffs.append(f"option {k!r}: manifest has {oo[k]!r}, now {no[k]!r}")
    oi, ni = _inputs_by_key(old.get("inputs", [])), _inputs_by_key(new["inputs"])
    for k in sorted(set(oi) | set(ni)):
        if k not in ni:
            diffs.append(f"input file {k!r} is in the manifest but not given now")
        elif k not in oi:
            diffs.append(f"input file {k!r} ({ni[k]['path']}) is not in the manifest")
        elif (oi[k].get("size"), oi[k].get("sha256")) != (ni[k]["size"], ni[k]["sha256"]):
            diffs.append(f"input file {k!r} ({ni[k]['path']}) changed: size {oi[k].get('size')} -> "
                         f"{ni[k]['size']}, sha256 {str(oi[k].get('sha256'))[:12]}... -> {ni[k]['sha256'][:12]}...")
    return diffs


def open_run_dir(path, options=None, input_files=(), restart=False, comm=None):
    """Create or reopen a run directory, checking it was made with the same settings.

    On rank 0: creates ``boxes/`` and ``logs/``; if there is no manifest,
    writes one (atomically); if there is one, compares it with the current
    software version, ``options`` and ``input_files`` (size and SHA-256; a
    moved file with the same name and content counts as the same).  Other
    ranks wait for the outcome and raise the same error.

    Parameters
    ----------
    path : str or os.PathLike
        The run directory.
    options : dict, optional
        Every option that changes the results (JSON-serializable).
    input_files : sequence of str or os.PathLike
        The data files the run reads.
    restart : bool
        If True, delete any box results and write a fresh manifest instead of
        refusing a directory made with other settings.
    comm : mpi4py.MPI.Comm or None

    Returns
    -------
    RunDir

    Raises
    ------
    ConfigError
        If the directory's manifest differs and ``restart`` is False; the
        message names every difference (version, option, input file).
    DataError
        If an input file cannot be read, or the manifest is corrupt (and
        ``restart`` is False).
    """
    rd = RunDir(path)
    opts = _normalize_options(options)
    files = [os.fspath(p) for p in input_files]

    def work():
        rd.ensure_dirs()
        new = {
            "software": "celeste",
            "version": celeste.__version__,
            "options": opts,
            "inputs": [file_record(p) for p in files],
        }
        old = None if restart else rd.read_manifest()
        if old is not None:
            diffs = _manifest_differences(old, new)
            if diffs:
                raise ConfigError(
                    f"run_dir {rd.path} was made with other settings: " + "; ".join(diffs)
                    + ". Use restart=True (--restart) to discard its results, or another run directory.")
            logger.info("run directory %s: manifest matches; finished boxes will be skipped", rd.path)
            return None
        if restart:
            n = rd.remove_results()
            logger.info("run directory %s: restart, removed %d old box files", rd.path, n)
        new["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        _write_json_atomic(new, rd.manifest_path)
        return None

    _on_root(comm, work)
    return rd


# ---------------------------------------------------------------------------
# claiming tasks

class _LocalCounter:
    def __init__(self):
        self.n = 0

    def next(self):
        self.n += 1
        return self.n - 1

    def free(self):
        pass


class _RmaCounter:
    """A shared int64 counter in an RMA window on rank 0 (atomic fetch-and-add)."""

    def __init__(self, comm):
        from mpi4py import MPI

        self.MPI = MPI
        self.comm = comm
        self.win = MPI.Win.Allocate(8 if comm.Get_rank() == 0 else 0, 8, comm=comm)
        if comm.Get_rank() == 0:
            self.win.Lock(0, MPI.LOCK_EXCLUSIVE)
            np.frombuffer(self.win.tomemory(), dtype=np.int64)[0] = 0
            self.win.Unlock(0)
        self._one = np.ones(1, dtype=np.int64)
        self._res = np.zeros(1, dtype=np.int64)
        # a private communicator rank 0's helper thread probes to drive progress (Dup is collective)
        self.progress_comm = comm.Dup()
        comm.Barrier()

    def next(self):
        MPI = self.MPI
        self.win.Lock(0, MPI.LOCK_EXCLUSIVE)
        self.win.Fetch_and_op([self._one, MPI.INT64_T], [self._res, MPI.INT64_T], 0, 0, MPI.SUM)
        self.win.Unlock(0)
        return int(self._res[0])

    def free(self):
        self.comm.Barrier()
        self.win.Free()
        self.progress_comm.Free()


class _Helper:
    """Rank 0's helper thread: drives MPI progress and refreshes the progress bar."""

    def __init__(self, progress_comm, rd, names, total, initial, progress):
        self.stop = threading.Event()
        self.rd, self.names = rd, names
        self.pcomm = None
        if progress_comm is not None:
            from mpi4py import MPI
            if MPI.Query_thread() >= MPI.THREAD_MULTIPLE:
                self.pcomm = progress_comm
            else:
                logger.warning("rank 0: MPI thread level below THREAD_MULTIPLE; task claims by other ranks "
                               "may wait until rank 0 finishes its current task")
        self.bar = None
        if progress:
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=initial, desc="boxes", unit="box", dynamic_ncols=True)
        self.thread = None
        if self.pcomm is not None or self.bar is not None:
            self.thread = threading.Thread(target=self._loop, name="celeste-run-helper", daemon=True)
            self.thread.start()

    def refresh(self):
        if self.bar is not None:
            n = self.rd.count_present(self.names)
            if n != self.bar.n:
                self.bar.n = n
                self.bar.refresh()

    def _loop(self):
        last = 0.0
        while not self.stop.wait(0.005 if self.pcomm is not None else 0.5):
            if self.pcomm is not None:
                self.pcomm.Iprobe()
            now = time.monotonic()
            if now - last > 0.5:
                last = now
                with contextlib.suppress(Exception):
                    self.refresh()

    def close(self):
        self.stop.set()
        if self.thread is not None:
            self.thread.join()
        if self.bar is not None:
            self.refresh()
            self.bar.close()


@contextlib.contextmanager
def _rank_log(rd, rank):
    """Send the ``celeste`` loggers' INFO and above to ``logs/rank-NNNN.log`` meanwhile."""
    root = logging.getLogger("celeste")
    handler = logging.FileHandler(rd.log_path(rank), mode="a")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    old_level = root.level
    if root.getEffectiveLevel() > logging.INFO:
        root.setLevel(logging.INFO)
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()


@dataclass
class RunSummary:
    """What :func:`run_tasks` did (the same object on every rank).

    Attributes
    ----------
    n_tasks : int
        Number of task ids given.
    n_skipped : int
        Tasks already finished before this call.
    n_done : int
        Tasks finished by this call (all ranks).
    done_by_rank : list of int
        Tasks finished by this call, per rank.
    failed : dict int -> str
        Tasks whose ``process_fn`` (or result writing) raised: ``"ExcType: message"``.
    remaining : list of int
        Tasks without a result after this call (failed, or not claimed before
        the time limit), in the order given.
    stopped_by_time_limit : bool
        Whether some rank stopped claiming because of ``time_limit_s``.
    elapsed_s : float
        Wall time of the call on rank 0, seconds.
    """

    n_tasks: int
    n_skipped: int
    n_done: int
    done_by_rank: list
    failed: dict = field(default_factory=dict)
    remaining: list = field(default_factory=list)
    stopped_by_time_limit: bool = False
    elapsed_s: float = 0.0

    @property
    def complete(self):
        """True iff every task has a result."""
        return not self.remaining

    @property
    def status(self):
        """``"complete"`` or ``"incomplete"``."""
        return "complete" if self.complete else "incomplete"


def _check_task_ids(task_ids):
    try:
        ids = [int(t) for t in task_ids]
    except (TypeError, ValueError):
        raise ConfigError("task_ids must be integers") from None
    if any(t < 0 for t in ids):
        raise ConfigError("task_ids must be >= 0")
    if len(set(ids)) != len(ids):
        raise ConfigError("task_ids has duplicates")
    return ids


def run_tasks(task_ids, process_fn, run_dir, comm=None, time_limit_s=None, progress=True):
    """Run ``process_fn`` on every unfinished task, claiming tasks dynamically.

    Every rank of ``comm`` must call this with the same arguments.  Rank 0
    lists the unfinished tasks (and removes temporary files left by killed
    writers); then each rank repeatedly claims the next unfinished task from a
    shared atomic counter, calls ``process_fn(task_id)`` and writes the
    returned table to ``boxes/box-<id:06d>.fits`` atomically, adding header
    keys ``CEL_BOX``, ``CEL_RANK``, ``CEL_SEC`` (seconds) and ``CEL_VER``.
    A task whose ``process_fn`` raises is logged with its traceback, left
    without a result and reported in ``RunSummary.failed``; the other tasks
    go on.

    Parameters
    ----------
    task_ids : sequence of int
        Task (box) ids, distinct and >= 0; claimed in this order.
    process_fn : callable (int) -> astropy.table.Table
        Computes one task's result.
    run_dir : str, os.PathLike or RunDir
        The run directory (see :func:`open_run_dir` for the manifest check).
    comm : mpi4py.MPI.Comm or None
        None (or a size-1 communicator) runs everything in this process.
    time_limit_s : float or None
        Wall-clock budget in seconds from the call.  A rank stops claiming
        when ``elapsed + 1.5 * median(its task times so far)`` exceeds it.
    progress : bool
        Show a tqdm bar on rank 0 (counting result files present).

    Returns
    -------
    RunSummary
        Identical on every rank; ``summary.complete`` tells whether every
        task now has a result.

    Raises
    ------
    ConfigError
        If ``task_ids`` are not distinct non-negative integers, or the run
        directory cannot be created.
    """
    rd = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    rank, size = rank_size(comm)
    ids = _check_task_ids(task_ids)
    if time_limit_s is not None:
        try:
            time_limit_s = float(time_limit_s)
        except (TypeError, ValueError):
            raise ConfigError(f"time_limit_s must be a number of seconds, got {time_limit_s!r}") from None
        if not time_limit_s > 0:
            raise ConfigError(f"time_limit_s must be positive, got {time_limit_s!r}")
    t_start = _clock()

    def setup():
        rd.ensure_dirs()
        n_tmp = rd.remove_stale_temp()
        if n_tmp:
            logger.info("rank 0: removed %d temporary files left by an interrupted run", n_tmp)
        done = rd.finished(ids)
        return [t for t in ids if t not in done]

    pending = _on_root(comm, setup)
    n_skipped = len(ids) - len(pending)
    done_here, failed_here, durations = [], {}, []
    stopped = False
    with _rank_log(rd, rank):
        if rank == 0:
            logger.info("rank 0: %d tasks, %d already finished, %d to run on %d rank(s)",
                        len(ids), n_skipped, len(pending), size)
        counter = _RmaCounter(comm) if size > 1 else _LocalCounter()
        helper = None
        if rank == 0:
            names = {os.path.basename(rd.box_path(t)) for t in ids}
            helper = _Helper(getattr(counter, "progress_comm", None), rd, names, len(ids), n_skipped, progress)
        try:
            while True:
                if time_limit_s is not None:
                    elapsed = _clock() - t_start
                    typical = statistics.median(durations) if durations else 0.0
                    if elapsed + 1.5 * typical > time_limit_s:
                        logger.info("rank %d: stopping, %.1f s elapsed + 1.5 x %.1f s (median task) > time "
                                    "limit %.1f s", rank, elapsed, typical, time_limit_s)
                        stopped = True
                        break
                k = counter.next()
                if k >= len(pending):
                    break
                tid = pending[k]
                ok = _run_one(tid, process_fn, rd, rank, durations, failed_here)
                if ok:
                    done_here.append(tid)
        finally:
            if helper is not None:
                helper.close()
        counter.free()
        logger.info("rank %d: finished %d tasks, %d failed", rank, len(done_here), len(failed_here))

    if size > 1:
        parts = comm.allgather((done_here, failed_here, stopped))
    else:
        parts = [(done_here, failed_here, stopped)]
    done_all = set()
    failed = {}
    for d, f, _ in parts:
        done_all.update(d)
        failed.update(f)
    elapsed = _clock() - t_start
    if size > 1:
        elapsed = comm.bcast(elapsed, root=0)
    summary = RunSummary(
        n_tasks=len(ids), n_skipped=n_skipped, n_done=len(done_all),
        done_by_rank=[len(p[0]) for p in parts], failed=dict(sorted(failed.items())),
        remaining=[t for t in pending if t not in done_all],
        stopped_by_time_limit=any(p[2] for p in parts), elapsed_s=elapsed,
    )
    if rank == 0:
        logger.info("rank 0: run %s: %d done now, %d done before, %d failed, %d remaining, %.1f s",
                    summary.status, summary.n_done, n_skipped, len(failed), len(summary.remaining), elapsed)
    return summary


def _run_one(tid, process_fn, rd, rank, durations, failed):
    """Process and save one task; returns True on success."""
    from astropy.table import Table

    logger.info("rank %d: box %d started", rank, tid)
    t0 = _clock()
    try:
        table = process_fn(tid)
        if not isinstance(table, Table):
            raise TypeError(f"process_fn returned {type(table).__name__}, not an astropy Table")
        sec = _clock() - t0
        table = table.copy(copy_data=False)
        table.meta["CEL_BOX"] = int(tid)
        table.meta["CEL_RANK"] = int(rank)
        table.meta["CEL_SEC"] = round(float(sec), 3)
        table.meta["CEL_VER"] = celeste.__version__
        rd.write_result(tid, table)
    except Exception as exc:
        sec = _clock() - t0
        durations.append(sec)
        failed[tid] = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, CelesteError):
            # bad input or configuration: the message names the file; the traceback is for debugging only
            logger.error("rank %d: box %d failed after %.2f s: %s: %s", rank, tid, sec, type(exc).__name__, exc)
            logger.debug("traceback of box %d:\n%s", tid, traceback.format_exc())
        else:
            logger.error("rank %d: box %d failed after %.2f s: %s: %s\n%s", rank, tid, sec, type(exc).__name__, exc,
                         traceback.format_exc())
        return False
    durations.append(sec)
    logger.info("rank %d: box %d done in %.2f s (%d rows)", rank, tid, sec, len(table))
    return True


# ---------------------------------------------------------------------------
# merging

def merge_results(run_dir, task_ids, out_path, meta=None, overwrite=False, drop_columns=()):
    """Stack every box's result into one catalog sorted by ``objid``.

    Parameters
    ----------
    run_dir : str, os.PathLike or RunDir
    task_ids : sequence of int
        The boxes to merge (all must be finished).
    out_path : str or os.PathLike
        Catalog FITS file to write (table in HDU 1), written atomically (a
        temporary name in the same directory, then os.replace).
    meta : dict, optional
        Header keys for the catalog table (added after the keys every box
        table shares; the per-box keys ``CEL_BOX`` etc. are dropped).
    drop_columns : sequence of str
        Columns kept in the box files but left out of the catalog (e.g. timings,
        which would make catalogs of identical runs differ).
    overwrite : bool
        Replace an existing ``out_path``.

    Returns
    -------
    astropy.table.Table
        The merged catalog, as written.

    Raises
    ------
    ConfigError
        If ``out_path`` exists and ``overwrite`` is False, or ``task_ids``
        is empty or invalid.
    DataError
        If a box result is missing or corrupt (names the file), the boxes'
        columns differ, a table lacks ``objid``, or an ``objid`` appears more
        than once (names the id and the box files holding it).
    """
    from astropy.table import Table, vstack

    rd = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    ids = _check_task_ids(task_ids)
    if not ids:
        raise ConfigError("task_ids is empty: nothing to merge")
    out_path = os.path.abspath(os.fspath(out_path))
    if os.path.exists(out_path) and not overwrite:
        raise ConfigError(f"out_path {out_path} exists; pass overwrite=True (--overwrite) to replace it")
    tables, sources = [], []
    for t in ids:
        tab = rd.read_result(t)
        if "objid" not in tab.colnames:
            raise DataError(f"{rd.box_path(t)}: box result has no 'objid' column")
        tables.append(tab)
        sources.append(np.full(len(tab), t, dtype=np.int64))
    # header keys shared (same value) by every box, minus per-box and FITS keys
    drop = set(PROVENANCE_KEYS) | set(_FITS_HOUSEKEEPING)
    common = {}
    first = tables[0].meta
    for k, v in first.items():
        if k.upper() in drop or k.lower() in ("comments", "history"):
            continue
        if all(k in tb.meta and _same(tb.meta[k], v) for tb in tables[1:]):
            common[k] = v
    nonempty = [tb for tb in tables if len(tb) > 0] or tables[:1]
    cols0 = nonempty[0].colnames
    for t, tb in zip(ids, tables):
        if len(tb) > 0 and set(tb.colnames) != set(cols0):
            raise DataError(f"{rd.box_path(t)}: columns {tb.colnames} differ from the other boxes' {cols0}")
    stripped = []
    for tb in nonempty:
        tb = tb.copy(copy_data=False)
        tb.meta.clear()
        stripped.append(tb[[c for c in cols0 if c not in drop_columns]])
    try:
        merged = vstack(stripped, join_type="exact", metadata_conflicts="silent") if len(stripped) > 1 else stripped[0]
    except Exception as exc:
        raise DataError(f"run_dir {rd.path}: box tables cannot be stacked ({exc})") from None
    box_of = np.concatenate([s for s, tb in zip(sources, tables) if len(tb) > 0] or [np.zeros(0, np.int64)])
    order = np.argsort(np.asarray(merged["objid"]), kind="stable")
    merged = merged[order]
    box_of = box_of[order] if len(box_of) == len(order) else box_of
    objid = np.asarray(merged["objid"])
    if len(objid) > 1:
        dup = objid[1:] == objid[:-1]
        if dup.any():
            i = int(np.flatnonzero(dup)[0])
            bad = objid[i].item()
            where = sorted({int(b) for b in box_of[objid == bad]}) if len(box_of) == len(objid) else []
            files = ", ".join(rd.box_path(b) for b in where)
            raise DataError(f"objid {bad!r} appears {int((objid == bad).sum())} times "
                            f"({int(dup.sum())} duplicate rows in all), in {files}")
    merged.meta.clear()
    merged.meta.update(common)
    if meta:
        merged.meta.update(meta)
    if os.path.exists(out_path) and not overwrite:  # someone else wrote it meanwhile
        raise ConfigError(f"out_path {out_path} exists; pass overwrite=True (--overwrite) to replace it")
    try:
        _write_fits_atomic(merged, out_path)
    except OSError as exc:
        raise ConfigError(f"out_path {out_path}: cannot write ({exc.strerror or exc})") from None
    logger.info("merged %d boxes, %d rows into %s", len(ids), len(merged), out_path)
    return merged


def _same(a, b):
    try:
        return bool(np.all(a == b))
    except Exception:
        return False


def run_and_merge(task_ids, process_fn, run_dir, out_path, comm=None, time_limit_s=None, progress=True,
                  meta=None, overwrite=False):
    """:func:`run_tasks`, then (if complete) :func:`merge_results` on rank 0.

    The output is checked before any task runs, so an existing ``out_path``
    without ``overwrite`` fails at once rather than after the run.

    Parameters
    ----------
    task_ids, process_fn, run_dir, comm, time_limit_s, progress
        As :func:`run_tasks`.
    out_path, meta, overwrite
        As :func:`merge_results`.

    Returns
    -------
    RunSummary
        The run's summary (on every rank); the catalog exists iff
        ``summary.complete``.

    Raises
    ------
    ConfigError, DataError
        As :func:`run_tasks` and :func:`merge_results`, on every rank.
    """
    out = os.path.abspath(os.fspath(out_path))

    def check_out():
        if os.path.exists(out) and not overwrite:
            raise ConfigError(f"out_path {out} exists; pass overwrite=True (--overwrite) to replace it")

    _on_root(comm, check_out)
    summary = run_tasks(task_ids, process_fn, run_dir, comm=comm, time_limit_s=time_limit_s, progress=progress)
    if summary.complete:
        def merge():
            merge_results(run_dir, task_ids, out, meta=meta, overwrite=overwrite)

        _on_root(comm, merge)
    else:
        rank, _ = rank_size(comm)
        if rank == 0:
            logger.warning("rank 0: run incomplete (%d of %d tasks remaining); catalog not written; "
                           "run the same command again to resume", len(summary.remaining), summary.n_tasks)
    return summary
