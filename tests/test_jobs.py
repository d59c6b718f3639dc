"""Job files (celeste.jobs): parsing, validation, and the relative-path rule."""
import os
from pathlib import Path

import pytest

from celeste.errors import ConfigError
from celeste.jobs import JOB_KEYS, load_job, project_root
from celeste.options import parse_time_limit

ROOT = Path(__file__).resolve().parent.parent
REGION = "region = [323.35, 323.38, -0.76, -0.72]\n"


def write_job(tmp_path, text, name="job.toml"):
    """Write a job file at <tmp_path>/proj/jobs/<name>; the project root is <tmp_path>/proj."""
    d = tmp_path / "proj" / "jobs"
    d.mkdir(parents=True, exist_ok=True)
    p = d / name
    p.write_text(text)
    return p


def test_full_job_values_and_types(tmp_path):
    p = write_job(tmp_path, REGION + """
data_dir = "data/sdss"
out = "out/cat.fits"
run_dir = "runs/a"
residual_png = "/abs/resid.png"
threads = 3
box_arcsec = 60
overlap_arcsec = 7.5
init = "sep"
bands = "zgr"
overwrite = true
time_limit = "1-02:03:04"
max_passes = 2
""")
    job = load_job(p)
    proj = tmp_path / "proj"
    assert set(job) == {"region", "data_dir", "out", "run_dir", "residual_png", "threads", "box_arcsec",
                        "overlap_arcsec", "init", "bands", "overwrite", "time_limit", "max_passes"}
    assert set(job) < set(JOB_KEYS)
    assert job["region"] == (323.35, 323.38, -0.76, -0.72)
    assert job["data_dir"] == str(proj / "data" / "sdss")
    assert job["out"] == str(proj / "out" / "cat.fits")
    assert job["run_dir"] == str(proj / "runs" / "a")
    assert job["residual_png"] == "/abs/resid.png"
    assert job["threads"] == 3 and isinstance(job["threads"], int)
    assert job["box_arcsec"] == 60.0 and isinstance(job["box_arcsec"], float)
    assert job["overlap_arcsec"] == 7.5
    assert job["init"] is None                      # "sep": detection
    assert job["bands"] == (1, 2, 4)                # g r z, in wavelength order
    assert job["overwrite"] is True
    assert job["time_limit"] == 86400 + 2 * 3600 + 3 * 60 + 4
    assert job["max_passes"] == 2


def test_relative_paths_resolve_against_project_root_not_cwd(tmp_path, monkeypatch):
    p = write_job(tmp_path, REGION + 'data_dir = "data/sdss"\nout = "../elsewhere/x.fits"\n'
                  'init = "catalogs/start.fits"\n')
    other = tmp_path / "somewhere_else"
    other.mkdir()
    monkeypatch.chdir(other)
    # a relative path to the job file itself also works from any directory
    job = load_job(os.path.relpath(p, other))
    proj = (tmp_path / "proj").resolve()
    assert project_root(p) == proj
    assert job["data_dir"] == str(proj / "data" / "sdss")
    assert job["out"] == str(tmp_path.resolve() / "elsewhere" / "x.fits")
    assert job["init"] == str(proj / "catalogs" / "start.fits")   # a path, not a method name


def test_home_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    job = load_job(write_job(tmp_path, REGION + 'out = "~/cat.fits"\n'))
    assert job["out"] == str(tmp_path / "home" / "cat.fits")


def test_only_present_keys_are_returned(tmp_path):
    assert load_job(write_job(tmp_path, REGION)) == {"region": (323.35, 323.38, -0.76, -0.72)}


def test_unknown_key_rejected_and_named(tmp_path):
    p = write_job(tmp_path, REGION + "thread = 4\n")
    with pytest.raises(ConfigError, match=r"unknown key.*'thread'") as e:
        load_job(p)
    assert str(p) in str(e.value)


def test_missing_region(tmp_path):
    with pytest.raises(ConfigError, match="region"):
        load_job(write_job(tmp_path, 'data_dir = "x"\n'))


def test_missing_file_and_bad_toml(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="nope.toml.*not found"):
        load_job(missing)
    p = write_job(tmp_path, "region = [1, 2,\n")
    with pytest.raises(ConfigError, match="not valid TOML") as e:
        load_job(p)
    assert str(p) in str(e.value)
    with pytest.raises(ConfigError, match="directory"):
        load_job(tmp_path)


@pytest.mark.parametrize("line, key", [
    ("region = [1, 2, 3]", "region"),
    ("region = [2, 2, 0, 1]", "region"),            # ra_min == ra_max
    ("region = [1, 2, 0, 0]", "region"),            # empty dec range
    ("region = [1, 2, -91, 0]", "region"),
    ("region = [1, 361, 0, 1]", "region"),
    ("region = [1, 2, 0, \"1\"]", "region"),
    ("region = [1, 2, 0, nan]", "region"),
    ("threads = 0", "threads"),
    ("threads = 2.0", "threads"),
    ("threads = true", "threads"),
    ("max_passes = 0", "max_passes"),
    ("box_arcsec = 0", "box_arcsec"),
    ("box_arcsec = inf", "box_arcsec"),
    ("overlap_arcsec = -1", "overlap_arcsec"),
    ("bands = \"grx\"", "bands"),
    ("bands = \"gg\"", "bands"),
    ("bands = \"\"", "bands"),
    ("bands = [1, 2]", "bands"),
    ("overwrite = 1", "overwrite"),
    ("out = \"\"", "out"),
    ("data_dir = 3", "data_dir"),
    ("init = 5", "init"),
    ("time_limit = 0", "time_limit"),
    ("time_limit = \"5 minutes\"", "time_limit"),
    ("time_limit = \"1:75:00\"", "time_limit"),
])
def test_bad_values_name_key_and_file(tmp_path, line, key):
    text = (line + "\n") if line.startswith("region") else REGION + line + "\n"
    p = write_job(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_job(p)
    assert repr(key) in str(e.value) and str(p) in str(e.value)


@pytest.mark.parametrize("value, seconds", [
    (90, 90.0), (1.5, 1.5), ("10:30", 630.0), ("01:00:00", 3600.0),
    ("2-00:00:01", 172801.0), ("0:0:0.5", 0.5),
])
def test_parse_time_limit(value, seconds):
    assert parse_time_limit(value) == seconds


def test_bands_list_form(tmp_path):
    assert load_job(write_job(tmp_path, REGION + 'bands = ["i", "u"]\n'))["bands"] == (0, 3)


@pytest.mark.parametrize("name", ["sample", "sample_east", "m2_core"])
def test_project_job_files_load_and_lie_in_the_field(name):
    """The shipped job files are valid and inside field 2583-2-136 (RA 323.26-323.43, Dec -0.85 to -0.62)."""
    job = load_job(ROOT / "jobs" / f"{name}.toml")
    ra_min, ra_max, dec_min, dec_max = job["region"]
    assert 323.26 <= ra_min < ra_max <= 323.43
    assert -0.85 <= dec_min < dec_max <= -0.62
    assert job["data_dir"] == str(ROOT / "data" / "sdss")
    assert Path(job["data_dir"], "2583", "2", "136").is_dir()


def test_job_list_names_existing_job_files():
    lines = [ln.strip() for ln in (ROOT / "jobs" / "all.list").read_text().splitlines()]
    entries = [ln for ln in lines if ln and not ln.startswith("#")]
    assert entries
    for entry in entries:
        load_job(ROOT / entry)
