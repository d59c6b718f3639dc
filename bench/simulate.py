"""Render one simulated SDSS field: the command line of :mod:`celeste.simulate` (where the simulator lives).

    python bench/simulate.py --out DIR [--size H W] [--seed S] [--blends N] [--bright-galaxies N]
                             [--bright-stars N] [--cluster-stars N] [--psf-variation K] [--no-wings]
                             [--no-saturation] ...
    python bench/simulate.py --wing-table    # the PSF wing's parameters and flux shares per band

``python bench/simulate.py --help`` lists every option; the module docstring of
:mod:`celeste.simulate` describes what a field holds.  The accuracy benchmark's fields are
``SIM_FIELDS`` in ``bench/accuracy.py``.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# keep bench/ off the import path: its scripts can shadow the project's packages (bench/kernels.py)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.join(ROOT, "bench")]
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from celeste.simulate import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
