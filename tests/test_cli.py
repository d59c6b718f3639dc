"""``celeste-infer`` end to end: the catalog file (columns, units, header), stable objids,
``--job`` equal to flags, output and run-directory safety (``--overwrite``, resume,
``--restart``, atomic writes), and ``--time-limit`` (exit 3, then the next run continues).

One detection + inference run on the tiny region of the sample field (frames decompressed
into a temporary copy, fixture ``plain_data``) is shared by the module (fixture ``e2e``); a
second, made from a job file with the same options, checks ``--job`` and objid stability.
The other runs use ``--init`` catalogs (a few seconds each).
"""
import logging
import os

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from celeste import BANDS, __version__
from celeste.catalog import FLAG_DOC, FLAG_NO_PIXELS, FLAG_USER_INIT
from celeste.cli import EXIT_INCOMPLETE, main

from fielddata import DATA, TINY, TINY_SOURCES, clone, fpath, frame_name, pixel_of, rewrite_fits, write_init

REQUIRED = (["objid", "ra", "dec", "is_star"] + [f"flux_{b}" for b in BANDS] + [f"flux_{b}_sd" for b in BANDS]
            + [f"mag_{b}" for b in BANDS]
            + ["gal_frac_dev", "gal_axis_ratio", "gal_angle_deg", "gal_radius_arcsec", "converged", "n_iter",
               "flags"])
UNITS = {"ra": "deg", "dec": "deg", "gal_angle_deg": "deg", "gal_radius_arcsec": "arcsec",
         **{f"mag_{b}": "mag" for b in BANDS}}
#: four boxes of 40" (10" overlap) over a 72" x 72" region
GRID = ["323.36", "323.38", "-0.70", "-0.68"]
GRID_OPTS = ["--box-arcsec", "40", "--overlap-arcsec", "10"]
GRID_SOURCES = (list(TINY_SOURCES[0]) + [323.3750, 323.3650, 323.3750],
                list(TINY_SOURCES[1]) + [-0.6950, -0.6850, -0.6850])


def _argv(out, region=TINY, data_dir=DATA, run_dir=None, extra=()):
    a = ["--region", *region, "--data-dir", str(data_dir), "--out", str(out), "--no-progress"]
    if run_dir is not None:
        a += ["--run-dir", str(run_dir)]
    return a + list(extra)


def _temp_files(*dirs):
    found = []
    for d in dirs:
        for dirpath, _, files in os.walk(d):
            found += [os.path.join(dirpath, f) for f in files if ".tmp-" in f]
    return found


@pytest.fixture(scope="module")
def e2e(tmp_path_factory, plain_data):
    """Flags run and job-file run of the tiny region (detection + inference).

    About 35 s of CPU (detection of the whole field, twice): every test using it is ``slow``.
    """
    d = tmp_path_factory.mktemp("e2e")
    out = d / "flags.fits"
    rc = main(_argv(out, data_dir=plain_data, run_dir=d / "flags.run"))
    assert rc == 0
    job = d / "proj" / "jobs" / "tiny.toml"
    job.parent.mkdir(parents=True)
    job.write_text(f"region = [{', '.join(TINY)}]\ndata_dir = \"{plain_data}\"\nout = \"{d / 'job.fits'}\"\n"
                   f"run_dir = \"{d / 'job.run'}\"\nbands = \"ugriz\"\nthreads = 1\n")
    rc_job = main(["--job", str(job), "--no-progress"])
    return {"dir": d, "data": str(plain_data), "out": str(out), "run_dir": str(d / "flags.run"), "rc_job": rc_job,
            "job_out": str(d / "job.fits"), "job_run": str(d / "job.run")}


# ------------------------------------------------------------------ the catalog file


@pytest.mark.slow
def test_catalog_columns(e2e):
    cat = Table.read(e2e["out"])
    missing = [c for c in REQUIRED if c not in cat.colnames]
    assert not missing
    assert 5 <= len(cat) <= 15  # the tiny region holds about nine sources
    for col, unit in UNITS.items():
        assert cat[col].unit is not None and cat[col].unit.to_string() == unit, col
    assert cat["objid"].dtype.kind == "i" and cat["flags"].dtype.kind == "i"


