"""Discrete-event simulation of the dynamic box scheduler at 1 to 8,192 nodes.

The pipeline's scheduler (:func:`celeste.run.run_tasks`) is a shared counter on rank 0:
every rank, when idle, claims the next box with one ``MPI_Fetch_and_op``, loads the
box's images, optimizes it, writes its result, and claims again.  This module replays
that loop for ``nodes x ranks_per_node`` ranks on a survey-size workload whose per-box
costs are drawn from times *measured* on this machine (see ``bench/scaling.py``).

Model (the assumptions are repeated in the README):

* **Boxes.**  The survey is cut into boxes of ``box_arcsec`` (core) with an
  ``overlap_arcsec`` margin.  Strong scaling: a fixed survey, SDSS DR-size by default
  (``survey_deg2`` = 14,555 deg^2 holding ``survey_sources`` = 188 million sources,
  the workload of Regier et al., IPDPS 2018); weak scaling: ``boxes_per_rank`` boxes
  per rank.  Boxes are claimed in id order (the pipeline does not sort them by cost).
* **Sources per box.**  Negative binomial (gamma-Poisson) with the survey's mean
  density times the core area, and coefficient of variation ``count_cv`` (sky density
  varies many-fold between high latitude, the Galactic plane and clusters such as M2).
  A box optimizes the sources of its extended region: ``n_ext = n_core * (ext/core area)``.
* **Compute.**  A box's optimization time is the sum over its ``n_ext`` sources of
  per-source times drawn (bootstrap, with replacement) from the measured per-source
  optimizer times (catalog column ``opt_seconds``, one thread).  Threads are not
  modelled: a rank is one core.
* **Load, CPU part.**  Image loading, sky refinement, PSF fits and model set-up: the
  measured per-box times ``CEL_SEC - CEL_OPT`` (drawn with replacement), scaled by the
  ratio of the simulated to the measured extended-region area (pixel work).
* **Load, I/O part.**  ``io_mb_per_box`` megabytes per box through a shared file system
  of aggregate bandwidth ``fs_gbps`` and a per-node link of ``node_gbps``; a rank that
  starts loading while ``k`` ranks load gets ``min(node_gbps / loaders on its node,
  fs_gbps / k)`` for the whole read (fair share frozen at the start: no re-sharing when
  others finish, which is pessimistic under bursts and exact in steady state).  Every
  rank's first load happens at t = 0 together: the start-up burst.
* **Claims.**  The counter serves one claim at a time, ``claim_us`` microseconds each,
  plus ``latency_us`` network round trip; concurrent claims queue (FIFO).
* **Results.**  Writing a box's result is ignored (kilobytes).  No failures, no
  stragglers beyond what the sampled costs give, no start-up time of the job itself.

Efficiency = (sum over boxes of CPU load + compute time) / (ranks x makespan): the
fraction of rank-seconds spent on useful work.  The loss is split into *I/O wait*
(time ranks spent reading at the contended bandwidth), *claim wait* and *idle* (ranks
that found the counter exhausted while others still worked: load imbalance and the
tail of the last boxes).

Everything is seeded: the same arguments give the same numbers.
"""
import argparse
import heapq
from dataclasses import asdict, dataclass

import numpy as np

ARCSEC_PER_DEG = 3600.0


@dataclass
class SimParams:
    """Parameters of :func:`simulate` (defaults as stated in the module docstring)."""

    ranks_per_node: int = 2
    box_arcsec: float = 240.0
    overlap_arcsec: float = 20.0
    survey_deg2: float = 14555.0
    survey_sources: float = 188e6
    count_cv: float = 1.0
    io_mb_per_box: float = 93.0
    fs_gbps: float = 100.0
    node_gbps: float = 1.0
    claim_us: float = 5.0
    latency_us: float = 5.0
    seed: int = 0

    def core_deg2(self):
        return (self.box_arcsec / ARCSEC_PER_DEG) ** 2

    def ext_deg2(self):
        return ((self.box_arcsec + 2 * self.overlap_arcsec) / ARCSEC_PER_DEG) ** 2

    def mean_sources_per_box(self):
        return self.survey_sources / self.survey_deg2 * self.core_deg2()

    def survey_boxes(self):
        return int(round(self.survey_deg2 / self.core_deg2()))


