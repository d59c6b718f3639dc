"""Measure the Gaussian-mixture PSF fit for K = 1, 2, 3 on the real SDSS PSFs.

Run ``python bench/fit_psf.py`` from the project root.  For each psField file in the
project (``data/sdss/2583/2/136`` and ``tests/data``) and each band, the PSF stamp at
the frame centre (x = 1024, y = 744; ``celeste.sdss.read_psfield(path, band).psf_at``,
25 x 25 pixels, normalized to sum 1) is fit with :func:`celeste.psf.fit_psf_mixture`.
Printed per fit:

* ``rss``: sum over pixels of (model - stamp)^2;
* ``L1``: sum |model - stamp| / sum |stamp|, the fraction of flux mismatched;
* ``R2``: 1 - rss / sum stamp^2, the fraction of the stamp's squared structure captured;
* ``ms``: wall time of one fit (median of 5), milliseconds.

Then a summary per K (median and worst over the 10 stamps).  The numbers quoted in
:mod:`celeste.psf` come from this script.
"""
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from celeste import BANDS  # noqa: E402
from celeste.psf import fit_psf_mixture, psf_mixture_image  # noqa: E402
from celeste.sdss import read_psfield  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FILES = [
    os.path.join(ROOT, "data", "sdss", "2583", "2", "136", "psField-002583-2-0136.fits"),
    os.path.join(ROOT, "tests", "data", "psField-000094-1-0012.fits"),
]
X, Y = 1024.0, 744.0


def measure(stamp, k, repeat=5):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        mix = fit_psf_mixture(stamp, k)
        times.append(time.perf_counter() - t0)
    model = psf_mixture_image(mix, stamp.shape)
    r = model - stamp
    rss = float(np.sum(r * r))
    l1 = float(np.sum(np.abs(r)) / np.sum(np.abs(stamp)))
    r2 = 1.0 - rss / float(np.sum(stamp * stamp))
    return rss, l1, r2, 1e3 * float(np.median(times)), mix


def main():
    rows = {1: [], 2: [], 3: []}
    print(f"{'file':28s} band K {'rss':>9s} {'L1':>7s} {'R2':>9s} {'ms':>6s}  weights")
    for path in FILES:
        for b in range(5):
            stamp = read_psfield(path, b).psf_at(X, Y)
            for k in (1, 2, 3):
                rss, l1, r2, ms, mix = measure(stamp, k)
                rows[k].append((rss, l1, r2, ms))
                wts = " ".join(f"{w:.3f}" for w in mix.weight)
                print(f"{os.path.basename(path):28s} {BANDS[b]:4s} {k} {rss:9.2e} {l1:7.4f} {r2:9.6f} {ms:6.1f}  {wts}")
    print()
    print("K  rss min..max         L1 median/worst   R2 worst    ms median")
    for k, v in rows.items():
        a = np.array(v)
        print(f"{k}  {a[:, 0].min():.1e}..{a[:, 0].max():.1e}   {np.median(a[:, 1]):.4f} / {a[:, 1].max():.4f}"
              f"   {a[:, 2].min():.6f}   {np.median(a[:, 3]):.1f}")


if __name__ == "__main__":
    main()