@pytest.mark.slow
def test_catalog_values_in_range(e2e):
    cat = Table.read(e2e["out"])
    ra, dec = np.asarray(cat["ra"]), np.asarray(cat["dec"])
    assert np.all((ra >= 323.36) & (ra < 323.37) & (dec >= -0.70) & (dec < -0.69))
    ang = np.asarray(cat["gal_angle_deg"])
    assert np.all((ang >= 0) & (ang < 180))
    assert np.all((cat["is_star"] >= 0) & (cat["is_star"] <= 1))
    assert np.all((cat["gal_axis_ratio"] > 0) & (cat["gal_axis_ratio"] <= 1))
    assert np.all((cat["gal_frac_dev"] >= 0) & (cat["gal_frac_dev"] <= 1))
    assert np.all(cat["gal_radius_arcsec"] > 0)
    for b in BANDS:
        f, sd = np.asarray(cat[f"flux_{b}"]), np.asarray(cat[f"flux_{b}_sd"])
        assert np.all(f > 0) and np.all(np.isfinite(sd) & (sd > 0))
        np.testing.assert_allclose(cat[f"mag_{b}"], 22.5 - 2.5 * np.log10(f), rtol=1e-12)
    assert np.all(cat["flags"] & ~(FLAG_NO_PIXELS | 2 | 4 | 16) == 0)  # no --init flag (8): detection run
    assert np.array_equal(np.asarray(cat["objid"]), np.sort(np.asarray(cat["objid"])))


