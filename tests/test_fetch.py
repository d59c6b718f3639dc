"""Tests of celeste.fetch against a loopback SAS-style server with injected faults.

No test touches the network: the server (tests/httpfault.py) listens on
127.0.0.1 and serves the project's sample field data/sdss/2583/2/136.
"""
import bz2
import gzip
import json
import logging

import pytest

from celeste import fetch
from celeste.errors import ConfigError, DataError

try:
    import httpfault
except ImportError:  # tests/ imported as a package
    from tests import httpfault

RUN, CAMCOL, FIELD = 2583, 2, 136
#: a timeout no healthy loopback transfer comes near, so that retry counts do not depend on
#: the machine's speed or load
FAST = dict(retries=3, timeout=30.0, backoff=0.01, max_backoff=0.05, progress=False)
#: the timeout of tests that make the server stall: stalled connections stay silent until
#: the server stops, so only the client's timeout ends them
STALL_TIMEOUT = 1.0


def _key(f):
    """'frame_r', 'fpM_r', 'psField' or 'photoField' for a served file."""
    name = f.local_name.rsplit("/", 1)[-1]
    kind = name.split("-")[0]
    if kind == "frame":
        return "frame_" + name.split("-")[1]
    if kind == "fpM":
        return "fpM_" + name.split("-")[2][0]
    return kind


def _sample(workdir, small_frames):
    served, files = httpfault.sample_field_files(workdir, small_frames=small_frames)
    return served, {_key(f): f for f in files}


@pytest.fixture(scope="module")
def real_sample(tmp_path_factory):
    """The real field: frames as SDSS distributes them (slow to verify, ~1 s each)."""
    return _sample(tmp_path_factory.mktemp("gz"), small_frames=False)


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """The real field with small stand-ins for the frames (fast to verify)."""
    return _sample(tmp_path_factory.mktemp("gz"), small_frames=True)


