"""The option registry (celeste.options): every option can be set from a job file and from the
command line, to the same value; every option that changes results is in the run directory's
manifest; checks involving several options run on the merged values."""
import json
import os
from dataclasses import MISSING
from pathlib import Path

import pytest

from celeste.cli import build_parser
from celeste.errors import ConfigError
from celeste.options import BY_NAME, OPTIONS, Flag, ImageOptions, InferOptions, parse_time_limit, resolve
from celeste.run import open_run_dir

ROOT = Path(__file__).resolve().parents[1]
DATA = str(ROOT / "data" / "sdss")
PRIORS = str(ROOT / "celeste" / "data" / "priors.json")
REQUIRED_CLI = ["--region", "323.35", "323.38", "-0.76", "-0.72", "--data-dir", DATA]
REQUIRED_TOML = f'region = [323.35, 323.38, -0.76, -0.72]\ndata_dir = "{DATA}"\n'


def samples(tmp):
    """name -> (command-line words, TOML value, expected value): a value other than the default."""
    init = tmp / "init.fits"
    init.write_bytes(b"")  # only its existence is checked before the run
    paths = {name: str(tmp / f"{name}.x") for name in ("out", "run_dir", "residual_png")}
    s = {
        "region": (["--region", "10", "10.5", "-1", "1"], "[10, 10.5, -1, 1]", (10.0, 10.5, -1.0, 1.0)),
        "data_dir": (["--data-dir", str(tmp)], f'"{tmp}"', str(tmp)),
        "bands": (["--bands", "gri"], '"gri"', (1, 2, 3)),
        "init": (["--init", str(init)], f'"{init}"', str(init)),
        "priors": (["--priors", PRIORS], f'"{PRIORS}"', PRIORS),
        "box_arcsec": (["--box-arcsec", "100"], "100", 100.0),
        "overlap_arcsec": (["--overlap-arcsec", "15"], "15.0", 15.0),
        "sky_refine": (["--no-sky-refine"], "false", False),
        "sky_mesh_px": (["--sky-mesh-px", "48"], "48", 48),
        "psf_components": (["--psf-components", "3"], "3", 3),
        "detect_bands": (["--detect-bands", "ri"], '["r", "i"]', (2, 3)),
        "detect_thresh": (["--detect-thresh", "4.5"], "4.5", 4.5),
        "detect_minarea": (["--detect-minarea", "7"], "7", 7),
        "detect_deblend_nthresh": (["--detect-deblend-nthresh", "16"], "16", 16),
        "detect_deblend_cont": (["--detect-deblend-cont", "0.01"], "0.01", 0.01),
        "detect_bkg_mesh_px": (["--detect-bkg-mesh-px", "0"], "0", 0),
        "threads": (["--threads", "2"], "2", 2),
        "batch_size": (["--batch-size", "16"], "16", 16),
        "seed": (["--seed", "7"], "7", 7),
        "max_passes": (["--max-passes", "2"], "2", 2),
        "pass_tol": (["--pass-tol", "0.5"], "0.5", 0.5),
        "max_iter": (["--max-iter", "30"], "30", 30),
        "f_tol": (["--f-tol", "1e-4"], "1e-4", 1e-4),
        "g_tol": (["--g-tol", "1e-5"], "1e-5", 1e-5),
        "active_eps": (["--active-eps", "0.2"], "0.2", 0.2),
        "min_radius_px": (["--min-radius-px", "3"], "3", 3.0),
        "max_radius_px": (["--max-radius-px", "30"], "30", 30.0),
        "residual_rounds": (["--residual-rounds", "2"], "2", 2),
        "residual_snr": (["--residual-snr", "5"], "5.0", 5.0),
        "residual_contrast": (["--residual-contrast", "2"], "2", 2.0),
        "residual_min_sep_px": (["--residual-min-sep-px", "3"], "3", 3.0),
        "out": (["--out", paths["out"]], f'"{paths["out"]}"', paths["out"]),
        "run_dir": (["--run-dir", paths["run_dir"]], f'"{paths["run_dir"]}"', paths["run_dir"]),
        "overwrite": (["--overwrite"], "true", True),
        "time_limit": (["--time-limit", "01:00:00"], '"01:00:00"', 3600.0),
        "residual_png": (["--residual-png", paths["residual_png"]], f'"{paths["residual_png"]}"',
                         paths["residual_png"]),
        "residual_band": (["--residual-band", "g"], '"g"', "g"),
    }
    return s


