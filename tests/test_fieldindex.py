"""Tests of the field footprint index on the real frame 2583-2-136 and a synthetic one at RA ~ 0."""
import json
import os
import shutil

import numpy as np
import pytest
from astropy.io import fits

from celeste import fieldindex, sdss
from celeste.errors import ConfigError, DataError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAME_R = os.path.join(ROOT, "data", "sdss", "2583", "2", "136", "frame-r-002583-2-0136.fits.bz2")
SAMPLE = (2583, 2, 136)
FAKE = (1, 4, 11)  # synthetic field straddling RA = 0


@pytest.fixture(scope="module")
def real_header():
    return sdss.read_frame_header(FRAME_R)


@pytest.fixture()
def data_dir(tmp_path, real_header):
    """A data dir with a copy of the real r frame and a plain synthetic frame at RA 0.05."""
    d = tmp_path / "sdss"
    real = d / "2583" / "2" / "136"
    real.mkdir(parents=True)
    shutil.copy(FRAME_R, real / os.path.basename(FRAME_R))
    hdr = real_header.copy()
    hdr["CRVAL1"] = 0.05
    hdr["CRVAL2"] = 10.0
    fake = d / "1" / "4" / "11"
    fake.mkdir(parents=True)
    # header-only readers never look at the pixels: a byte image of the right shape suffices
    hdu = fits.PrimaryHDU(np.zeros((1489, 2048), dtype=np.uint8))
    for key in ("CTYPE1", "CTYPE2", "CRPIX1", "CRPIX2", "CRVAL1", "CRVAL2", "CD1_1", "CD1_2", "CD2_1", "CD2_2"):
        hdu.header[key] = hdr[key]
    hdu.writeto(fake / "frame-g-000001-4-0011.fits")
    (d / "not-a-run").mkdir()
    return d


def test_footprint_of_real_frame(real_header):
    corners = fieldindex.field_footprint(os.path.join(ROOT, "data", "sdss"), *SAMPLE)
    assert corners.shape == (4, 2)
    # README: RA ~323.26-323.42, Dec ~-0.85 to -0.62
    assert 323.25 < corners[:, 0].min() < corners[:, 0].max() < 323.43
    assert -0.86 < corners[:, 1].min() < corners[:, 1].max() < -0.61
    # the frame is 2048 x 1489 pixels of 0.396 arcsec: sides 0.2253 deg (x, Dec) and 0.1638 deg (y, RA)
    side_x = np.hypot(*(corners[1] - corners[0]))
    side_y = np.hypot(*(corners[3] - corners[0]))
    assert side_x == pytest.approx(2048 * 0.396 / 3600, rel=0.01)
    assert side_y == pytest.approx(1489 * 0.396 / 3600, rel=0.01)
    # the reference pixel (CRVAL) lies inside
    assert fieldindex.footprint_overlaps(
        corners, (real_header["CRVAL1"] - 1e-6, real_header["CRVAL1"] + 1e-6, real_header["CRVAL2"] - 1e-6,
                  real_header["CRVAL2"] + 1e-6)
    )


def test_find_inside_and_far(data_dir):
    assert fieldindex.find_fields(data_dir, (323.33, 323.345, -0.816, -0.800)) == [SAMPLE]
    assert fieldindex.find_fields(data_dir, (100.0, 101.0, 0.0, 1.0)) == []
    # a region just beyond the frame's Dec edge (-0.62) misses it; one reaching over it finds it
    assert fieldindex.find_fields(data_dir, (323.3, 323.4, -0.60, -0.50)) == []
    assert fieldindex.find_fields(data_dir, (323.3, 323.4, -0.65, -0.50)) == [SAMPLE]
    # a region containing the whole frame
    assert fieldindex.find_fields(data_dir, (320.0, 330.0, -5.0, 5.0)) == [SAMPLE]


def test_wrap_around_ra_zero(data_dir):
    corners = dict(fieldindex.field_index(data_dir))[FAKE]
    ra = corners[:, 0]
    assert ra.max() > 359.9 and ra.min() < 0.2  # the synthetic frame straddles RA = 0
    assert fieldindex.find_fields(data_dir, (359.5, 0.5, 9.0, 11.0)) == [FAKE]
    assert fieldindex.find_fields(data_dir, (359.0, 359.99, 9.0, 11.0)) == [FAKE]
    assert fieldindex.find_fields(data_dir, (0.1, 0.3, 9.0, 11.0)) == [FAKE]
    assert fieldindex.find_fields(data_dir, (350.0, 1.0, -1.0, 1.0)) == []  # wrap region at Dec 0 misses both
    assert fieldindex.find_fields(data_dir, (1.0, 350.0, 9.0, 11.0)) == []  # the complement of RA 350..1
    assert fieldindex.find_fields(data_dir, (0.0, 360.0, -90.0, 90.0)) == [FAKE, SAMPLE]