def _no_proxy(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def server(sample, monkeypatch):
    _no_proxy(monkeypatch)
    with httpfault.FaultServer(sample[0], stall_seconds=None) as srv:
        yield srv


@pytest.fixture
def real_server(real_sample, monkeypatch):
    _no_proxy(monkeypatch)
    with httpfault.FaultServer(real_sample[0], stall_seconds=None) as srv:
        yield srv


def _expected(f):
    """Bytes the local file must hold (fpM stored uncompressed)."""
    return f.expected


def _get(server, sample, key):
    f = sample[1][key]
    return f, server.mirror + f.url_path[len(httpfault.SAS_PREFIX):]


# ---------------------------------------------------------------- layout


def test_sas_dr17_urls_match_the_data_model(tmp_path):
    files = fetch.field_files(RUN, CAMCOL, FIELD, tmp_path, bands="r")
    urls = {(f.kind, f.band): f.url for f in files}
    sas = "https://data.sdss.org/sas/dr17/eboss"
    assert urls[("frame", "r")] == \
        f"{sas}/photoObj/frames/301/2583/2/frame-r-002583-2-0136.fits.bz2"
    assert urls[("fpM", "r")] == f"{sas}/photo/redux/301/2583/objcs/2/fpM-002583-r2-0136.fit.gz"
    assert urls[("psField", None)] == \
        f"{sas}/photo/redux/301/2583/objcs/2/psField-002583-2-0136.fit"
    assert urls[("photoField", None)] == f"{sas}/photoObj/301/2583/photoField-002583-2.fits"
    paths = {(f.kind, f.band): f.path.relative_to(tmp_path).as_posix() for f in files}
    assert paths == {("frame", "r"): "2583/2/136/frame-r-002583-2-0136.fits.bz2",
                     ("fpM", "r"): "2583/2/136/fpM-002583-r2-0136.fits",
                     ("psField", None): "2583/2/136/psField-002583-2-0136.fits",
                     ("photoField", None): "2583/2/photoField-002583-2.fits"}


def test_custom_layout_from_json(tmp_path):
    layout = dict(fetch.LAYOUTS["sas-dr17"])
    layout["psField"] = "mine/{run}/{camcol}/psField-{run:06d}-{camcol}-{field:04d}.fits"
    path = tmp_path / "layout.json"
    path.write_text(json.dumps(layout))
    files = fetch.field_files(RUN, CAMCOL, FIELD, tmp_path, mirror="http://m/", bands="g",
                              layout=str(path))
    assert [f.url for f in files if f.kind == "psField"] == \
        ["http://m/mine/2583/2/psField-002583-2-0136.fits"]
    del layout["fpM"]
    with pytest.raises(ConfigError, match="--layout.*fpM"):
        fetch.field_files(RUN, CAMCOL, FIELD, tmp_path, layout=layout)
    with pytest.raises(ConfigError, match="--layout"):
        fetch.field_files(RUN, CAMCOL, FIELD, tmp_path, layout="sas-dr99")


@pytest.mark.parametrize("kwargs, arg", [(dict(bands="rx"), "--bands"),
                                         (dict(bands="rr"), "--bands"),
                                         (dict(camcol=7), "--camcol"),
                                         (dict(run=-1), "--run")])
def test_bad_arguments_name_the_argument(tmp_path, kwargs, arg):
    ids = dict(run=RUN, camcol=CAMCOL, field=FIELD)
    bands = kwargs.pop("bands", "ugriz")
    ids.update(kwargs)
    with pytest.raises(ConfigError, match=arg):
        fetch.field_files(ids["run"], ids["camcol"], ids["field"], tmp_path, bands=bands)


# ---------------------------------------------------------------- FITS check


def test_verify_fits_accepts_real_files_and_rejects_truncation(tmp_path):
    ps = httpfault.SAMPLE / "2583" / "2" / "136" / "psField-002583-2-0136.fits"
    assert fetch.verify_fits(ps) == 10  # primary + 9 extensions of the psField
    data = ps.read_bytes()
    gz = tmp_path / "ps.fits.gz"
    gz.write_bytes(gzip.compress(data))
    assert fetch.verify_fits(gz) == 10
    for cut in (len(data) - 2880, len(data) - 1, 5000):
        short = tmp_path / f"short{cut}.fits"
        short.write_bytes(data[:cut])
        with pytest.raises(DataError, match=f"short{cut}.fits"):
            fetch.verify_fits(short)
    cut_bz2 = tmp_path / "cut.fits.bz2"
    cut_bz2.write_bytes(bz2.compress(data)[:-100])
    with pytest.raises(DataError, match="cut.fits.bz2"):
        fetch.verify_fits(cut_bz2)


# ---------------------------------------------------------------- downloads


def test_clean_download_of_whole_field_is_byte_identical(tmp_path, real_server, real_sample):
    server, sample = real_server, real_sample
    paths = fetch.fetch_field(RUN, CAMCOL, FIELD, tmp_path, mirror=server.mirror, **FAST)
    assert len(paths) == 12
    for f in sample[1].values():
        local = tmp_path / f.local_name
        assert local.read_bytes() == _expected(f), f.local_name
    # against the project's files directly, not only the helper's copies
    src = httpfault.SAMPLE / "2583" / "2"
    for local in paths:
        assert local.read_bytes() == (src / local.relative_to(tmp_path / "2583" / "2")
                                      ).read_bytes(), local.name
    # the fpM really was served gzipped and stored plain
    fpm = sample[1]["fpM_r"]
    assert server.files[fpm.url_path][:2] == b"\x1f\x8b"
    assert (tmp_path / fpm.local_name).read_bytes()[:9] == b"SIMPLE  ="
    assert not list(tmp_path.rglob("*.part")) and not list(tmp_path.rglob("*.tmp"))
    assert all(r.status == 200 and r.range is None for r in server.requests)
    assert len(server.requests) == 12


@pytest.mark.parametrize("key", ["psField", "fpM_r"])
@pytest.mark.parametrize("faults", [("drop",), ("truncate",), ("500",), ("503", "500"),
                                    ("slow",), ("stall",), ("corrupt",),
                                    ("truncate", "truncate", "500")])
def test_each_fault_is_recovered(tmp_path, server, sample, key, faults):
    f, url = _get(server, sample, key)
    server.inject(f.url_path, *faults)
    dest = tmp_path / f.local_name
    stalls = {"slow", "stall"} & set(faults)
    fetch.download(url, dest, **{**FAST, "timeout": STALL_TIMEOUT if stalls else FAST["timeout"]})
    assert dest.read_bytes() == _expected(f)
    gets = server.gets(f.url_path)
    assert len(gets) == len(faults) + 1
    assert gets[-1].fault is None and gets[-1].status in (200, 206)
    if faults[0] == "truncate":
        # the half body was kept and the next attempt asked only for the rest
        half = len(server.files[f.url_path]) // 2
        assert gets[1].range == f"bytes={half}-"
        assert gets[1].status == 206
    if faults == ("corrupt",):
        assert gets[1].range is None  # junk was discarded, not resumed
    assert not dest.with_name(dest.name + ".part").exists()


def test_faults_on_several_files_of_a_field(tmp_path, server, sample):
    for key, faults in [("frame_r", ("truncate",)), ("fpM_r", ("500", "drop")),
                        ("psField", ("slow",)), ("photoField", ("corrupt", "503"))]:
        server.inject(sample[1][key].url_path, *faults)
    fetch.fetch_field(RUN, CAMCOL, FIELD, tmp_path, mirror=server.mirror, bands="r",
                      **{**FAST, "timeout": STALL_TIMEOUT})  # the psField stalls ("slow")
    for key in ("frame_r", "fpM_r", "psField", "photoField"):
        f = sample[1][key]
        assert (tmp_path / f.local_name).read_bytes() == _expected(f)


def test_permanent_failure_exits_2_naming_the_url(tmp_path, server, sample, capsys):
    f, url = _get(server, sample, "psField")
    server.fail_always(f.url_path, "500")
    status = fetch.main(["--run", str(RUN), "--camcol", str(CAMCOL), "--field", str(FIELD),
                         "--data-dir", str(tmp_path), "--mirror", server.mirror,
                         "--bands", "r", "--retries", "2", "--timeout", "30",
                         "--backoff", "0.01", "--quiet"])
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    message = [line for line in err if line.startswith("celeste-fetch: error:")]
    assert len(message) == 1
    assert url in message[0] and "3 attempt" in message[0]
    assert len(server.gets(f.url_path)) == 3
    assert not (tmp_path / f.local_name).exists()
    # the other files of the field were still fetched
    assert (tmp_path / sample[1]["fpM_r"].local_name).exists()


def test_not_found_is_not_retried(tmp_path, server, sample):
    f, url = _get(server, sample, "psField")
    server.fail_always(f.url_path, "404")
    with pytest.raises(DataError, match="404") as info:
        fetch.download(url, tmp_path / f.local_name, **FAST)
    assert url in str(info.value) and f.local_name.rsplit("/")[-1] in str(info.value)
    assert len(server.gets(f.url_path)) == 1


def test_corrupt_content_is_never_moved_into_place(tmp_path, server, sample):
    f, url = _get(server, sample, "fpM_r")
    server.fail_always(f.url_path, "corrupt")
    dest = tmp_path / f.local_name
    with pytest.raises(DataError) as info:
        fetch.download(url, dest, **FAST)
    assert url in str(info.value) and str(dest) in str(info.value)
    assert "not valid FITS" in str(info.value)
    assert not dest.exists()
    assert not dest.with_name(dest.name + ".part").exists()
    assert len(server.gets(f.url_path)) == FAST["retries"] + 1


def test_existing_valid_file_is_not_downloaded_again(tmp_path, server, sample, caplog):
    fetch.fetch_field(RUN, CAMCOL, FIELD, tmp_path, mirror=server.mirror, bands="g", **FAST)
    n = len(server.requests)
    assert n == 4
    ps = tmp_path / sample[1]["psField"].local_name
    mtime = ps.stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="celeste.fetch"):
        fetch.fetch_field(RUN, CAMCOL, FIELD, tmp_path, mirror=server.mirror, bands="g", **FAST)
    assert len(server.requests) == n
    assert ps.stat().st_mtime_ns == mtime
    assert "already present" in caplog.text
    # an existing but damaged file is replaced
    ps.write_bytes(ps.read_bytes()[:10000])
    fetch.fetch_field(RUN, CAMCOL, FIELD, tmp_path, mirror=server.mirror, bands="g", **FAST)
    assert [r.path for r in server.requests[n:]] == [sample[1]["psField"].url_path]
    assert ps.read_bytes() == _expected(sample[1]["psField"])


