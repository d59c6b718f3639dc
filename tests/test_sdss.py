"""Tests of the SDSS reader against known values of the real field 2583-2-136."""
import logging
import os
import warnings

import fitsio
import numpy as np
import pytest

from celeste import sdss
from celeste.errors import ConfigError, DataError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "data", "sdss")
RUN, CAMCOL, FIELD = 2583, 2, 136
FIELD_DIR = os.path.join(DATA, str(RUN), str(CAMCOL), str(FIELD))
PSFIELD = os.path.join(FIELD_DIR, "psField-002583-2-0136.fits")
PHOTOFIELD = os.path.join(DATA, str(RUN), str(CAMCOL), "photoField-002583-2.fits")
FRAME_R = os.path.join(FIELD_DIR, "frame-r-002583-2-0136.fits.bz2")
FPM_R = os.path.join(FIELD_DIR, "fpM-002583-r2-0136.fits")
PSFIELD_94 = os.path.join(ROOT, "tests", "data", "psField-000094-1-0012.fits")
ARCSEC_PER_PX = 0.396


def _psfield_table(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fitsio.read(path, ext=6)


@pytest.fixture(scope="module")
def frame_r():
    return sdss.read_frame(FRAME_R)


@pytest.fixture(scope="module")
def field_r():
    (im,) = sdss.load_field(DATA, RUN, CAMCOL, FIELD, bands=("r",))
    return im


# ------------------------------------------------------------------ paths


def test_field_paths_layout():
    p = sdss.field_paths(DATA, RUN, CAMCOL, FIELD)
    assert p["frame"][2] == FRAME_R
    assert p["fpm"][2] == FPM_R
    assert p["psfield"] == PSFIELD
    assert p["photofield"] == PHOTOFIELD
    assert sorted(p["frame"]) == [0, 1, 2, 3, 4]
    for b in range(5):
        assert os.path.isfile(p["frame"][b]) and os.path.isfile(p["fpm"][b])


def test_field_paths_prefers_plain_fits(tmp_path):
    d = tmp_path / "1" / "3" / "7"
    d.mkdir(parents=True)
    (d / "frame-g-000001-3-0007.fits").write_bytes(b"")
    p = sdss.field_paths(tmp_path, 1, 3, 7)
    assert p["frame"][1].endswith("frame-g-000001-3-0007.fits")
    assert p["frame"][0].endswith("frame-u-000001-3-0007.fits.bz2")


def test_band_index():
    assert sdss.band_index("z") == 4 and sdss.band_index(1) == 1
    with pytest.raises(ConfigError, match="band"):
        sdss.band_index("y")
    with pytest.raises(ConfigError, match="band"):
        sdss.band_index(5)


# ------------------------------------------------------------------ frames


def test_frame_shape_calibration_sky(frame_r):
    assert frame_r.image.shape == (1489, 2048) and frame_r.image.dtype == np.float64
    assert frame_r.calibration.shape == (2048,)
    # r-band nmgy per DN: header NMGY = 0.00546689 is the field factor, HDU1 adds the flat field
    assert 0.0053 < frame_r.calibration.min() <= frame_r.calibration.max() < 0.0055
    assert abs(np.median(frame_r.calibration) / frame_r.header["NMGY"] - 1) < 0.03  # flat field varies
    assert frame_r.sky.shape == (1489, 2048)
    assert np.all(frame_r.sky > 0)
    # psField (PSP) sky estimate of this field in r: 150.75 DN
    sky_psp = _psfield_table(PSFIELD)["sky"][0][2]
    assert abs(np.median(frame_r.sky) / sky_psp - 1) < 0.02


def test_frame_wcs_reference_pixel(frame_r):
    h = frame_r.header
    # FITS CRPIX is 1-based; the reader's pixels are 0-based
    ra, dec = frame_r.wcs.pixel_to_world_values(h["CRPIX1"] - 1, h["CRPIX2"] - 1)
    assert ra == pytest.approx(h["CRVAL1"], abs=1e-9)
    assert dec == pytest.approx(h["CRVAL2"], abs=1e-9)
    # one pixel along a row (x + 1) moves Dec by CD2_1 (SDSS frames are rotated 90 deg)
    ra1, dec1 = frame_r.wcs.pixel_to_world_values(h["CRPIX1"], h["CRPIX2"] - 1)
    assert dec1 - dec == pytest.approx(h["CD2_1"], rel=1e-3)
    assert abs(ra1 - ra) < 1e-7


def test_frame_header_only_matches(frame_r):
    h = sdss.read_frame_header(FRAME_R)
    for key in ("CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2", "CD1_2", "CD2_1", "NAXIS1", "NAXIS2"):
        assert h[key] == frame_r.header[key]


def test_frame_cutout_matches_full(frame_r):
    box = (1000, 1100, 700, 760)
    cut = sdss.read_frame(FRAME_R, box=box)
    assert cut.image.shape == (60, 100) and (cut.x0, cut.y0) == (1000, 700)
    np.testing.assert_array_equal(cut.image, frame_r.image[700:760, 1000:1100])
    np.testing.assert_allclose(cut.sky, frame_r.sky[700:760, 1000:1100], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(cut.calibration, frame_r.calibration[1000:1100])
    a = cut.wcs.pixel_to_world_values(3.0, 5.0)
    b = frame_r.wcs.pixel_to_world_values(1003.0, 705.0)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-10)


def test_bad_box():
    with pytest.raises(ConfigError, match="box"):
        sdss.read_frame(FRAME_R, box=(10, 5, 0, 10))
    with pytest.raises(ConfigError, match="box"):
        sdss.read_frame(FRAME_R, box=(0, 3000, 0, 10))


def test_interpolate_sky_known_values():
    rng = np.random.default_rng(1)
    grid = rng.uniform(100, 200, size=(4, 5))
    # grid points are reproduced exactly
    out = sdss.interpolate_sky(grid, np.arange(5.0), np.arange(4.0))
    np.testing.assert_allclose(out, grid)
    # a bilinear function a + b x + c y + d x y is reproduced exactly between grid points
    yy, xx = np.mgrid[:4, :5].astype(float)
    f = lambda x, y: 3 + 2 * x - y + 0.5 * x * y  # noqa: E731
    xs, ys = np.array([0.25, 1.5, 3.75]), np.array([0.1, 2.6])
    np.testing.assert_allclose(sdss.interpolate_sky(f(xx, yy), xs, ys), f(xs[None, :], ys[:, None]))
    # outside the grid the edge value is held (as SDSS x/yinterp start at -0.44)
    edge = sdss.interpolate_sky(grid, np.array([-0.4, 4.6]), np.array([-0.3, 3.2]))
    np.testing.assert_allclose(edge, grid[[0, 3]][:, [0, 4]])


def test_truncated_bz2_frame(tmp_path):
    data = open(FRAME_R, "rb").read()
    bad = tmp_path / "frame-r-002583-2-0136.fits.bz2"
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(DataError, match="frame-r-002583-2-0136.fits.bz2"):
        sdss.read_frame(str(bad))


def test_corrupt_frame(tmp_path):
    bad = tmp_path / "frame-r-000001-1-0001.fits.bz2"
    bad.write_bytes(b"this is not bzip2" * 100)
    with pytest.raises(DataError, match="frame-r-000001-1-0001"):
        sdss.read_frame(str(bad))
    with pytest.raises(DataError, match="frame-r-000001-1-0001"):
        sdss.read_frame_header(str(bad))


# ------------------------------------------------------------------ photoField


def test_photofield_gain_dark_variance():
    meta = sdss.read_photofield(PHOTOFIELD, FIELD)
    # values in the file for 2583-2-136 (camcol 2 gains; r gain is 4.6)
    np.testing.assert_allclose(meta["gain"], [1.825, 3.855, 4.6, 5.195, 5.155], rtol=1e-6)
    np.testing.assert_allclose(meta["dark_variance"], [12.6025, 1.44, 1.0, 6.25, 1.0], rtol=1e-6)
    # the psField of the same field carries the same numbers
    ps = _psfield_table(PSFIELD)
    np.testing.assert_allclose(meta["gain"], ps["gain"][0], rtol=1e-6)


def test_photofield_missing_field():
    with pytest.raises(DataError, match="photoField-002583-2.fits"):
        sdss.read_photofield(PHOTOFIELD, 9999)


# ------------------------------------------------------------------ psField


@pytest.mark.parametrize("path", [PSFIELD, PSFIELD_94])
def test_psf_normalized_centred_width(path):
    width = _psfield_table(path)["psf_width"][0]  # photo's effective width, arcsec
    for b in range(5):
        model = sdss.read_psfield(path, b)
        for x, y in [(0.0, 0.0), (1024.0, 744.0), (2047.0, 1488.0)]:
            p = model.psf_at(x, y)
            assert p.shape == (25, 25)
            assert p.sum() == pytest.approx(1.0, abs=1e-12)
            assert np.unravel_index(np.argmax(p), p.shape) == (12, 12)
            yy, xx = np.mgrid[:25, :25] - 12.0
            # centroid with a Gaussian weight (sigma 2 px) is at the centre pixel;
            # plain first moments wander more because real PSF wings are asymmetric
            g = p * np.exp(-(xx**2 + yy**2) / 8.0)
            assert abs((g * xx).sum() / g.sum()) < 0.1 and abs((g * yy).sum() / g.sum()) < 0.1
            assert abs((p * xx).sum()) < 0.25 and abs((p * yy).sum()) < 0.25
        # effective width from the effective area neff = 1 / sum p^2 (a Gaussian has
        # neff = 4 pi sigma^2): must match photo's PSF_WIDTH for this field and band
        p = sdss.read_psfield(path, b, size=51).psf_at(1024.0, 744.0)
        fwhm = 2.3548 * np.sqrt(1.0 / (p**2).sum() / (4 * np.pi)) * ARCSEC_PER_PX
        assert fwhm == pytest.approx(width[b], rel=0.08), (b, fwhm, width[b])


def test_psf_r_band_known_width():
    p = sdss.read_psfield(PSFIELD, "r", size=51).psf_at(1024.0, 744.0)
    fwhm = 2.3548 * np.sqrt(1.0 / (p**2).sum() / (4 * np.pi)) * ARCSEC_PER_PX
    assert 0.95 < fwhm < 1.2  # this field had ~1.05 arcsec seeing in r (photoField PSF_WIDTH)


def test_psf_varies_with_position_as_polynomial():
    model = sdss.read_psfield(PSFIELD_94, "r")  # nrow_b = ncol_b = 3 in this file
    assert model.coeffs.shape[1:] == (3, 3)
    # weights are quadratic in each of row and column: third differences vanish
    w = np.array([model.weights(100.0, y) for y in (0.0, 500.0, 1000.0, 1500.0)])
    np.testing.assert_allclose(np.diff(w, n=3, axis=0), 0, atol=1e-12 * np.abs(w).max())
    assert not np.allclose(model.psf_at(0, 0), model.psf_at(2047, 1488), atol=1e-4)


def test_psf_bad_size():
    with pytest.raises(ConfigError, match="size"):
        sdss.read_psfield(PSFIELD, "r", size=24)


# ------------------------------------------------------------------ fpM


def test_fpm_planes():
    mask = sdss.read_fpm(FPM_R, (1489, 2048))
    assert mask.shape == (1489, 2048) and mask.dtype == bool
    assert 0.001 < mask.mean() < 0.05
    # bad columns interpolated over the whole frame in this camcol's r chip
    assert mask[:, 66].all() and mask[:, 217].all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        npix = {h: fitsio.read(FPM_R, ext=h, columns=["npix"])["npix"].sum() for h in (1, 2, 10)}
    # INTERP is HDU 1, SATUR HDU 2, CR HDU 10 (plane numbers from the file's last HDU);
    # objects may overlap, so painted pixels <= sum of the objects' npix
    for plane, h in (("INTERP", 1), ("SATUR", 2), ("CR", 10)):
        n = sdss.read_fpm(FPM_R, (1489, 2048), planes=(plane,)).sum()
        assert 0.85 * npix[h] <= n <= npix[h], plane
    assert sdss.read_fpm(FPM_R, (1489, 2048), planes=("GHOST",)).sum() == 0  # empty in this file
    with pytest.raises(DataError, match="no mask plane"):
        sdss.read_fpm(FPM_R, (1489, 2048), planes=("NOSUCH",))


def test_fpm_clips_to_shape():
    small = sdss.read_fpm(FPM_R, (100, 300))
    full = sdss.read_fpm(FPM_R, (1489, 2048))
    np.testing.assert_array_equal(small, full[:100, :300])


# ------------------------------------------------------------------ load_field


def test_load_field_counts(field_r, frame_r):
    im = field_r
    assert im.shape == (1489, 2048) and im.band == 2
    assert im.gain == pytest.approx(4.6) and im.dark_variance == pytest.approx(1.0)
    # round trip back to the file's nanomaggies
    back = (im.counts / im.gain) * im.calibration - im.sky
    np.testing.assert_allclose(back, frame_r.image, rtol=0, atol=1e-9)
    # counts are mostly sky: the median is close to sky * iota, electrons
    sky_e = im.sky * im.iota[None, :]
    assert abs(np.median(im.counts) / np.median(sky_e) - 1) < 0.1
    assert 600 < np.median(sky_e) < 800  # 150 DN * gain 4.6
    # Poisson plausibility on the quiet east part: robust variance ~ sky counts + read noise
    sl = np.s_[200:1300, 1200:2000]
    r = (im.counts - sky_e)[sl][~im.mask[sl]]
    var = (1.4826 * np.median(np.abs(r - np.median(r)))) ** 2
    expected = np.median(sky_e[sl]) + im.dark_variance * im.gain**2
    assert 0.8 < var / expected < 1.25
    assert 0.001 < im.mask.mean() < 0.05
    ra, dec = im.wcs.pixel_to_world_values(1024, 744)
    assert ra == pytest.approx(323.342792226, abs=1e-8) and dec == pytest.approx(-0.733974791856, abs=1e-8)
    assert (im.run, im.camcol, im.field, im.x0, im.y0) == (RUN, CAMCOL, FIELD, 0, 0)


def test_load_field_cutout(field_r):
    box = (300, 420, 630, 760)
    (cut,) = sdss.load_field(DATA, RUN, CAMCOL, FIELD, bands=[2], box=box)
    assert cut.shape == (130, 120) and (cut.x0, cut.y0) == (300, 630)
    np.testing.assert_allclose(cut.counts, field_r.counts[630:760, 300:420], rtol=0, atol=1e-9)
    np.testing.assert_array_equal(cut.mask, field_r.mask[630:760, 300:420])
    np.testing.assert_allclose(cut.sky, field_r.sky[630:760, 300:420], rtol=0, atol=1e-12)
    np.testing.assert_allclose(
        cut.wcs.pixel_to_world_values(0.0, 0.0), field_r.wcs.pixel_to_world_values(300.0, 630.0), atol=1e-10
    )
    np.testing.assert_array_equal(cut.psf_at(10.0, 20.0), field_r.psf_at(310.0, 650.0))
    import pickle

    assert np.array_equal(pickle.loads(pickle.dumps(cut.psf_at))(1.0, 2.0), cut.psf_at(1.0, 2.0))


def _partial_copy(tmp_path, skip=()):
    """Data dir in tmp_path with symlinks to the real field files, minus ``skip``."""
    src_field = FIELD_DIR
    dst_field = tmp_path / str(RUN) / str(CAMCOL) / str(FIELD)
    dst_field.mkdir(parents=True)
    os.symlink(PHOTOFIELD, dst_field.parent / os.path.basename(PHOTOFIELD))
    for name in os.listdir(src_field):
        if name not in skip:
            os.symlink(os.path.join(src_field, name), dst_field / name)
    return tmp_path


def test_missing_band(tmp_path):
    d = _partial_copy(tmp_path, skip=("frame-g-002583-2-0136.fits.bz2",))
    with pytest.raises(DataError, match="frame-g-002583-2-0136.fits"):
        sdss.load_field(d, RUN, CAMCOL, FIELD, bands=("g",))


def test_missing_psfield(tmp_path):
    d = _partial_copy(tmp_path, skip=("psField-002583-2-0136.fits",))
    with pytest.raises(DataError, match="psField-002583-2-0136.fits"):
        sdss.load_field(d, RUN, CAMCOL, FIELD, bands=("r",))


def test_missing_photofield(tmp_path):
    d = _partial_copy(tmp_path)
    os.remove(d / str(RUN) / str(CAMCOL) / os.path.basename(PHOTOFIELD))
    with pytest.raises(DataError, match="photoField-002583-2.fits"):
        sdss.load_field(d, RUN, CAMCOL, FIELD, bands=("r",))


def test_missing_fpm_warns_and_masks_nothing(tmp_path, caplog):
    d = _partial_copy(tmp_path, skip=("fpM-002583-r2-0136.fits",))
    with caplog.at_level(logging.WARNING, logger="celeste.sdss"):
        (im,) = sdss.load_field(d, RUN, CAMCOL, FIELD, bands=("r",), box=(0, 300, 0, 200))
    assert "fpM-002583-r2-0136.fits" in caplog.text
    assert not im.mask.any()


def test_truncated_frame_in_field(tmp_path):
    d = _partial_copy(tmp_path, skip=("frame-r-002583-2-0136.fits.bz2",))
    data = open(FRAME_R, "rb").read()
    (d / str(RUN) / str(CAMCOL) / str(FIELD) / "frame-r-002583-2-0136.fits.bz2").write_bytes(data[:-1000])
    with pytest.raises(DataError, match="frame-r-002583-2-0136.fits.bz2"):
        sdss.load_field(d, RUN, CAMCOL, FIELD, bands=("r",))


def test_nonfinite_pixels_masked(tmp_path):
    """A plain (uncompressed) frame with NaNs: those pixels are masked, counts stay finite."""
    from astropy.io import fits

    d = _partial_copy(tmp_path, skip=("frame-i-002583-2-0136.fits.bz2",))
    hdul = sdss._open_fits(os.path.join(FIELD_DIR, "frame-i-002583-2-0136.fits.bz2"))
    hdul[0].data[10:12, 20:25] = np.nan
    hdul.writeto(d / str(RUN) / str(CAMCOL) / str(FIELD) / "frame-i-002583-2-0136.fits")
    (im,) = sdss.load_field(d, RUN, CAMCOL, FIELD, bands=("i",), box=(0, 100, 0, 50))
    assert im.mask[10:12, 20:25].all()
    assert np.all(np.isfinite(im.counts))
    assert isinstance(fits.getheader(im.path), fits.Header) and im.path.endswith(".fits")
