"""Fuzzing the SDSS readers: corrupt headers, tables and bytes must raise the package's own
errors (celeste.errors.DataError / ConfigError), never a library exception.

Each example builds a small but well-formed file of the kind the reader expects (a 20 x 30
frame with the sample frame's WCS, calibration and sky grid; a psField; an fpM; a
photoField; an --init catalog), then hypothesis corrupts it: header cards rewritten in the
raw bytes (so astropy's own checks on writing are bypassed), table columns dropped,
reshaped or filled with NaN / zero / negative values, the file truncated or bytes
overwritten.  A reader either raises a CelesteError or returns values that pass the same
sanity checks it promises (shapes, finite positive calibration and sky, ...).
"""
import bz2
import io
import os
import tempfile
import warnings

import numpy as np
import pytest
from astropy.io import fits
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from celeste import sdss
from celeste.errors import CelesteError
from celeste.fieldindex import footprint_from_header

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAME_R = os.path.join(ROOT, "data", "sdss", "2583", "2", "136", "frame-r-002583-2-0136.fits.bz2")
H, W = 20, 30

FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def real_header():
    return sdss.read_frame_header(FRAME_R)


# ------------------------------------------------------------------ corruption helpers

VALUES = st.one_of(
    st.integers(-10 ** 12, 10 ** 12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda v: repr(v).upper()),
    st.sampled_from(["NAN", "INF", "-INF", "1E400", "'RA---TAN'", "'DEC--TAN'", "'GARBAGE'", "''", "T", "F",
                     "'", "0", "-1", "2", "3", "99999999"]),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=20),
)


def set_card(raw, key, value):
    """Rewrite the first card ``key`` of the raw FITS bytes as ``KEY = value`` (no checks)."""
    k = key.encode().ljust(8)
    for i in range(0, min(len(raw), 2880 * 40), 80):
        if raw[i:i + 8] == k:
            card = (key.ljust(8) + "= " + value)[:80].ljust(80)
            return raw[:i] + card.encode("ascii", "replace") + raw[i + 80:]
    return raw


def drop_card(raw, key):
    k = key.encode().ljust(8)
    for i in range(0, min(len(raw), 2880 * 40), 80):
        if raw[i:i + 8] == k:
            return raw[:i] + b"COMMENT".ljust(80) + raw[i + 80:]
    return raw


BYTE_EDITS = st.lists(st.one_of(
    st.tuples(st.just("truncate"), st.floats(0.0, 1.0)),
    st.tuples(st.just("flip"), st.floats(0.0, 1.0), st.binary(min_size=1, max_size=64)),
), max_size=2)


def edit_bytes(raw, edits):
    for e in edits:
        if e[0] == "truncate":
            raw = raw[: int(len(raw) * e[1])]
        else:
            i = int(len(raw) * e[1])
            raw = raw[:i] + e[2] + raw[i + len(e[2]):]
    return raw


def to_bytes(hdul):
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hdul.writeto(buf, output_verify="silentfix")
    return buf.getvalue()


def write(tmp, name, raw, compress=False):
    path = os.path.join(tmp, name + (".bz2" if compress else ""))
    with open(path, "wb") as f:
        f.write(bz2.compress(raw) if compress else raw)
    return path


def only_celeste_errors(fn, *args, **kw):
    """Call ``fn``; return its value, or None if it raised a CelesteError (anything else fails)."""
    try:
        return fn(*args, **kw)
    except CelesteError:
        return None


# ------------------------------------------------------------------ frames

FRAME_KEYS = ["NAXIS", "NAXIS1", "NAXIS2", "BITPIX", "CTYPE1", "CTYPE2", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2",
              "CD1_1", "CD1_2", "CD2_1", "CD2_2", "EQUINOX", "RADECSYS"]

CALIB = st.sampled_from(["ok", "nan", "zero", "negative", "short", "2d", "empty"])
SKY = st.sampled_from(["ok", "nan", "zero", "negative", "no_allsky", "no_xinterp", "short_x", "short_y", "1d",
                       "empty_table", "string_col"])


