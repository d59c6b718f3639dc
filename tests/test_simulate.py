"""Tests of the simulated SDSS fields (bench/simulate.py) and the shipped one in tests/data/sim."""
import math
import os
import sys

import fitsio
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import simulate as S  # noqa: E402

from celeste import BANDS  # noqa: E402
from celeste.sdss import load_field, read_fpm  # noqa: E402

SIM = os.path.join(ROOT, "tests", "data", "sim")
REAL = os.path.join(ROOT, "data", "sdss", "2583", "2", "136")


@pytest.fixture(scope="module")
def shipped():
    return load_field(SIM, 9999, 1, 1), fitsio.read(os.path.join(SIM, "9999", "1", "1", "truth.fits"))


def test_shipped_field_reads_back(shipped):
    images, truth = shipped
    assert [im.band for im in images] == [0, 1, 2, 3, 4]
    for im in images:
        assert im.shape == (200, 200)
        assert not im.mask.any()
        assert np.all(np.isfinite(im.counts))
        # realistic SDSS numbers: r calibration ~0.005 nmgy/DN, sky in nmgy ~ 0.8 for r
        assert 0.003 < im.calibration.mean() < 0.05
    assert images[2].calibration.mean() == pytest.approx(0.0054, rel=0.05)
    assert images[2].sky.mean() == pytest.approx(0.80, rel=0.1)
    assert 15 <= len(truth) <= 30
    assert set(np.unique(truth["is_star"])) <= {0.0, 1.0}


def test_truth_positions_map_into_image(shipped):
    images, truth = shipped
    x, y = images[2].wcs.all_world2pix(truth["ra"], truth["dec"], 0)
    np.testing.assert_allclose(x, truth["x"], atol=1e-6)  # truth x, y are r-band pixels
    np.testing.assert_allclose(y, truth["y"], atol=1e-6)
    assert np.all((x > -0.5) & (x < 199.5) & (y > -0.5) & (y < 199.5))
    for im in images:  # each band has its own (real) CD matrix: close to, not equal to, r
        xb, yb = im.wcs.all_world2pix(truth["ra"], truth["dec"], 0)
        assert np.max(np.hypot(xb - x, yb - y)) < 0.5
    # pixel scale and orientation copied from the real frame: 0.396 arcsec per pixel
    cd = images[2].wcs.wcs.cd
    assert math.hypot(cd[0, 1], cd[1, 1]) * 3600 == pytest.approx(0.396, rel=0.01)


def _isolated_bright_star(truth, shape, far=15.0, edge=22):
    best = None
    for k in np.argsort(truth["mag_r"]):
        if truth["is_star"][k] != 1:
            continue
        d = np.hypot(truth["x"] - truth["x"][k], truth["y"] - truth["y"][k])
        d[k] = np.inf
        x, y = truth["x"][k], truth["y"][k]
        if d.min() > far and edge < x < shape[1] - edge and edge < y < shape[0] - edge:
            best = k
            break
    return best


def test_isolated_bright_star_flux(shipped):
    images, truth = shipped
    k = _isolated_bright_star(truth, (200, 200))
    assert k is not None and truth["mag_r"][k] < 19.5
    ix, iy = int(round(truth["x"][k])), int(round(truth["y"][k]))
    for im in images[1:4]:  # g r i: the star is bright there
        b = BANDS[im.band]
        nmgy = im.counts / im.iota[None, :] - im.sky
        ap = nmgy[iy - 20:iy + 21, ix - 20:ix + 21].sum()
        assert ap == pytest.approx(truth[f"flux_{b}"][k], rel=0.05), b


def test_hdu2_mimics_real_frame():
    with fitsio.FITS(os.path.join(REAL, "frame-r-002583-2-0136.fits.bz2")) as f:
        real = f[2].read()
    allsky, xi, yi = S.sky_grid((1489, 2048), 150.0)
    assert allsky.shape == real["ALLSKY"][0].shape
    np.testing.assert_array_equal(xi, real["XINTERP"][0])
    np.testing.assert_array_equal(yi, real["YINTERP"][0])
    with fitsio.FITS(os.path.join(SIM, "9999", "1", "1", "frame-r-009999-1-0001.fits.bz2")) as f:
        sim = f[2].read()
        hdr = f[0].read_header()
        assert len(f[1].read()) == 200
    assert sim.dtype.names == real.dtype.names
    assert sim["ALLSKY"][0].ndim == 2 and sim["XINTERP"][0].shape == (200,) and sim["YINTERP"][0].shape == (200,)
    assert hdr["FILTER"].strip() == "r" and hdr["RUN"] == 9999 and hdr["CTYPE1"].strip() == "RA---TAN"


