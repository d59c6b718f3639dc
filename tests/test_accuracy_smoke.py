"""Smoke test of bench/accuracy.py: --quick (one small simulated field, the project beside SEP) end to end.

The benchmark runs as a user runs it (a subprocess); its scoring pieces live in the package and are
tested in test_score.py, test_plot.py and test_simulate.py.
"""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "bench", "accuracy.py")


def test_bad_options_exit_with_a_message(tmp_path):
    for args, word in ((["--only", "sim,bogus"], "--only"), (["--fields", "nowhere", "--only", "sim"], "--fields")):
        p = subprocess.run([sys.executable, SCRIPT, *args, "--out-dir", str(tmp_path)], capture_output=True,
                           text=True, cwd=ROOT, timeout=300)
        assert p.returncode == 2, (args, p.stderr[-500:])
        assert word in p.stderr and "Traceback" not in p.stderr


@pytest.mark.slow
def test_accuracy_quick_runs_and_reports(tmp_path):
    """--quick renders a field, runs celeste-infer and SEP on it, and writes every output."""
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, SCRIPT, "--quick", "--out-dir", str(out)], capture_output=True, text=True,
                       cwd=ROOT, timeout=900)
    assert p.returncode == 0, p.stderr[-2000:]
    results = [ln.split() for ln in p.stdout.splitlines() if ln.startswith("RESULT sim ")]
    pairs = {(r[2], r[3]) for r in results}
    assert pairs == {("field=quick", "tool=celeste"), ("field=quick", "tool=SEP"), ("field=pooled", "tool=celeste"),
                     ("field=pooled", "tool=SEP")}
    for name in ("accuracy.md", "accuracy.json", "accuracy_errors.png"):
        assert (out / name).stat().st_size > 0
    doc = json.loads((out / "accuracy.json").read_text())
    pooled = doc["sim"]["pooled"]
    assert doc["parts"] == ["sim"] and "real" not in doc and "m2" not in doc
    # the project finds most bright simulated sources and places them well under a pixel
    assert pooled["celeste"]["recall"] > 0.6
    assert pooled["celeste"]["errors"]["position_px"]["mean"] < 0.6
    assert pooled["celeste"]["errors"]["mag_r"]["mean"] < 0.3
    # coverage of position is scored from the catalog's ra_sd / dec_sd
    assert pooled["celeste"]["calibration"]["position"]["n"] > 0
    assert set(pooled["celeste"]["kind_recall"]) >= {"field", "blend", "bright star"}
    md = (out / "accuracy.md").read_text()
    assert "| celeste |" in md and "| SEP |" in md and "### quick" in md