def make_frame(header, calib_kind, sky_kind):
    hdr = header.copy()
    hdr["NAXIS1"], hdr["NAXIS2"] = W, H
    img = np.random.default_rng(0).normal(0.0, 0.1, (H, W)).astype(np.float32)
    calib = np.full(W, 0.005, np.float32)
    calib = {"ok": calib, "nan": np.where(np.arange(W) == 3, np.nan, calib), "zero": calib * 0,
             "negative": -calib, "short": calib[:-1], "2d": np.tile(calib, (2, 1)), "empty": calib[:0]}[calib_kind]
    allsky = np.full((1, 4, 5), 150.0, np.float32)
    xi = np.linspace(0, 4, W)[None].astype(np.float32)
    yi = np.linspace(0, 3, H)[None].astype(np.float32)
    cols = {"ALLSKY": allsky, "XINTERP": xi, "YINTERP": yi}
    if sky_kind in ("nan", "zero", "negative"):
        cols["ALLSKY"] = {"nan": np.where(np.arange(5) == 2, np.nan, allsky), "zero": allsky * 0,
                          "negative": -allsky}[sky_kind].astype(np.float32)
    elif sky_kind == "no_allsky":
        del cols["ALLSKY"]
    elif sky_kind == "no_xinterp":
        del cols["XINTERP"]
    elif sky_kind == "short_x":
        cols["XINTERP"] = xi[:, :-3]
    elif sky_kind == "short_y":
        cols["YINTERP"] = yi[:, :-3]
    elif sky_kind == "1d":
        cols["ALLSKY"] = allsky.reshape(1, -1)
    fcols = [fits.Column(name=k, format=f"{v[0].size}E", dim=str(v.shape[1:][::-1]) if v.ndim > 2 else None,
                         array=v) for k, v in cols.items()]
    if sky_kind == "string_col":
        fcols.append(fits.Column(name="ALLSKYX", format="5A", array=np.array(["abcde"])))
        fcols = [c for c in fcols if c.name != "ALLSKY"] + [fits.Column(name="ALLSKY", format="3A",
                                                                       array=np.array(["xyz"]))]
    sky = fits.BinTableHDU.from_columns(fcols, nrows=0 if sky_kind == "empty_table" else 1)
    prim = fits.PrimaryHDU(img, header=hdr)
    return fits.HDUList([prim, fits.ImageHDU(calib), sky])


def check_frame(fr, box):
    x0, x1, y0, y1 = box if box else (0, W, 0, H)
    assert fr.image.shape == (y1 - y0, x1 - x0)
    assert fr.calibration.shape == (x1 - x0,)
    assert np.all(np.isfinite(fr.calibration)) and np.all(fr.calibration > 0)
    assert fr.sky.shape == fr.image.shape and np.all(np.isfinite(fr.sky)) and np.all(fr.sky > 0)
    assert fr.wcs.has_celestial


@FUZZ
@given(cards=st.lists(st.tuples(st.sampled_from(FRAME_KEYS), st.one_of(VALUES, st.none())), max_size=3),
       calib=CALIB, sky=SKY, edits=BYTE_EDITS, compress=st.booleans(),
       box=st.one_of(st.none(), st.tuples(st.integers(-5, 35), st.integers(-5, 35), st.integers(-5, 25),
                                          st.integers(-5, 25))))
def test_read_frame_fuzz(real_header, cards, calib, sky, edits, compress, box):
    raw = to_bytes(make_frame(real_header, calib, sky))
    for key, value in cards:
        raw = set_card(raw, key, value) if value is not None else drop_card(raw, key)
    raw = edit_bytes(raw, edits)
    with tempfile.TemporaryDirectory() as tmp:
        path = write(tmp, "frame-r-000001-1-0001.fits", raw, compress)
        hdr = only_celeste_errors(sdss.read_frame_header, path)
        if hdr is not None:
            only_celeste_errors(footprint_from_header, hdr, path)
        fr = only_celeste_errors(sdss.read_frame, path, box=box)
        if fr is not None:
            check_frame(fr, box)