def test_cache_reused(data_dir, monkeypatch):
    first = fieldindex.find_fields(data_dir, (0.0, 360.0, -90.0, 90.0))
    cache = data_dir / fieldindex.CACHE_NAME
    assert cache.is_file()
    entries = json.loads(cache.read_text())["entries"]
    assert set(entries) == {"2583/2/136/frame-r-002583-2-0136.fits.bz2", "1/4/11/frame-g-000001-4-0011.fits"}

    def no_fits(path):
        raise AssertionError(f"read {path} although the cache is fresh")

    monkeypatch.setattr(fieldindex, "_read_header", no_fits)
    monkeypatch.setattr(sdss, "read_frame", no_fits)
    assert fieldindex.find_fields(data_dir, (0.0, 360.0, -90.0, 90.0)) == first


def test_stale_cache_refreshed(data_dir, monkeypatch):
    fieldindex.find_fields(data_dir, (0.0, 360.0, -90.0, 90.0))
    reads = []
    real = fieldindex._read_header
    monkeypatch.setattr(fieldindex, "_read_header", lambda p: reads.append(p) or real(p))
    frame = data_dir / "2583" / "2" / "136" / os.path.basename(FRAME_R)
    st = os.stat(frame)
    os.utime(frame, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    assert fieldindex.find_fields(data_dir, (323.33, 323.345, -0.816, -0.800)) == [SAMPLE]
    assert reads == [str(frame)]
    entry = json.loads((data_dir / fieldindex.CACHE_NAME).read_text())["entries"][
        "2583/2/136/frame-r-002583-2-0136.fits.bz2"
    ]
    assert entry["mtime_ns"] == os.stat(frame).st_mtime_ns


def test_removed_field_dropped(data_dir):
    fieldindex.find_fields(data_dir, (0.0, 360.0, -90.0, 90.0))
    shutil.rmtree(data_dir / "1")
    assert fieldindex.find_fields(data_dir, (0.0, 360.0, -90.0, 90.0)) == [SAMPLE]
    entries = json.loads((data_dir / fieldindex.CACHE_NAME).read_text())["entries"]
    assert list(entries) == ["2583/2/136/frame-r-002583-2-0136.fits.bz2"]


def test_unwritable_data_dir_uses_home_cache(data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(fieldindex, "_writable", lambda d: False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert fieldindex.find_fields(data_dir, (359.5, 0.5, 9.0, 11.0)) == [FAKE]
    assert not (data_dir / fieldindex.CACHE_NAME).exists()
    files = os.listdir(tmp_path / "xdg" / "celeste")
    assert len(files) == 1 and files[0].startswith("field-index-")
    assert fieldindex.cache_path(data_dir) == str(tmp_path / "xdg" / "celeste" / files[0])


def test_corrupt_cache_rebuilt(data_dir):
    (data_dir / fieldindex.CACHE_NAME).write_text("{not json")
    assert fieldindex.find_fields(data_dir, (359.5, 0.5, 9.0, 11.0)) == [FAKE]
    assert json.loads((data_dir / fieldindex.CACHE_NAME).read_text())["version"] == 1


def test_truncated_frame_header(tmp_path):
    d = tmp_path / "5" / "1" / "2"
    d.mkdir(parents=True)
    (d / "frame-r-000005-1-0002.fits.bz2").write_bytes(open(FRAME_R, "rb").read()[:200])
    with pytest.raises(DataError, match="frame-r-000005-1-0002.fits.bz2"):
        fieldindex.find_fields(tmp_path, (0.0, 360.0, -90.0, 90.0))


@pytest.mark.parametrize(
    "region",
    [(1, 2, 3), (10.0, 10.0, 0.0, 1.0), (10.0, 11.0, 1.0, 0.0), (-1.0, 11.0, 0.0, 1.0), (10, 11, 0, float("nan")),
     "abcd"],
)
def test_bad_region(region, data_dir):
    with pytest.raises(ConfigError, match="region"):
        fieldindex.find_fields(data_dir, region)


def test_missing_data_dir(tmp_path):
    with pytest.raises(ConfigError, match="data_dir"):
        fieldindex.find_fields(tmp_path / "nope", (0.0, 1.0, 0.0, 1.0))


def test_overlap_geometry():
    square = np.array([[10.0, 0.0], [10.1, 0.0], [10.1, 0.1], [10.0, 0.1]])
    assert fieldindex.footprint_overlaps(square, (10.05, 10.06, 0.05, 0.06))  # inside
    assert fieldindex.footprint_overlaps(square, (9.0, 11.0, -1.0, 1.0))  # contains
    assert not fieldindex.footprint_overlaps(square, (10.11, 10.2, 0.0, 0.1))
    # a diamond whose bounding box overlaps the region but whose body does not
    diamond = np.array([[10.0, 0.0], [10.1, 0.1], [10.0, 0.2], [9.9, 0.1]])
    assert not fieldindex.footprint_overlaps(diamond, (10.07, 10.2, 0.0, 0.02))
    assert fieldindex.footprint_overlaps(diamond, (10.04, 10.2, 0.0, 0.1))
