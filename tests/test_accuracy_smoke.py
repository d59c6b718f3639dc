"""Smoke test of bench/accuracy.py --quick (one small simulated field, project vs SEP), and of its pieces."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_accuracy():
    """bench/accuracy.py by file path (bench/ is not a package and must not shadow project modules)."""
    import importlib.util

    if "bench_accuracy" not in sys.modules:
        spec = importlib.util.spec_from_file_location("bench_accuracy", os.path.join(ROOT, "bench", "accuracy.py"))
        mod = importlib.util.module_from_spec(spec)
        sys.modules["bench_accuracy"] = mod
        spec.loader.exec_module(mod)
    return sys.modules["bench_accuracy"]


def test_m2_region_round_trips_the_pixel_box():
    """The M2 region's corners map back to the box's outer pixel edges; the edge cut keeps the interior."""
    accuracy = _load_accuracy()

    wcs = accuracy._m2_wcs()
    region = accuracy.m2_region(wcs)
    x, y = wcs.all_world2pix([region[0], region[1]], [region[2], region[3]], 0)
    assert sorted(x) == pytest.approx([309.5, 409.5], abs=0.6)
    assert sorted(y) == pytest.approx([629.5, 729.5], abs=0.6)
    ra, dec = wcs.all_pix2world([360.0, 312.0, 360.0], [680.0, 680.0, 726.0], 0)
    inside = accuracy._m2_inside({"ra": ra, "dec": dec}, wcs)
    assert inside.tolist() == [True, False, False]


def test_write_init_keeps_old_rows_and_adds_new(tmp_path):
    from astropy.table import Table

    accuracy = _load_accuracy()

    old = Table()
    old["ra"], old["dec"] = [10.0, 10.001], [0.0, 0.001]
    for b in "ugriz":
        old[f"flux_{b}"] = [1.0, 2.0]
    old["is_star"] = [1.0, 0.0]
    old["gal_axis_ratio"] = [0.5, 0.5]
    old["gal_radius_arcsec"] = [0.6, 1.2]
    old["gal_angle_deg"] = [30.0, 120.0]
    p = tmp_path / "old.fits"
    old.write(p)
    new = {"ra": np.array([10.002]), "dec": np.array([0.002]), "flux_r": np.array([0.5]), "a": np.array([0.4]),
           "b": np.array([0.3]), "theta": np.array([45.0])}
    n_old, n_new = accuracy.write_init(str(tmp_path / "init.fits"), str(p), new)
    import fitsio

    t = fitsio.read(str(tmp_path / "init.fits"))
    assert (n_old, n_new, len(t)) == (2, 1, 3)
    assert t["flux_r"][2] == 0.5 and np.isnan(t["flux_g"][2])
    # the optimizer's starting major-axis scale 1.2 a equals the catalog's re / sqrt(q)
    assert 1.2 * t["a"][1] == pytest.approx(1.2 / np.sqrt(0.5))
    assert t["b"][1] / t["a"][1] == pytest.approx(0.5)
    assert t["is_star_guess"][0] == pytest.approx(0.98)


@pytest.mark.slow
def test_accuracy_quick_runs_and_reports(tmp_path):
    """--quick renders a field, runs celeste-infer, SEP and a residual round, and writes every output."""
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "accuracy.py"), "--quick", "--out-dir", str(out)],
                       capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert p.returncode == 0, p.stderr[-2000:]
    results = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    tools = {ln.split()[2] for ln in results if ln.split()[1] == "sim"}
    assert {"celeste", "SEP", "celeste_+_residual_round"} <= tools
    for name in ("accuracy.md", "accuracy.json", "accuracy_errors.png"):
        assert (out / name).stat().st_size > 0
    doc = json.loads((out / "accuracy.json").read_text())
    pooled = doc["sim"]["pooled"]
    # the project finds most bright simulated sources and places them well under a pixel
    assert pooled["celeste"]["recall"] > 0.6
    assert pooled["celeste"]["errors"]["position_px"]["mean"] < 0.6
    assert pooled["celeste"]["errors"]["mag_r"]["mean"] < 0.3
    md = (out / "accuracy.md").read_text()
    assert "| celeste |" in md and "| SEP |" in md