def test_read_frame_fuzz_baseline(real_header, tmp_path):
    """The unbroken synthetic frame reads (so the fuzz test exercises more than error paths)."""
    path = write(str(tmp_path), "f.fits", to_bytes(make_frame(real_header, "ok", "ok")))
    fr = sdss.read_frame(path)
    check_frame(fr, None)
    np.testing.assert_allclose(fr.sky, 150.0)


@FUZZ
@given(raw=st.binary(max_size=6000), compress=st.booleans())
def test_frame_header_random_bytes(raw, compress):
    with tempfile.TemporaryDirectory() as tmp:
        path = write(tmp, "frame-r-000001-1-0001.fits", raw, compress)
        only_celeste_errors(sdss.read_frame_header, path)
        only_celeste_errors(sdss.read_frame, path)


# ------------------------------------------------------------------ psField

PSF_COLS = ["RROWS", "C", "NROW_B", "NCOL_B", "RNROW", "RNCOL"]


def make_psfield(drop, bad, n=7, k=2):
    rng = np.random.default_rng(1)
    eig = np.zeros((k, n * n))
    for i in range(k):
        g = np.exp(-0.5 * ((np.arange(n) - n // 2) ** 2) / (1.0 + i))
        eig[i] = np.outer(g, g).ravel()
    c = np.zeros((k, 5, 5))
    c[:, 0, 0] = [1.0, 0.1][:k]
    c[:, 1, 0] = rng.normal(0, 0.01, k)
    cols = {"RROWS": eig, "C": c, "NROW_B": np.full(k, 2), "NCOL_B": np.full(k, 1),
            "RNROW": np.full(k, n), "RNCOL": np.full(k, n)}
    if bad == "nan":
        cols["C"] = np.where(c == 1.0, np.nan, c)
    elif bad == "rnrow":
        cols["RNROW"] = np.full(k, n + 2)
    elif bad == "rncol":
        cols["RNCOL"] = np.full(k, n - 1)
    elif bad == "nrow_b":
        cols["NROW_B"] = np.full(k, 9)
    elif bad == "ncol_b0":
        cols["NCOL_B"] = np.zeros(k, int)
    elif bad == "short_rrows":
        cols["RROWS"] = eig[:, :10]
    elif bad == "even":
        cols["RNROW"] = cols["RNCOL"] = np.full(k, n - 1)
        cols["RROWS"] = eig[:, : (n - 1) ** 2]
    elif bad == "zero":
        cols["RROWS"] = eig * 0
    elif bad == "negative":
        cols["RROWS"] = -eig
    elif bad == "no_rows":
        cols = {key: v[:0] for key, v in cols.items()}
    fcols = []
    for key, v in cols.items():
        if key in drop:
            continue
        v = np.asarray(v)
        if v.ndim == 1:
            fcols.append(fits.Column(name=key, format="J" if v.dtype.kind == "i" else "E", array=v))
        else:
            shape = v.shape[1:]
            fcols.append(fits.Column(name=key, format=f"{int(np.prod(shape))}E", array=v.astype(np.float32),
                                     dim=str(shape[::-1]) if len(shape) > 1 else None))
    hdus = [fits.PrimaryHDU()] + [fits.BinTableHDU.from_columns(fcols) for _ in range(5)]
    return fits.HDUList(hdus)


@FUZZ
@given(drop=st.sets(st.sampled_from(PSF_COLS), max_size=2),
       bad=st.sampled_from(["ok", "nan", "rnrow", "rncol", "nrow_b", "ncol_b0", "short_rrows", "even", "zero",
                            "negative", "no_rows"]),
       band=st.sampled_from([0, 2, 4, "r", 7, "x"]), size=st.sampled_from([1, 3, 5, 6, 7, 9]), edits=BYTE_EDITS,
       cards=st.lists(st.tuples(st.sampled_from(["NAXIS1", "NAXIS2", "TFIELDS", "TFORM1", "TFORM2", "TDIM2",
                                                 "PCOUNT"]), VALUES), max_size=2))
def test_read_psfield_fuzz(drop, bad, band, size, edits, cards):
    raw = to_bytes(make_psfield(drop, bad))
    for key, value in cards:
        raw = set_card(raw[:2880] + set_card(raw[2880:], key, value), key, value)
    raw = edit_bytes(raw, edits)
    with tempfile.TemporaryDirectory() as tmp:
        path = write(tmp, "psField-000001-1-0001.fits", raw)
        model = only_celeste_errors(sdss.read_psfield, path, band, size=size)
        if model is not None:
            stamp = only_celeste_errors(model.psf_at, 3.0, 4.0)
            if stamp is not None:
                assert stamp.shape == (size, size) and np.all(np.isfinite(stamp))
                assert abs(stamp.sum() - 1.0) < 1e-9


def test_read_psfield_fuzz_baseline(tmp_path):
    path = write(str(tmp_path), "p.fits", to_bytes(make_psfield(set(), "ok")))
    stamp = sdss.read_psfield(path, "r", size=5).psf_at(3.0, 4.0)
    assert stamp.shape == (5, 5) and np.unravel_index(np.argmax(stamp), stamp.shape) == (2, 2)


# ------------------------------------------------------------------ fpM


def make_fpm(planes, spans_kind, rows):
    names = ["INTERP", "SATUR", "NOTCHECKED", "OBJECT", "BRIGHTOBJECT", "BINOBJECT", "CATOBJECT", "SUBTRACTED",
             "GHOST", "CR"]
    hdus = [fits.PrimaryHDU()]
    for _ in names:
        spans = np.array([[2, 1, 5], [3, 0, 40]], dtype=">i2")  # (row, col0, col1)
        s = spans.tobytes()
        nspan = 2
        if spans_kind == "count_mismatch":
            nspan = 3
        elif spans_kind == "odd_bytes":
            s = s[:-1]
        elif spans_kind == "int32":
            s = spans.astype(">i4").tobytes()
        elif spans_kind == "huge_offset":
            pass
        arr = np.frombuffer(s, dtype=np.uint8)
        n = rows
        cols = [fits.Column(name="nspan", format="J", array=np.full(n, nspan)),
                fits.Column(name="row0", format="J", array=np.full(n, 10 ** 6 if spans_kind == "huge_offset" else 1)),
                fits.Column(name="col0", format="J", array=np.full(n, -3)),
                fits.Column(name="s", format="PB()", array=np.array([arr] * n, dtype=object))]
        hdus.append(fits.BinTableHDU.from_columns(cols))
    present = [n for n in names if n in planes]
    attr = np.array([f"S_MASK_{n}" for n in present] or ["NOTHING"])
    value = np.array([names.index(n) for n in present] or [0])
    hdus.append(fits.BinTableHDU.from_columns([fits.Column(name="attributeName", format="30A", array=attr),
                                               fits.Column(name="Value", format="J", array=value)]))
    return fits.HDUList(hdus)


@FUZZ
@given(planes=st.sets(st.sampled_from(["INTERP", "SATUR", "CR", "GHOST", "OBJECT"]), min_size=0, max_size=5),
       spans=st.sampled_from(["ok", "count_mismatch", "odd_bytes", "int32", "huge_offset"]),
       rows=st.integers(0, 3), edits=BYTE_EDITS,
       shape=st.sampled_from([(10, 20), (1, 1), (1489, 2048)]))
def test_read_fpm_fuzz(planes, spans, rows, edits, shape):
    raw = edit_bytes(to_bytes(make_fpm(planes, spans, rows)), edits)
    with tempfile.TemporaryDirectory() as tmp:
        path = write(tmp, "fpM-000001-r1-0001.fits", raw)
        mask = only_celeste_errors(sdss.read_fpm, path, shape)
        if mask is not None:
            assert mask.shape == shape and mask.dtype == bool


def test_read_fpm_fuzz_baseline(tmp_path):
    path = write(str(tmp_path), "m.fits", to_bytes(make_fpm({"INTERP", "SATUR", "CR", "GHOST"}, "ok", 1)))
    mask = sdss.read_fpm(path, (10, 20))
    # spans (row 2, cols 1..5) and (row 3, cols 0..40) offset by row0 = 1, col0 = -3, clipped
    assert mask[3, 0:3].all() and not mask[3, 3] and mask[4, 0:20].all() and mask.sum() == 3 + 20


# ------------------------------------------------------------------ photoField


@FUZZ
@given(drop=st.sets(st.sampled_from(["FIELD", "GAIN", "DARK_VARIANCE"]), max_size=1),
       gain=st.sampled_from(["ok", "nan", "zero", "negative", "short"]), field=st.integers(-2, 5),
       edits=BYTE_EDITS)
def test_read_photofield_fuzz(drop, gain, field, edits):
    g = np.array([[1.6, 3.9, 4.7, 5.1, 4.5]] * 3)
    g = {"ok": g, "nan": g * np.nan, "zero": g * 0, "negative": -g, "short": g[:, :3]}[gain]
    cols = {"FIELD": np.array([1, 2, 3]), "GAIN": g, "DARK_VARIANCE": np.full((3, 5), 1.2)}
    fcols = [fits.Column(name=k, format="J" if v.ndim == 1 else f"{v.shape[1]}E", array=v)
             for k, v in cols.items() if k not in drop]
    raw = edit_bytes(to_bytes(fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(fcols)])), edits)
    with tempfile.TemporaryDirectory() as tmp:
        path = write(tmp, "photoField-000001-1.fits", raw)
        meta = only_celeste_errors(sdss.read_photofield, path, field)
        if meta is not None:
            assert meta["gain"].shape == (5,) and np.all(meta["gain"] > 0)


# ------------------------------------------------------------------ --init catalogs


@FUZZ
@given(cols=st.dictionaries(st.sampled_from(["ra", "dec", "RA", "Dec", "flux_r", "x"]),
                            st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                                               st.integers(-10, 400)), min_size=0, max_size=4),
                            max_size=4),
       edits=BYTE_EDITS)