@dataclass
class Measured:
    """What bench/scaling.py measured on this machine.

    Attributes
    ----------
    source_seconds : ndarray (m,)
        Per-source optimizer times, seconds (one thread).
    load_seconds : ndarray (k,)
        Per-box CPU load/set-up times (CEL_SEC - CEL_OPT), seconds.
    ext_deg2 : float
        Extended-region area of the measured boxes, deg^2.
    """

    source_seconds: np.ndarray
    load_seconds: np.ndarray
    ext_deg2: float


def box_costs(n_boxes, meas, prm, rng):
    """Per-box CPU load time and compute time (seconds), arrays of shape (n_boxes,)."""
    mean = prm.mean_sources_per_box()
    if prm.count_cv > 0:
        # gamma-Poisson: Var = mean + (cv^2 - 1/mean) mean^2 >= mean; shape k = 1 / (cv^2 - 1/mean)
        extra = max(prm.count_cv ** 2 - 1.0 / mean, 1e-6)
        lam = rng.gamma(1.0 / extra, mean * extra, size=n_boxes)
    else:
        lam = np.full(n_boxes, mean)
    n_core = rng.poisson(lam)
    n_ext = np.rint(n_core * (prm.ext_deg2() / prm.core_deg2())).astype(np.int64)
    # sum of n_ext bootstrap draws per box, in chunks of boxes to bound memory
    src = np.asarray(meas.source_seconds, float)
    compute = np.zeros(n_boxes)
    chunk = 100_000
    for c0 in range(0, n_boxes, chunk):
        n = n_ext[c0:c0 + chunk]
        total = int(n.sum())
        if total == 0:
            continue
        draws = src[rng.integers(0, len(src), size=total)]
        csum = np.concatenate([[0.0], np.cumsum(draws)])
        ends = np.cumsum(n)
        compute[c0:c0 + chunk] = csum[ends] - csum[ends - n]
    area = prm.ext_deg2() / meas.ext_deg2
    load = rng.choice(np.asarray(meas.load_seconds, float), size=n_boxes, replace=True) * area
    return load, compute, n_core


@dataclass
class SimResult:
    nodes: int
    ranks: int
    boxes: int
    makespan_s: float
    efficiency: float
    io_wait_frac: float
    claim_wait_frac: float
    idle_frac: float
    last_box_s: float

    def limiter(self):
        losses = {"I/O": self.io_wait_frac, "claims": self.claim_wait_frac, "imbalance/tail": self.idle_frac}
        return max(losses, key=losses.get)


