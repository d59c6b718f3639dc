"""The stored reference catalog: the command that makes it, the comparison, and its regeneration.

``tests/data/reference_catalog.fits`` is the catalog of a small but real piece of the sample
field, made by :data:`ARGS` (``celeste-infer`` on SDSS 2583-2-136 with detection, the residual
round and three passes; 2 x 2 boxes of 36 arcsec, 35 sources: stars, galaxies, a 1700 nmgy
star and sources found in the residuals).  ``tests/test_reference_catalog.py`` reruns the same
command and requires every source and every numeric column to agree with it (:func:`compare`).

A change that is meant to alter results (a model or optimizer change) regenerates it, in a
commit of its own that says why::

    python tests/make_reference.py            # rewrites tests/data/reference_catalog.fits

A change that is not meant to alter results (a restructure, a rename) leaves it alone and
must pass the test.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import warnings

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = os.path.join(ROOT, "tests", "data", "reference_catalog.fits")

#: RA 323.28-323.30, Dec -0.70 to -0.68 (72" x 72" of ordinary sky west of M2's outskirts)
REGION = ("323.28", "323.30", "-0.70", "-0.68")
#: arguments of celeste-infer after the program name (paths relative to the project root)
ARGS = ["--job", "jobs/sample.toml", "--region", *REGION, "--box-arcsec", "36", "--overlap-arcsec", "8",
        "--threads", "1", "--no-progress"]

#: per-source columns that measure time, not results (none is in the catalog today; listed for safety)
TIMING_COLUMNS = ("opt_seconds",)
#: relative tolerance of every float column
RTOL = 1e-6
#: positions: tolerance on the offset, arcsec (1e-6 of the arcsecond scale of the position parameters;
#: 1e-6 relative to RA itself would allow an arcsecond)
POS_TOL_ARCSEC = 1e-6
#: the header's residual sd is rounded to 5 decimals (celeste.pipeline): its quantum
RESSD_ATOL = 1e-5


def run(out, run_dir):
    """Run :data:`ARGS` into ``out`` (catalog) and ``run_dir``; raises RuntimeError on failure."""
    cmd = [sys.executable, "-m", "celeste.cli", *ARGS, "--out", out, "--run-dir", run_dir, "--overwrite",
           "--restart"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed with status {proc.returncode}:\n{proc.stderr[-4000:]}")
    return out


def _read(path):
    from astropy.io import fits
    from astropy.table import Table
    from astropy.units import UnitsWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnitsWarning)
        return Table.read(path), fits.getheader(path, 1)


def compare(ref_path, new_path):
    """Differences between two catalogs, as a list of messages (empty when they agree).

    Rules: the same sources (``objid``, in order) and columns; integer and boolean columns
    equal; float columns within :data:`RTOL` relative (NaN where the reference has NaN);
    ``ra``/``dec`` within :data:`POS_TOL_ARCSEC` on the sky; ``gal_angle_deg`` modulo 180;
    header ``RESSD_*`` within :data:`RESSD_ATOL`.  Columns in :data:`TIMING_COLUMNS` are skipped.
    """
    ref, href = _read(ref_path)
    new, hnew = _read(new_path)
    msgs = []
    if ref.colnames != new.colnames:
        msgs.append(f"columns differ: {sorted(set(ref.colnames) ^ set(new.colnames))}")
    if len(ref) != len(new) or not np.array_equal(np.asarray(ref["objid"]), np.asarray(new["objid"])):
        msgs.append(f"sources differ: {len(ref)} reference rows, {len(new)} new rows "
                    f"({len(set(ref['objid']) ^ set(new['objid']))} objids in one only)")
        return msgs
    dec = np.radians(np.asarray(ref["dec"], float))
    for name in ref.colnames:
        if name in TIMING_COLUMNS or name not in new.colnames:
            continue
        a = np.asarray(ref[name])
        b = np.asarray(new[name])
        if a.dtype.kind in "iub":
            bad = a != b
        elif name in ("ra", "dec"):
            d = (b - a + 180.0) % 360.0 - 180.0
            if name == "ra":
                d = d * np.cos(dec)
            bad = ~(np.abs(d) * 3600.0 <= POS_TOL_ARCSEC)
        elif name == "gal_angle_deg":
            d = (b - a + 90.0) % 180.0 - 90.0
            bad = ~((np.abs(d) <= RTOL * 180.0) | (np.isnan(a) & np.isnan(b)))
        else:
            a = a.astype(float)
            b = b.astype(float)
            same = np.abs(b - a) <= RTOL * np.maximum(np.abs(a), np.abs(b))
            bad = ~(same | (np.isnan(a) & np.isnan(b)))
        if np.any(bad):
            i = int(np.flatnonzero(bad)[0])
            msgs.append(f"{name}: {int(bad.sum())} of {len(a)} rows differ; first objid {ref['objid'][i]}: "
                        f"reference {a[i]!r}, new {b[i]!r}")
    for key in href:
        if key.startswith("RESSD_"):
            if key not in hnew or abs(float(hnew[key]) - float(href[key])) > RESSD_ATOL:
                msgs.append(f"header {key}: reference {href[key]}, new {hnew.get(key)}")
    return msgs


def main():
    tmp = tempfile.mkdtemp(prefix="celeste-reference-")
    try:
        out = run(os.path.join(tmp, "catalog.fits"), os.path.join(tmp, "run"))
        if os.path.exists(REFERENCE):
            msgs = compare(REFERENCE, out)
            print("changes against the previous reference:" if msgs else "unchanged against the previous reference")
            for m in msgs:
                print("  " + m)
        shutil.copyfile(out, REFERENCE)
        cat, _ = _read(REFERENCE)
        n_star = int(np.sum(np.asarray(cat["is_star"]) >= 0.5))
        print(f"wrote {os.path.relpath(REFERENCE, ROOT)}: {len(cat)} sources ({n_star} stars, "
              f"{len(cat) - n_star} galaxies)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