def test_read_init_catalog_fuzz(cols, edits):
    from astropy.table import Table

    from celeste.initcat import read_init_catalog

    if len({k.lower() for k in cols}) < len(cols):
        cols = {k: v for k, v in cols.items() if k == k.lower()}  # case clashes: test_init_catalog_case_clash
    n = min((len(v) for v in cols.values()), default=0)
    t = Table({k: np.asarray(v[:n], float) for k, v in cols.items()}) if cols else Table()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "init.fits")
        try:
            t.write(path)
        except Exception:
            return  # duplicate names ("ra" and "RA") - astropy refuses, not a celeste case
        with open(path, "rb") as f:
            raw = edit_bytes(f.read(), edits)
        with open(path, "wb") as f:
            f.write(raw)
        cat = only_celeste_errors(read_init_catalog, path)
        if cat is not None:
            assert len(cat) > 0 and np.all(np.isfinite(np.asarray(cat["ra"], float)))
            assert np.all(np.abs(np.asarray(cat["dec"], float)) <= 90)


def test_init_catalog_case_clash(tmp_path):
    from astropy.table import Table

    from celeste.errors import DataError
    from celeste.initcat import read_init_catalog

    path = str(tmp_path / "init.fits")
    Table({"ra": [1.0], "RA": [2.0], "dec": [0.0]}).write(path)
    with pytest.raises(DataError, match="init.fits"):
        read_init_catalog(path)