def test_fpm_empty_and_readable():
    path = os.path.join(SIM, "9999", "1", "1", "fpM-009999-r1-0001.fits")
    mask = read_fpm(path, (200, 200), planes=("INTERP", "SATUR", "CR", "GHOST", "OBJECT"))
    assert mask.shape == (200, 200) and not mask.any()


def _one_source_task(**kw):
    from astropy.wcs import WCS

    tpl = S.read_template()
    hdr = S._frame_header(tpl["header"]["r"], "r", 1, 1, 1, (61, 61), (336.6, -0.9), 0.005, 0)
    wcs = WCS({k: hdr[k] for k in ("CTYPE1", "CTYPE2", "CRPIX1", "CRPIX2", "CRVAL1", "CRVAL2",
                                   "CD1_1", "CD1_2", "CD2_1", "CD2_2")})
    x, y = 60.3, 59.7
    task = dict(band=2, shape=(121, 121), x=np.array([x]), y=np.array([y]), flux=np.array([500.0]),
                is_star=np.array([1.0]), frac_dev=np.array([np.nan]), axis_ratio=np.array([np.nan]),
                angle_deg=np.array([np.nan]), radius_arcsec=np.array([np.nan]),
                jac=np.array([S.local_jacobian_arcsec(wcs, x, y)]), psfield=S.DEFAULT_PSFIELD,
                calibration=np.full(121, 0.0054), sky_dn=np.full((121, 121), 150.0), gain=4.6,
                dark_variance=1.0, seed=3)
    task.update(kw)
    return task


def test_star_model_conserves_flux_and_noise_matches_gain():
    model, frame = S.render_band(_one_source_task())
    assert model.sum() == pytest.approx(500.0, rel=2e-3)
    # noise far from the star: variance of (Poisson electrons + read noise) mapped to nmgy
    corner = frame[:30, :30].astype(np.float64)
    expect = (150.0 * 4.6 + 1.0 * 4.6**2) / 4.6**2 * 0.0054**2
    assert corner.var() == pytest.approx(expect, rel=0.1)
    assert abs(corner.mean()) < 4 * math.sqrt(expect / corner.size)


@pytest.mark.parametrize("angle", [20.0, 75.0, 140.0])
def test_galaxy_angle_is_east_of_north(angle):
    task = _one_source_task(is_star=np.array([0.0]), frac_dev=np.array([0.0]), axis_ratio=np.array([0.3]),
                            angle_deg=np.array([angle]), radius_arcsec=np.array([2.0]), flux=np.array([800.0]))
    model, _ = S.render_band(task)
    yy, xx = np.mgrid[:121, :121]
    f = model.sum()
    assert f == pytest.approx(800.0, rel=0.01)
    mx, my = (model * xx).sum() / f, (model * yy).sum() / f
    cov = np.array([[(model * (xx - mx) ** 2).sum(), (model * (xx - mx) * (yy - my)).sum()],
                    [(model * (xx - mx) * (yy - my)).sum(), (model * (yy - my) ** 2).sum()]]) / f
    d = np.linalg.eigh(cov)[1][:, 1]  # major axis in pixels
    east, north = task["jac"][0] @ d
    measured = math.degrees(math.atan2(east, north)) % 180.0
    diff = abs(measured - angle) % 180.0
    assert min(diff, 180 - diff) < 2.0


def test_simulate_field_writes_layout_and_crowding(tmp_path):
    res = S.simulate_field(str(tmp_path), run=42, camcol=3, field=7, n_sources=3, seed=5, crowding=2.0,
                           shape=(48, 64), compress=False)
    assert len(res["truth"]["ra"]) == 6
    images = load_field(str(tmp_path), 42, 3, 7)
    assert images[0].shape == (48, 64)
    t = fitsio.read(os.path.join(res["dir"], "truth.fits"))
    assert len(t) == 6
    gal = t["is_star"] == 0
    assert np.all((t["gal_angle_deg"][gal] >= 0) & (t["gal_angle_deg"][gal] < 180))
    # second field of the same camcol adds a photoField row
    S.simulate_field(str(tmp_path), run=42, camcol=3, field=8, n_sources=1, seed=6, shape=(32, 32), compress=False)
    rows = fitsio.read(os.path.join(tmp_path, "42", "3", "photoField-000042-3.fits"), ext=1)
    assert rows["FIELD"].tolist() == [7, 8]
    # the noise-free model holds the truth fluxes of sources well inside the image
    assert res["model"].shape == (5, 48, 64)


def test_bad_arguments():
    from celeste.errors import ConfigError

    with pytest.raises(ConfigError, match="crowding"):
        S.simulate_field("/tmp/unused", n_sources=1, crowding=0, shape=(32, 32))
    with pytest.raises(ConfigError, match="shape"):
        S.simulate_field("/tmp/unused", n_sources=1, shape=(4, 4))