def simulate(nodes, meas, prm, n_boxes=None, boxes_per_rank=None):
    """Replay the shared-counter scheduler; returns a :class:`SimResult`.

    Parameters
    ----------
    nodes : int
    meas : Measured
    prm : SimParams
    n_boxes : int, optional
        Total boxes (strong scaling); default the survey's box count.
    boxes_per_rank : int, optional
        Weak scaling: ``boxes_per_rank * ranks`` boxes instead.
    """
    P = nodes * prm.ranks_per_node
    if boxes_per_rank is not None:
        n_boxes = boxes_per_rank * P
    elif n_boxes is None:
        n_boxes = prm.survey_boxes()
    rng = np.random.default_rng([prm.seed, nodes, n_boxes])
    load_cpu, compute, _ = box_costs(n_boxes, meas, prm, rng)
    mb = prm.io_mb_per_box
    claim_s, lat_s = prm.claim_us * 1e-6, prm.latency_us * 1e-6

    # event queue of ranks becoming idle: (time, rank)
    ready = [(0.0, r) for r in range(P)]
    heapq.heapify(ready)
    counter_free = 0.0
    loading_until = []          # heap of load end times (all ranks)
    node_loading = [[] for _ in range(nodes)]  # per node heaps of load end times
    io_wait = claim_wait = 0.0
    end_of_rank = np.zeros(P)
    next_box = 0
    last_box_s = 0.0
    while ready:
        t, r = heapq.heappop(ready)
        # claim at the counter (FIFO, one at a time)
        start = max(t, counter_free)
        counter_free = start + claim_s
        got = counter_free + lat_s
        claim_wait += got - t
        if next_box >= n_boxes:
            end_of_rank[r] = got
            continue
        b = next_box
        next_box += 1
        # I/O share frozen at the start of the read
        while loading_until and loading_until[0] <= got:
            heapq.heappop(loading_until)
        nd = node_loading[r // prm.ranks_per_node]
        while nd and nd[0] <= got:
            heapq.heappop(nd)
        k_all = len(loading_until) + 1
        k_node = len(nd) + 1
        if b < P:   # every rank's first box: the start-up burst, everyone reads at once
            k_all = min(P, n_boxes)
            k_node = min(prm.ranks_per_node, n_boxes)
        bw_mb_s = 1000.0 * min(prm.node_gbps / k_node, prm.fs_gbps / k_all)
        t_io = mb / bw_mb_s if mb > 0 else 0.0
        io_wait += t_io
        heapq.heappush(loading_until, got + t_io)
        heapq.heappush(nd, got + t_io)
        done = got + t_io + load_cpu[b] + compute[b]
        if b >= n_boxes - P:
            last_box_s = max(last_box_s, load_cpu[b] + compute[b])
        heapq.heappush(ready, (done, r))
    makespan = float(end_of_rank.max())
    useful = float(load_cpu.sum() + compute.sum())
    total = P * makespan
    return SimResult(nodes=nodes, ranks=P, boxes=n_boxes, makespan_s=makespan, efficiency=useful / total,
                     io_wait_frac=io_wait / total, claim_wait_frac=claim_wait / total,
                     idle_frac=max(0.0, 1.0 - (useful + io_wait + claim_wait) / total), last_box_s=last_box_s)


NODE_COUNTS = (1, 8, 64, 512, 4096, 8192)


def report(meas, prm, node_counts=NODE_COUNTS, boxes_per_rank=20, strong_boxes=None, out=print):
    """Print the strong- and weak-scaling tables; returns {"strong": [...], "weak": [...]} of SimResult."""
    res = {"strong": [], "weak": []}
    nb = strong_boxes or prm.survey_boxes()
    out(f"scheduler simulation ({prm.ranks_per_node} ranks/node, {prm.box_arcsec:.0f}\" boxes + "
        f"{prm.overlap_arcsec:.0f}\" overlap, {prm.mean_sources_per_box():.1f} sources/box mean, count cv "
        f"{prm.count_cv}, {prm.io_mb_per_box:.0f} MB/box, fs {prm.fs_gbps} GB/s, node {prm.node_gbps} GB/s, "
        f"claim {prm.claim_us} us + {prm.latency_us} us)")
    out(f"  measured input: {len(meas.source_seconds)} per-source times (mean {np.mean(meas.source_seconds):.3f} s), "
        f"{len(meas.load_seconds)} per-box load times (mean {np.mean(meas.load_seconds):.2f} s over "
        f"{meas.ext_deg2 * 3600 ** 2:.0f} arcsec^2)")
    hdr = (f"  {'nodes':>6} {'ranks':>6} {'boxes':>9} {'makespan_s':>11} {'eff':>6} {'io':>6} {'claim':>6} "
           f"{'idle':>6} {'limit':>15}")
    for kind in ("strong", "weak"):
        if kind == "strong":
            out(f"strong scaling: the whole survey ({nb} boxes)")
        else:
            out(f"weak scaling: {boxes_per_rank} boxes per rank")
        out(hdr)
        for n in node_counts:
            r = simulate(n, meas, prm, n_boxes=nb if kind == "strong" else None,
                         boxes_per_rank=boxes_per_rank if kind == "weak" else None)
            res[kind].append(r)
            out(f"  {r.nodes:>6} {r.ranks:>6} {r.boxes:>9} {r.makespan_s:>11.1f} {r.efficiency:>6.3f} "
                f"{r.io_wait_frac:>6.3f} {r.claim_wait_frac:>6.3f} {r.idle_frac:>6.3f} {r.limiter():>15}")
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description="Simulate the box scheduler from measured per-box times "
                                             "(normally run from bench/scaling.py).")
    ap.add_argument("--source-seconds", type=float, nargs="+", default=[0.05, 0.1, 0.2],
                    help="per-source optimizer times (s)")
    ap.add_argument("--load-seconds", type=float, nargs="+", default=[1.0], help="per-box load times (s)")
    ap.add_argument("--ext-arcsec", type=float, default=100.0, help="side of the measured extended region")
    ap.add_argument("--boxes-per-rank", type=int, default=20)
    for f, v in asdict(SimParams()).items():
        ap.add_argument("--" + f.replace("_", "-"), type=type(v), default=v)
    a = ap.parse_args(argv)
    prm = SimParams(**{f: getattr(a, f) for f in asdict(SimParams())})
    meas = Measured(np.array(a.source_seconds), np.array(a.load_seconds), (a.ext_arcsec / ARCSEC_PER_DEG) ** 2)
    report(meas, prm, boxes_per_rank=a.boxes_per_rank)


if __name__ == "__main__":
    main()