def test_flux_columns_have_units_astropy_reads_silently(plain_data, tmp_path):
    """nmgy has no FITS-standard spelling: astropy gets it from its column metadata, without a
    warning in a fresh interpreter; other readers get it in TCOMMn (TOPCAT's description)."""
    import subprocess
    import sys

    import astropy.units as u

    out = tmp_path / "c.fits"
    init = write_init(tmp_path / "init.fits", *TINY_SOURCES)
    assert main(_argv(out, data_dir=plain_data, extra=["--init", init, "--max-passes", "1"])) == 0
    cat = Table.read(out)
    for b in BANDS:
        assert cat[f"flux_{b}"].unit == u.nmgy and cat[f"flux_{b}_sd"].unit == u.nmgy
    for col, unit in UNITS.items():
        assert cat[col].unit is not None and cat[col].unit.to_string() == unit, col
    with fits.open(out) as h:
        hdr = h[1].header
        comments = {hdr[f"TTYPE{i}"]: hdr.get(f"TCOMM{i}") for i in range(1, hdr["TFIELDS"] + 1)}
        assert not any(hdr.get(f"TUNIT{i}") == "nmgy" for i in range(1, hdr["TFIELDS"] + 1))
    assert comments["flux_r"] == "unit: nmgy" and comments["flux_r_sd"] == "unit: nmgy"
    code = ("import warnings; warnings.simplefilter('error'); from astropy.table import Table; "
            f"t = Table.read({str(out)!r}); print(t['flux_r'].unit)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.strip() == "nmgy" and p.stderr == "", p.stderr


@pytest.mark.slow
def test_catalog_header(e2e):
    cat = Table.read(e2e["out"])
    m = cat.meta
    assert m["CEL_VER"] == __version__
    assert [float(v) for v in m["REGION"].split()] == [float(v) for v in TINY]
    assert m["FIELD0"] == "2583-2-136"
    assert "PRIORS" in m and m["PRIORS"]
    inputs = [m[k] for k in m if k.startswith("INPUT")]
    assert any(v.startswith("2583/2/136/frame-r-") for v in inputs) and any("photoField" in v for v in inputs)
    assert m["COMMAND"]
    for bit, text in FLAG_DOC.items():
        assert m[f"FLAG{bit}"] == text[:68]


@pytest.mark.slow
def test_header_command_is_complete(e2e):
    m = Table.read(e2e["out"]).meta
    for word in ("--region", *TINY, "--data-dir", e2e["data"], "--out", e2e["out"]):
        assert word in m["COMMAND"], word
    assert m["DATADIR"] == e2e["data"]


@pytest.mark.slow
def test_no_temp_files_left(e2e):
    assert not _temp_files(e2e["dir"])


# ------------------------------------------------------------------ --job, objid stability


@pytest.mark.slow
def test_job_file_equals_flags_and_objid_stable(e2e):
    """A second run (job file, fresh run directory) gives the same objids and the same fits."""
    assert e2e["rc_job"] == 0
    a, b = Table.read(e2e["out"]), Table.read(e2e["job_out"])
    assert a.colnames == b.colnames
    assert np.array_equal(np.asarray(a["objid"]), np.asarray(b["objid"]))
    for col in a.colnames:
        if col in ("opt_seconds",):
            continue
        np.testing.assert_allclose(np.asarray(a[col], float), np.asarray(b[col], float), rtol=1e-9, atol=0,
                                   err_msg=col)
    assert b.meta["REGION"] == a.meta["REGION"] and b.meta["FIELD0"] == a.meta["FIELD0"]


# ------------------------------------------------------------------ output and run-directory safety


@pytest.mark.slow
def test_existing_output_refused(e2e, capsys):
    before = os.stat(e2e["out"]).st_mtime_ns
    rc = main(_argv(e2e["out"], data_dir=e2e["data"], run_dir=e2e["run_dir"]))
    assert rc == 2
    err = capsys.readouterr().err
    assert e2e["out"] in err and "--overwrite" in err
    assert os.stat(e2e["out"]).st_mtime_ns == before


@pytest.mark.slow
def test_resume_skips_finished_boxes(e2e, caplog):
    """The same command again (with --overwrite) redoes nothing and writes the same catalog."""
    ref = Table.read(e2e["out"])
    with caplog.at_level(logging.INFO, logger="celeste"):
        rc = main(_argv(e2e["out"], data_dir=e2e["data"], run_dir=e2e["run_dir"], extra=["--overwrite"]))
    assert rc == 0
    msgs = [r.getMessage() for r in caplog.records]
    assert any("1 tasks, 1 already finished, 0 to run" in m for m in msgs), msgs
    assert not any("box 0 started" in m for m in msgs)
    new = Table.read(e2e["out"])
    for col in ref.colnames:
        assert np.array_equal(np.asarray(ref[col]), np.asarray(new[col])), col
    assert not _temp_files(e2e["dir"])


@pytest.mark.slow
def test_changed_option_refused(e2e, capsys):
    out = e2e["dir"] / "other.fits"
    rc = main(_argv(out, data_dir=e2e["data"], run_dir=e2e["run_dir"], extra=["--max-passes", "2"]))
    assert rc == 2
    err = capsys.readouterr().err
    assert "max_passes" in err and "--restart" in err and e2e["run_dir"] in err
    assert not os.path.exists(out)


@pytest.mark.parametrize("argv_extra, word", [
    (["--threads", "0"], "--threads"),
    (["--box-arcsec", "-5"], "--box-arcsec"),
    (["--bands", "grx"], "--bands"),
    (["--time-limit", "soon"], "--time-limit"),
    (["--max-passes", "0"], "--max-passes"),
    (["--residual-band", "x"], "--residual-band"),
    (["--psf-components", "0"], "--psf-components"),
])
def test_bad_option_names_argument(tmp_path, capsys, argv_extra, word):
    rc = main(_argv(tmp_path / "x.fits", extra=argv_extra))
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("celeste-infer: error:") and word in err


def test_restart_discards_old_results_and_writes_atomically(plain_data, tmp_path, monkeypatch):
    import celeste.run

    init = write_init(tmp_path / "init.fits", *TINY_SOURCES)
    out, rd = tmp_path / "c.fits", tmp_path / "c.run"
    assert main(_argv(out, data_dir=plain_data, run_dir=rd, extra=["--init", init])) == 0
    assert Table.read(out)["n_passes"].max() >= 2
    # other options are refused without --restart ...
    assert main(_argv(out, data_dir=plain_data, run_dir=rd, extra=["--init", init, "--max-passes", "1",
                                                                    "--overwrite"])) == 2
    # ... and redone with it; the catalog goes to a temporary name in the same folder, then is renamed
    renames = []
    real = os.replace

    def spy(src, dst):
        renames.append((os.fspath(src), os.fspath(dst)))
        return real(src, dst)

    monkeypatch.setattr(celeste.run.os, "replace", spy)
    assert main(_argv(out, data_dir=plain_data, run_dir=rd, extra=["--init", init, "--max-passes", "1",
                                                                    "--overwrite", "--restart"])) == 0
    cat = Table.read(out)
    assert set(cat["n_passes"]) == {1} and np.all(cat["flags"] & FLAG_USER_INIT)
    final = [(s, d) for s, d in renames if d == str(out)]
    assert len(final) == 1
    src = final[0][0]
    assert os.path.dirname(src) == str(tmp_path) and os.path.basename(src).startswith(".c.fits.tmp-")
    assert not _temp_files(tmp_path)


def test_residual_png(plain_data, tmp_path, caplog):
    """--residual-png draws data, model and residuals of the region in --residual-band."""
    init = write_init(tmp_path / "init.fits", *TINY_SOURCES)
    png = tmp_path / "r.png"
    with caplog.at_level(logging.INFO, logger="celeste"):
        rc = main(_argv(tmp_path / "c.fits", data_dir=plain_data,
                        extra=["--init", init, "--residual-png", str(png), "--residual-band", "g"]))
    assert rc == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any(f"wrote {png} (band g residual sd" in r.getMessage() for r in caplog.records)


def test_job_file_region_crossing_ra0(tmp_path, capsys):
    job = tmp_path / "proj" / "jobs" / "wrap.toml"
    job.parent.mkdir(parents=True)
    job.write_text(f"region = [359.9, 0.1, -0.7, -0.6]\ndata_dir = \"{DATA}\"\nout = \"{tmp_path / 'w.fits'}\"\n")
    rc = main(["--job", str(job), "--no-progress"])
    assert rc == 2
    assert "no SDSS field" in capsys.readouterr().err  # accepted, then no field found


# ------------------------------------------------------------------ --time-limit


def test_time_limit_exit3_then_next_run_completes(plain_data, tmp_path, caplog, monkeypatch):
    """Four boxes of 100 s each on a fake clock (``celeste.run._clock``, advanced by every box):
    with ``--time-limit 300`` two boxes fit (then 200 s + 1.5 x the median box time > 300 s):
    exit 3 and no catalog.  The same command without the limit continues from the finished
    boxes, and the catalog equals an uninterrupted run's."""
    import celeste.pipeline
    import celeste.run

    clock = {"t": 0.0}
    monkeypatch.setattr(celeste.run, "_clock", lambda: clock["t"])
    real_process_box = celeste.pipeline.process_box

    def box_of_100_s(*args, **kw):
        table = real_process_box(*args, **kw)
        clock["t"] += 100.0
        return table

    monkeypatch.setattr(celeste.pipeline, "process_box", box_of_100_s)
    init = write_init(tmp_path / "init.fits", *GRID_SOURCES)
    out, rd = tmp_path / "t.fits", tmp_path / "t.run"
    argv = _argv(out, region=GRID, data_dir=plain_data, run_dir=rd, extra=["--init", init, *GRID_OPTS])
    with caplog.at_level(logging.INFO, logger="celeste"):
        rc = main(argv + ["--time-limit", "300"])
    assert rc == EXIT_INCOMPLETE
    assert not os.path.exists(out)
    assert sorted(os.listdir(rd / "boxes")) == ["box-000000.fits", "box-000001.fits"]
    assert any("time limit reached" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="celeste"):
        assert main(argv) == 0
    assert any("4 tasks, 2 already finished" in r.getMessage() for r in caplog.records)
    ref_out = tmp_path / "ref.fits"
    assert main(_argv(ref_out, region=GRID, data_dir=plain_data, extra=["--init", init, *GRID_OPTS])) == 0
    a, b = Table.read(out), Table.read(ref_out)
    assert len(a) == len(GRID_SOURCES[0]) and np.array_equal(np.asarray(a["objid"]), np.asarray(b["objid"]))
    for col in ("ra", "dec", "flux_r", "is_star", "box_id"):
        np.testing.assert_allclose(np.asarray(a[col], float), np.asarray(b[col], float), rtol=1e-9)
    assert not _temp_files(tmp_path)


@pytest.mark.parametrize("value", ["3600", "90.5", "01:00:00", "0-01:00:00"])
def test_time_limit_forms_accepted(tmp_path, capsys, value):
    # a region without fields: the option is parsed, then the run stops at the field search
    rc = main(_argv(tmp_path / "x.fits", region=["10", "10.1", "5", "5.1"], extra=["--time-limit", value]))
    assert rc == 2
    assert "no SDSS field" in capsys.readouterr().err


@pytest.mark.slow
def test_time_limit_counts_from_job_start(plain_data, tmp_path):
    """Detection of the field takes several seconds; with --time-limit 2 no box may start."""
    import time

    out, rd = tmp_path / "t.fits", tmp_path / "t.run"
    t0 = time.monotonic()
    rc = main(_argv(out, data_dir=plain_data, run_dir=rd, extra=["--time-limit", "2", "--max-passes", "1"]))
    wall = time.monotonic() - t0
    assert rc == EXIT_INCOMPLETE
    assert os.listdir(rd / "boxes") == [], f"a box ran although the limit had passed ({wall:.1f} s)"


@pytest.mark.slow
def test_restart_redoes_detection(plain_data, tmp_path):
    """Detections from data that has since changed must not be reused: the first source's pixels
    are blanked in every band (a changed input file, so --restart is needed); after the restart
    no source may sit inside the blanked patch."""
    data = clone(str(plain_data), str(tmp_path / "sdss"))
    out, rd = tmp_path / "r.fits", tmp_path / "r.run"
    argv = _argv(out, data_dir=data, run_dir=rd, extra=["--max-passes", "1", "--overwrite"])
    assert main(argv) == 0
    ra, dec = TINY_SOURCES
    for b in BANDS:
        path = fpath(data, frame_name(b))
        x, y = pixel_of(path, ra[0], dec[0])

        def edit(h, x=x, y=y):
            h[0].data[y - 40:y + 41, x - 40:x + 41] = np.nan

        rewrite_fits(path, edit)
    assert main(argv) == 2  # inputs changed: refused
    assert main(argv + ["--restart"]) == 0
    cat = Table.read(out)
    near = (np.abs(cat["ra"] - ra[0]) < 10 / 3600) & (np.abs(cat["dec"] - dec[0]) < 10 / 3600)
    assert not near.any() and not np.any(cat["flags"] & FLAG_NO_PIXELS)