def test_partial_part_file_resumes_with_range(tmp_path, server, sample):
    f, url = _get(server, sample, "fpM_r")
    dest = tmp_path / f.local_name
    dest.parent.mkdir(parents=True)
    body = server.files[f.url_path]
    keep = len(body) // 3
    dest.with_name(dest.name + ".part").write_bytes(body[:keep])
    fetch.download(url, dest, **FAST)
    gets = server.gets(f.url_path)
    assert [(g.range, g.status) for g in gets] == [(f"bytes={keep}-", 206)]
    assert dest.read_bytes() == _expected(f)


def test_part_file_restarts_when_server_ignores_range(tmp_path, server, sample):
    f, url = _get(server, sample, "psField")
    server.honour_range = False
    dest = tmp_path / f.local_name
    dest.parent.mkdir(parents=True)
    body = server.files[f.url_path]
    dest.with_name(dest.name + ".part").write_bytes(body[:50000])
    fetch.download(url, dest, **FAST)
    gets = server.gets(f.url_path)
    assert [(g.range, g.status) for g in gets] == [("bytes=50000-", 200)]
    assert dest.read_bytes() == body  # not the first 50000 bytes twice


def test_stale_oversized_part_starts_over(tmp_path, server, sample):
    f, url = _get(server, sample, "psField")
    dest = tmp_path / f.local_name
    dest.parent.mkdir(parents=True)
    body = server.files[f.url_path]
    dest.with_name(dest.name + ".part").write_bytes(body + b"extra bytes")
    fetch.download(url, dest, **FAST)
    gets = server.gets(f.url_path)
    assert [g.status for g in gets] == [416, 200]
    assert dest.read_bytes() == body


