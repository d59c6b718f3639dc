"""Regression on the real field: the catalog of a small piece of SDSS 2583-2-136 against the stored one.

The command, the tolerances and the regeneration are in ``tests/make_reference.py``: a change
meant to leave results alone must pass this test; a change meant to alter them regenerates
the reference (``python tests/make_reference.py``) in a commit that says why.
"""
import os

import numpy as np
import pytest

from make_reference import REFERENCE, compare, run


@pytest.fixture(scope="module")
def rerun(tmp_path_factory):
    d = tmp_path_factory.mktemp("reference")
    return run(str(d / "catalog.fits"), str(d / "run"))


@pytest.mark.slow
def test_catalog_matches_reference(rerun):
    msgs = compare(REFERENCE, rerun)
    assert not msgs, "catalog differs from tests/data/reference_catalog.fits:\n" + "\n".join(msgs)


def test_compare_detects_a_change(tmp_path):
    """The comparison is not vacuous: a 1e-5 relative change of one flux and 1e-5 arcsec of one position fail."""
    from astropy.io import fits
    from astropy.table import Table

    from celeste.catalog import fits_table_hdu

    ref, _ = __import__("make_reference")._read(REFERENCE)
    assert len(ref) >= 20 and np.any(ref["is_star"] >= 0.5) and np.any(ref["is_star"] < 0.5)
    assert compare(REFERENCE, REFERENCE) == []
    for col, delta in (("flux_r", lambda v: v * (1 + 1e-5)), ("dec", lambda v: v + 1e-5 / 3600.0)):
        t = Table(ref, copy=True)
        t[col][3] = delta(t[col][3])
        path = os.path.join(tmp_path, f"{col}.fits")
        fits.HDUList([fits.PrimaryHDU(), fits_table_hdu(t)]).writeto(path)  # as the pipeline writes (nmgy)
        msgs = compare(REFERENCE, path)
        assert len(msgs) == 1 and msgs[0].startswith(col), msgs