def _value(run, opt):
    obj = run
    for name in opt.path:
        obj = getattr(obj, name)
    return obj


def _resolve(argv, env=None):
    return resolve(build_parser().parse_args(argv), environ=env or {})


def _job(tmp, text, name="job.toml"):
    d = tmp / "proj" / "jobs"
    d.mkdir(parents=True, exist_ok=True)
    p = d / name
    p.write_text(text)
    return str(p)


def _base(name, tmp):
    """Command line and TOML of the required options other than ``name``."""
    cli, toml = [], ""
    for req, (words, value, _) in ((n, samples(tmp)[n]) for n in ("region", "data_dir", "out")):
        if req != name:
            cli += {"region": REQUIRED_CLI[:5], "data_dir": REQUIRED_CLI[5:], "out": words}[req]
            toml += {"region": REQUIRED_TOML.splitlines()[0], "data_dir": REQUIRED_TOML.splitlines()[1],
                     "out": f"out = {value}"}[req] + "\n"
    return cli, toml


def test_every_option_has_a_sample_that_differs_from_its_default(tmp_path):
    s = samples(tmp_path)
    assert set(s) == set(BY_NAME), "add the new option to samples() in tests/test_options.py"
    for name, (_, _, expected) in s.items():
        assert expected != BY_NAME[name].default, name


@pytest.mark.parametrize("name", [o.name for o in OPTIONS])
def test_option_from_command_line_and_from_job_file(tmp_path, name):
    """The same value by its flag and by its job-file key."""
    opt = BY_NAME[name]
    words, toml_value, expected = samples(tmp_path)[name]
    cli, toml = _base(name, tmp_path)
    from_cli = _value(_resolve(cli + words), opt)
    job = _job(tmp_path, toml + f"{name} = {toml_value}\n")
    from_job = _value(_resolve(["--job", job]), opt)
    assert from_cli == expected and type(from_cli) is type(expected)
    assert from_job == expected and type(from_job) is type(expected)
    # absent from both, the default (or the default derived from other values)
    default = _value(_resolve(cli + (words if name in ("region", "data_dir", "out") else [])), opt)
    if opt.default is not MISSING and name not in ("run_dir",):
        assert default == opt.default


def test_manifest_holds_every_option_that_changes_results(tmp_path):
    s = samples(tmp_path)
    argv = [w for words, _, _ in s.values() for w in words]
    run = _resolve(argv)
    rd = open_run_dir(tmp_path / "rd", run.job.manifest_options(), [])
    manifest = json.loads(Path(rd.manifest_path).read_text())["options"]
    for opt in OPTIONS:
        if opt.manifest:
            expected = s[opt.name][2]
            if opt.name == "data_dir":
                expected = os.path.abspath(expected)
            assert manifest[opt.name] == (list(expected) if isinstance(expected, tuple) else expected), opt.name
        else:
            assert opt.name not in manifest, opt.name
    assert manifest["code"]
    assert not BY_NAME["threads"].manifest  # results do not depend on the number of threads


def test_flags_override_the_job_file(tmp_path):
    job = _job(tmp_path, REQUIRED_TOML + 'out = "a.fits"\nmax_passes = 2\nbands = "gri"\n')
    run = _resolve(["--job", job, "--max-passes", "4"])
    assert run.job.infer.max_passes == 4 and run.job.bands == (1, 2, 3)
    assert run.out == str(tmp_path / "proj" / "a.fits")  # relative to the project root
    assert run.run_dir == str(tmp_path / "proj" / "a.run")


