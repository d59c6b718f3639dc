"""A small program the tests of celeste.run launch under ``mpiexec``.

It runs a dummy per-box function over ``--tasks`` boxes in a run directory and
merges the catalog, exactly as the real pipeline would call
:func:`celeste.run.run_and_merge`.  Each call of the dummy function is first
appended to ``<calls-dir>/calls-rank-<rank>.txt`` (so the tests can count how
often each task was run and by which rank), then it sleeps ``--sleep``
seconds and returns :func:`dummy_table`.

Usage::

    mpiexec -n 2 python -m mpi4py tests/mpi_run_driver.py RUN_DIR OUT.fits \\
        --tasks 12 --expect-size 2 --calls-dir DIR [--sleep 0.05] [--restart]

Exits with status 3 if the communicator size differs from ``--expect-size``
(for example a launcher that started N separate size-1 jobs).
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from astropy.table import Table  # noqa: E402

from celeste.run import get_comm, open_run_dir, rank_size, run_and_merge  # noqa: E402


def dummy_table(task_id, rank):
    """Deterministic result of one task: ``task_id % 4`` rows (0 to 3).

    Columns: ``objid`` (int64, ``task_id * 1000 + k``), ``flux`` (float64,
    ``200 + 100 sin(objid)``), ``ra`` (float64, ``10 + 0.01 task_id + 0.001 k``),
    ``rank`` (int32, the rank that ran the task).
    """
    k = np.arange(task_id % 4)
    objid = task_id * 1000 + k
    return Table({
        "objid": objid.astype(np.int64),
        "flux": 200.0 + 100.0 * np.sin(objid.astype(np.float64)),
        "ra": 10.0 + 0.01 * task_id + 0.001 * k,
        "rank": np.full(len(k), rank, dtype=np.int32),
    })


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("out")
    ap.add_argument("--tasks", type=int, default=12)
    ap.add_argument("--expect-size", type=int, required=True)
    ap.add_argument("--calls-dir", required=True)
    ap.add_argument("--sleep", type=float, default=0.0)
    ap.add_argument("--input", default=__file__, help="a file recorded in the manifest")
    ap.add_argument("--restart", action="store_true")
    args = ap.parse_args(argv)

    comm = get_comm()
    rank, size = rank_size(comm)
    if size != args.expect_size:
        print(f"rank {rank}: communicator size {size}, expected {args.expect_size}", file=sys.stderr)
        return 3
    os.makedirs(args.calls_dir, exist_ok=True)
    calls = os.path.join(args.calls_dir, f"calls-rank-{rank}.txt")

    def process(task_id):
        with open(calls, "a") as f:
            f.write(f"{task_id}\n")
            f.flush()
            os.fsync(f.fileno())
        if args.sleep:
            time.sleep(args.sleep)
        return dummy_table(task_id, rank)

    # the options do not include --sleep: it does not change the results
    open_run_dir(args.run_dir, options={"driver": "dummy", "tasks": args.tasks}, input_files=[args.input],
                 restart=args.restart, comm=comm)
    summary = run_and_merge(list(range(args.tasks)), process, args.run_dir, args.out, comm=comm,
                            progress=False, meta={"DRIVER": "dummy", "NRANKS": size})
    if rank == 0:
        print(json.dumps({"size": size, "complete": summary.complete, "n_done": summary.n_done,
                          "n_skipped": summary.n_skipped, "done_by_rank": summary.done_by_rank,
                          "failed": {str(k): v for k, v in summary.failed.items()}}), flush=True)
    return 0 if summary.complete else 1


if __name__ == "__main__":
    sys.exit(main())