def test_resume_does_not_splice_a_file_changed_on_the_server(tmp_path, server, sample):
    f, url = _get(server, sample, "psField")
    other = (httpfault.ROOT / "tests" / "data" / "psField-000094-1-0012.fits").read_bytes()
    server.inject(f.url_path, "truncate")
    server.swap_after(f.url_path, 1, other)
    dest = tmp_path / f.local_name
    fetch.download(url, dest, **FAST)
    first, second = server.gets(f.url_path)
    assert second.range is not None and second.if_range is not None
    assert second.status == 200  # validator no longer matches: whole new file
    assert dest.read_bytes() == other


def test_cli_bad_bands_exits_2_naming_the_option(tmp_path, capsys):
    status = fetch.main(["--run", "2583", "--camcol", "2", "--field", "136",
                         "--data-dir", str(tmp_path), "--bands", "rx"])
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("celeste-fetch: error: --bands")
    assert not any(tmp_path.iterdir())


def test_file_url_mirror_and_gzip_stored_plain(tmp_path, sample):
    f = sample[1]["fpM_g"]
    src = tmp_path / "mirror" / "fpM.fit.gz"
    src.parent.mkdir()
    src.write_bytes(sample[0][f.url_path])
    dest = tmp_path / "out" / "fpM.fits"
    fetch.download(src.as_uri(), dest, **FAST)
    assert dest.read_bytes() == _expected(f)