def test_derived_defaults(tmp_path):
    init = tmp_path / "init.fits"
    init.write_bytes(b"")
    argv = REQUIRED_CLI + ["--out", str(tmp_path / "c.fits")]
    assert _resolve(argv, {"SLURM_CPUS_PER_TASK": "3"}).job.infer.threads == 3
    assert _resolve(argv).job.infer.threads == 1
    assert _resolve(argv).job.infer.residual_rounds == 1
    assert _resolve(argv + ["--init", str(init)]).job.infer.residual_rounds == 0
    assert _resolve(argv + ["--init", str(init), "--residual-rounds", "1"]).job.infer.residual_rounds == 1
    assert _resolve(argv + ["--init", "sep"]).job.init is None
    with pytest.raises(ConfigError, match="SLURM_CPUS_PER_TASK"):
        _resolve(argv, {"SLURM_CPUS_PER_TASK": "four"})


@pytest.mark.parametrize("argv, words", [
    (["--overlap-arcsec", "30", "--box-arcsec", "30"], ["--overlap-arcsec", "overlap_arcsec"]),
    (["--residual-band", "x"], ["--residual-band", "'x'"]),
    (["--psf-components", "9"], ["--psf-components", "<= 6"]),
    (["--threads", "two"], ["--threads", "integer"]),
    (["--detect-bands", "grk"], ["--detect-bands"]),
    (["--region", "1", "2", "a", "3"], ["--region"]),
    (["--init", "nope.fits"], ["--init", "nope.fits"]),
    (["--data-dir", "/no/such/dir"], ["--data-dir"]),
])
def test_bad_values_name_the_flag(tmp_path, argv, words):
    base = REQUIRED_CLI + ["--out", str(tmp_path / "c.fits")]
    with pytest.raises(ConfigError) as e:
        _resolve(base + argv)
    for w in words:
        assert w in str(e.value)


def test_missing_required_option(tmp_path):
    with pytest.raises(ConfigError, match="--out"):
        _resolve(REQUIRED_CLI)
    with pytest.raises(ConfigError, match="--region"):
        _resolve(["--data-dir", DATA, "--out", "x.fits"])


def test_job_file_errors_name_file_and_key(tmp_path):
    job = _job(tmp_path, REQUIRED_TOML + 'out = "a.fits"\nresidual_snr = -1\n')
    with pytest.raises(ConfigError) as e:
        _resolve(["--job", job])
    assert job in str(e.value) and "'residual_snr'" in str(e.value)


def test_overlap_checked_on_the_merged_values(tmp_path):
    """30" overlap is fine in the job file with 60" boxes, not with --box-arcsec 30 on top."""
    job = _job(tmp_path, REQUIRED_TOML + 'out = "a.fits"\nbox_arcsec = 60\noverlap_arcsec = 30\n')
    assert _resolve(["--job", job]).job.overlap_arcsec == 30.0
    with pytest.raises(ConfigError, match="overlap_arcsec"):
        _resolve(["--job", job, "--box-arcsec", "30"])


def test_stage_options_are_the_registry_defaults():
    """Code that builds the stage options directly gets the same defaults as the command line."""
    assert InferOptions().max_passes == BY_NAME["max_passes"].default == 3
    assert ImageOptions().psf_components == BY_NAME["psf_components"].default


def test_help_and_readme_list_every_option():
    text = build_parser().format_help()
    readme = (ROOT / "README.md").read_text()
    for opt in OPTIONS:
        flag = opt.flag if not isinstance(opt.kind, Flag) or opt.default is False else "--no-" + opt.flag[2:]
        assert opt.flag in text, opt.flag
        assert f"`{flag}" in readme, f"README's options table lacks {flag}"


@pytest.mark.parametrize("value, seconds", [(90, 90.0), ("3600", 3600.0), ("0-01:00:00", 3600.0)])
def test_time_limit_forms(value, seconds):
    assert parse_time_limit(value) == seconds
