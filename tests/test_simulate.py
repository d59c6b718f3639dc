"""Tests of the simulated SDSS fields (celeste.simulate) and of the shipped one in tests/data/sim.

What the renderer promises and these tests check: every source's truth flux is in the noise-free
model (stars, galaxies, the PSF wing); saturated pixels are clipped, bled along columns and flagged
in the fpM SATUR plane; a bright Sersic galaxy's rendered half-light radius is its truth; the
psField's variation is scaled as asked; the sources have the advertised populations.
"""
import math
import os

import fitsio
import numpy as np
import pytest

from celeste import BANDS
from celeste import simulate as S
from celeste.errors import ConfigError
from celeste.score import ARCSEC_PER_PX
from celeste.sdss import load_field, read_fpm, read_psfield
from celeste.tangent import pixel_to_sky_jacobian

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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


# ------------------------------------------------------------ one-source renders
def _one_source_task(**kw):
    tpl = S.read_template()
    wcs = S.band_wcs(tpl["header"]["r"], "r", (121, 121), (336.6, -0.9))
    x, y = 60.3, 59.7
    nan = np.array([np.nan])
    task = dict(band=2, shape=(121, 121), x=np.array([x]), y=np.array([y]), flux=np.array([500.0]),
                is_star=np.array([1.0]), bulge_frac=nan, n_bulge=nan, n_disk=nan, r_bulge=nan, r_disk=nan, q=nan,
                angle=nan, jac=pixel_to_sky_jacobian(wcs, [x], [y]), psfield=S.DEFAULT_PSFIELD,
                calibration=np.full(121, 0.0054), sky_dn=np.full((121, 121), 150.0), gain=4.6, dark_variance=1.0,
                wing=None, sky_sd=0.03, saturation_level=None, seed=3)
    task.update(kw)
    return task


def test_star_model_conserves_flux_and_noise_matches_gain():
    model, frame, sat = S.render_band(_one_source_task())
    assert model.sum() == pytest.approx(500.0, rel=2e-3)
    assert not sat.any()
    # noise far from the star: variance of (Poisson electrons + read noise) mapped to nmgy
    corner = frame[:30, :30].astype(np.float64)
    expect = (150.0 * 4.6 + 1.0 * 4.6**2) / 4.6**2 * 0.0054**2
    assert corner.var() == pytest.approx(expect, rel=0.1)
    assert abs(corner.mean()) < 4 * math.sqrt(expect / corner.size)


def _galaxy(angle=30.0, q=0.3, n_bulge=4.0, n_disk=1.0, r_bulge=2.0, r_disk=2.0, bulge_frac=0.0, flux=800.0):
    return dict(is_star=np.array([0.0]), bulge_frac=np.array([bulge_frac]), n_bulge=np.array([n_bulge]),
                n_disk=np.array([n_disk]), r_bulge=np.array([r_bulge]), r_disk=np.array([r_disk]), q=np.array([q]),
                angle=np.array([angle]), flux=np.array([flux]))


@pytest.mark.parametrize("angle", [20.0, 75.0, 140.0])
def test_galaxy_angle_is_east_of_north(angle):
    task = _one_source_task(**_galaxy(angle=angle))
    model, _, _ = S.render_band(task)
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


def test_saturate_clips_conserves_charge_and_bleeds_along_columns():
    rng = np.random.default_rng(0)
    dn = rng.uniform(100, 200, (60, 9))
    dn[28:32, 3:6] = 4000.0  # a saturated core far from the edges
    out, sat = S.saturate(dn, 1000.0)
    assert out.max() <= 1000.0
    assert np.array_equal(sat, out == 1000.0)
    assert out.sum() == pytest.approx(dn.sum(), rel=1e-12)  # no charge reached the edge
    cols = np.flatnonzero(sat.any(axis=0))
    assert cols.tolist() == [3, 4, 5]  # charge moves along columns only
    rows = np.flatnonzero(sat[:, 4])
    assert rows.min() < 28 and rows.max() > 31 and np.all(np.diff(rows) == 1)  # one trail through the core
    assert np.array_equal(out[:, [0, 1, 2, 6, 7, 8]], dn[:, [0, 1, 2, 6, 7, 8]])


def test_mask_objects_round_trip_through_the_fpm_reader(tmp_path):
    rng = np.random.default_rng(1)
    mask = np.zeros((50, 70), bool)
    for _ in range(12):
        y, x = rng.integers(0, 50), rng.integers(0, 70)
        mask[y:y + rng.integers(1, 9), x:x + rng.integers(1, 4)] = True
    tpl = S.read_template()
    path = str(tmp_path / "fpM-000001-r1-0001.fits")
    S._write_fpm(path, tpl["fpm_header"], tpl["fpm_types"], 1, 1, 1, mask.shape, mask)
    assert np.array_equal(read_fpm(path, mask.shape, planes=("SATUR",)), mask)
    assert not read_fpm(path, mask.shape, planes=("INTERP", "CR", "GHOST")).any()
    S._write_fpm(path, tpl["fpm_header"], tpl["fpm_types"], 1, 1, 1, mask.shape, None)
    assert not read_fpm(path, mask.shape, planes=("SATUR",)).any()


def test_psf_variation_is_scaled_around_the_centre(tmp_path):
    dst = str(tmp_path / "psField.fits")
    S.scale_psfield_variation(S.DEFAULT_PSFIELD, dst, 3.0, (500.0, 400.0))
    for b in range(len(BANDS)):
        a = read_psfield(S.DEFAULT_PSFIELD, b, size=51)
        c = read_psfield(dst, b, size=51)
        wc = a.weights(500.0, 400.0)
        tol = 1e-5 * np.abs(wc).max()  # the file stores the coefficients in float32
        np.testing.assert_allclose(c.weights(500.0, 400.0), wc, rtol=0, atol=tol)
        for x, y in ((0.0, 0.0), (2047.0, 1488.0), (1200.0, 100.0)):
            np.testing.assert_allclose(c.weights(x, y) - wc, 3.0 * (a.weights(x, y) - wc), rtol=0, atol=tol)
    widths = S.psf_width_range(dst, (1489, 2048))["r"]
    base = S.psf_width_range(S.DEFAULT_PSFIELD, (1489, 2048))["r"]
    assert widths["max"] - widths["min"] > 2 * (base["max"] - base["min"])


def test_wing_parameters_follow_the_photofield_fit():
    row = S.read_template()["photofield_row"][0]
    wings = S.wing_parameters(row, S.DEFAULT_PSFIELD)
    for b, w in enumerate(wings):
        if w["fitted"]:  # Moffat index beta/2 and scale sP sqrt(beta) of photo's power law
            assert w["beta"] == pytest.approx(row["PSF_BETA"][b] / 2)
            assert w["rd"] == pytest.approx(row["PSF_SIGMAP"][b] * math.sqrt(row["PSF_BETA"][b]))
        assert 5 <= w["r_in"] <= 25
        # the power law integrates to its share: A I(inf) / (1 + A I(inf)) = p0 I / (core + p0 I)
        assert 0.003 < S.wing_fraction(w, S.WING_MAX_PX) < 0.1
    assert not wings[2]["fitted"]  # the template's r fit is degenerate (PSF_P0 = 1e-7): median of the others


# ------------------------------------------------------------ whole fields
@pytest.fixture(scope="module")
def small_field(tmp_path_factory):
    """A 500 x 500 field of 10 sources r 16.5-21 (the brightest with short wings) and a blended pair."""
    out = str(tmp_path_factory.mktemp("simfield"))
    spec = S.FieldSpec(run=77, camcol=2, field=5, seed=10, shape=(500, 500), n_sources=10, r_mag_range=(16.5, 21.0),
                       n_blends=1)
    return spec, S.simulate_field(out, spec, compress=False)


def _stamp_half_px(truth, k, wings, sky_sd):
    """Half-size of a box holding all of source k's rendered light in r pixels (core, galaxy, wing)."""
    half = S.PSF_SIZE // 2 + 3
    if truth["is_star"][k] == 0:
        half += math.ceil(S.SERSIC_TRUNC * truth["gal_radius_arcsec"][k] / ARCSEC_PER_PX
                          / math.sqrt(truth["gal_axis_ratio"][k]))
    rw = max(S.wing_radius(truth[f"flux_{b}"][k], wings[bi], sky_sd[bi]) for bi, b in enumerate(BANDS))
    return half + int(math.ceil(rw))


def test_noise_free_model_holds_every_truth_flux(small_field):
    """Around each isolated source the noise-free model sums to its truth flux in every band."""
    spec, res = small_field
    t, model = res["truth"], res["model"]
    tpl = S.read_template()
    sky_sd = [S.sky_sd_nmgy(tpl, b, tpl["calibration"][b][:spec.shape[1]]) for b in BANDS]
    halves = [_stamp_half_px(t, k, res["info"]["wing"], sky_sd) for k in range(len(t["ra"]))]
    h, w = spec.shape
    checked = {"star": 0, "galaxy": 0}
    for k in range(len(t["ra"])):
        half = halves[k]
        x, y = t["x"][k], t["y"][k]
        if not (half < x < w - 1 - half and half < y < h - 1 - half):
            continue
        if any(abs(t["x"][j] - x) < half + halves[j] and abs(t["y"][j] - y) < half + halves[j]
               for j in range(len(t["ra"])) if j != k):
            continue
        for bi, b in enumerate(BANDS):  # a band's own pixels are within 0.5 px of r's over this small field
            xa, ya = int(round(x)), int(round(y))
            box = model[bi, ya - half:ya + half + 1, xa - half:xa + half + 1]
            assert box.sum() == pytest.approx(t[f"flux_{b}"][k], rel=3e-3, abs=0.01), (k, b)
        checked["star" if t["is_star"][k] else "galaxy"] += 1
    assert checked["star"] >= 1 and checked["galaxy"] >= 1, checked


def test_bright_star_wing_keeps_the_flux():
    """A bright star with its wing: the model holds its flux, and the light beyond r_in + 3 px is the wing's."""
    tpl = S.read_template()
    wings = S.wing_parameters(tpl["photofield_row"][0], S.DEFAULT_PSFIELD, (320.0, 320.0))
    flux = 10 ** ((22.5 - 12.5) / 2.5)
    for bi, wing in enumerate(wings):
        task = _one_source_task(band=bi, shape=(641, 641), x=np.array([320.3]), y=np.array([319.8]),
                                flux=np.array([flux]), calibration=np.full(641, 0.0054),
                                sky_dn=np.full((641, 641), 150.0), wing=wing, sky_sd=0.03)
        model, _, _ = S.render_band(task)
        assert model.sum() == pytest.approx(flux, rel=3e-3), bi
        rw = S.wing_radius(flux, wing, 0.03)
        assert wing["r_in"] + 20 < rw <= S.WING_MAX_PX
        yy, xx = np.mgrid[:641, :641]
        beyond = model[np.hypot(xx - 320.3, yy - 319.8) > wing["r_in"] + 3].sum() / flux
        inner = dict(wing, r_in=wing["r_in"] + 3)  # the wing between r_in + 3 and R_w
        assert beyond == pytest.approx(S.wing_fraction(inner, rw), rel=0.05), bi


def test_saturation_flags_match_clipped_pixels(tmp_path):
    from scipy import ndimage

    spec = S.FieldSpec(run=79, seed=6, shape=(201, 201), n_sources=0, n_bright_stars=1, bright_star_r=(11.0, 11.0),
                       psf_wings=False)
    res = S.simulate_field(str(tmp_path), spec, compress=False)
    images = load_field(str(tmp_path), 79, 1, 1)
    row = S.read_template()["photofield_row"][0]
    bled = 0
    for im in images:
        b = BANDS[im.band]
        level = float(row["SATURATION_LEVEL"][im.band])
        dn = im.counts / im.gain  # DN with the sky, as the frame encodes them
        clipped = dn >= level - 0.05
        satur = read_fpm(os.path.join(res["dir"], f"fpM-000079-{b}1-0001.fits"), im.shape, planes=("SATUR",))
        assert dn.max() <= level + 0.05, b
        assert np.array_equal(clipped, res["saturated"][im.band]), b
        grown = ndimage.binary_dilation(clipped, iterations=S.SATUR_GROW_PX)
        assert np.array_equal(satur, grown), b  # every clipped pixel flagged, grown by one pixel, nothing else
        assert np.array_equal(im.mask, satur), b  # and the reader masks them
        if clipped.sum() >= 10:
            ys, xs = np.nonzero(clipped)
            assert np.ptp(ys) > np.ptp(xs), b  # the bleed trail runs along the columns
            bled += 1
    assert bled >= 3  # r = 11 saturates g, r and i at least


def test_bright_galaxy_half_light_radius_matches_truth():
    """Measured in elliptical apertures of the truth shape on the noise-free model (PSF in quadrature)."""
    src = S.bright_galaxies(np.random.default_rng(7), 1, S.DEFAULT_CATALOG, (13.0, 13.0), (4.0, 4.5))
    assert abs(src["n_bulge"][0] - 4.0) >= 0.5 and abs(src["n_disk"][0] - 1.0) >= 0.15
    assert 0.1 <= src["bulge_frac"][0, 2] <= 0.7
    task = _one_source_task(shape=(601, 601), x=np.array([300.2]), y=np.array([299.6]),
                            calibration=np.full(601, 0.0054), sky_dn=np.full((601, 601), 150.0),
                            **{k: src[k] for k in ("is_star", "n_bulge", "n_disk", "r_bulge", "r_disk", "q", "angle")},
                            bulge_frac=src["bulge_frac"][:, 2], flux=src["flux"][:, 2])
    tpl = S.read_template()
    wcs = S.band_wcs(tpl["header"]["r"], "r", (601, 601), (336.6, -0.9))
    J = pixel_to_sky_jacobian(wcs, [300.2], [299.6])[0]
    task["jac"] = J[None]
    model, _, _ = S.render_band(task)
    yy, xx = np.mgrid[:601, :601]
    e = J[0, 0] * (xx - 300.2) + J[0, 1] * (yy - 299.6)
    n = J[1, 0] * (xx - 300.2) + J[1, 1] * (yy - 299.6)
    pa = math.radians(src["angle"][0])
    u = e * math.sin(pa) + n * math.cos(pa)  # along the major axis
    v = e * math.cos(pa) - n * math.sin(pa)
    q = src["q"][0]
    rho = np.sqrt(u * u * q + v * v / q).ravel()  # circularized radius (arcsec)
    order = np.argsort(rho)
    cum = np.cumsum(model.ravel()[order])
    measured = rho[order][np.searchsorted(cum, 0.5 * cum[-1])]
    psf_hlr = 0.5 * S.psf_fwhm_arcsec(read_psfield(S.DEFAULT_PSFIELD, 2, size=51).psf_at(300.2, 299.6))
    assert measured == pytest.approx(math.hypot(src["radius"][0], psf_hlr), rel=0.03)
    # not the major-axis radius
    assert abs(measured - src["radius"][0] / math.sqrt(q)) > 0.05 * measured or q > 0.9


def test_sources_have_the_advertised_populations():
    spec = S.FieldSpec(shape=(1489, 2048), n_blends=40, n_bright_galaxies=12, n_bright_stars=10, cluster_stars=3000,
                       cluster_radius_arcsec=20.0, cluster_center_px=(1000.0, 700.0))
    src = S.make_sources(spec, np.random.default_rng(3))
    kind = src["kind"]
    r_mag = 22.5 - 2.5 * np.log10(src["flux"][:, 2])
    # the sky's own population at the coadd's density
    area = 1489 * 2048 * (ARCSEC_PER_PX / 3600) ** 2
    assert np.sum(kind == S.KIND_FIELD) == round(S.catalog_density(S.DEFAULT_CATALOG, (14.0, 23.5)) * area)
    # blends: pairs 1-3 arcsec apart
    bl = np.flatnonzero(kind == S.KIND_BLEND)
    sep = np.hypot(src["x"][bl[:40]] - src["x"][bl[40:]], src["y"][bl[:40]] - src["y"][bl[40:]]) * ARCSEC_PER_PX
    assert np.all((sep >= 1.0 - 1e-9) & (sep <= 3.0 + 1e-9))
    # bright galaxies: r 12.5-14, half-light radius 4-10", Sersic indices away from 4 and 1
    g = kind == S.KIND_BRIGHT_GALAXY
    assert g.sum() == 12 and np.all((r_mag[g] >= 12.5 - 1e-9) & (r_mag[g] <= 14.0 + 1e-9))
    assert np.all((src["radius"][g] >= 4.0 - 1e-6) & (src["radius"][g] <= 10.0 + 1e-6))
    assert np.all(np.abs(src["n_bulge"][g] - 4.0) >= 0.5) and np.all(np.abs(src["n_disk"][g] - 1.0) >= 0.15)
    assert np.all(src["bulge_frac"][g][:, 0] > src["bulge_frac"][g][:, 4] - 1.0)  # defined in every band
    for k in np.flatnonzero(g):  # the truth radius is the composite's half-light radius
        hlr = S.composite_hlr(src["bulge_frac"][k, 2], src["n_bulge"][k], src["r_bulge"][k], src["n_disk"][k],
                              src["r_disk"][k])
        assert hlr == pytest.approx(src["radius"][k], rel=1e-8)
    # bright stars r 12-15
    s = kind == S.KIND_BRIGHT_STAR
    assert s.sum() == 10 and np.all(src["is_star"][s] == 1) and np.all((r_mag[s] >= 12 - 1e-9) & (r_mag[s] <= 15 + 1e-9))
    # Plummer cluster: M(<R)/M(<4a) = (R^2/(R^2 + a^2)) / (16/17); half the light radius at R = a sqrt(17/15)...
    c = kind == S.KIND_CLUSTER
    a = 20.0 / ARCSEC_PER_PX
    rr = np.hypot(src["x"][c] - 1000.0, src["y"][c] - 700.0)
    n = len(rr)
    assert n > 2900 and np.all(rr <= 4 * a + 1e-6)
    frac = np.mean(rr <= a)
    expect = 0.5 / (16 / 17)
    assert abs(frac - expect) < 4 * math.sqrt(expect * (1 - expect) / n)


def test_composite_hlr_of_pure_profiles():
    assert S.composite_hlr(0.0, 2.5, 1.0, 1.0, 3.0) == pytest.approx(3.0, rel=1e-8)
    assert S.composite_hlr(1.0, 2.5, 1.7, 1.0, 3.0) == pytest.approx(1.7, rel=1e-8)
    # equal radii: any mixture has that radius
    assert S.composite_hlr(0.4, 5.2, 2.0, 0.7, 2.0) == pytest.approx(2.0, rel=1e-8)


def test_simulate_field_writes_layout_and_crowding(tmp_path):
    spec = S.FieldSpec(run=42, camcol=3, field=7, n_sources=3, seed=5, crowding=2.0, shape=(48, 64))
    res = S.simulate_field(str(tmp_path), spec, compress=False)
    assert len(res["truth"]["ra"]) == 6
    images = load_field(str(tmp_path), 42, 3, 7)
    assert images[0].shape == (48, 64)
    t = fitsio.read(os.path.join(res["dir"], "truth.fits"))
    assert len(t) == 6
    gal = t["is_star"] == 0
    assert np.all((t["gal_angle_deg"][gal] >= 0) & (t["gal_angle_deg"][gal] < 180))
    assert S.field_is_current(res["dir"], spec)
    assert not S.field_is_current(res["dir"], S.FieldSpec(run=42, camcol=3, field=7, n_sources=3, seed=6,
                                                          crowding=2.0, shape=(48, 64)))
    # second field of the same camcol adds a photoField row
    S.simulate_field(str(tmp_path), S.FieldSpec(run=42, camcol=3, field=8, n_sources=1, seed=6, shape=(32, 32)),
                     compress=False)
    rows = fitsio.read(os.path.join(tmp_path, "42", "3", "photoField-000042-3.fits"), ext=1)
    assert rows["FIELD"].tolist() == [7, 8]
    assert res["model"].shape == (5, 48, 64)


def test_bad_arguments():
    with pytest.raises(ConfigError, match="crowding"):
        S.simulate_field("/tmp/unused", S.FieldSpec(n_sources=1, crowding=0, shape=(32, 32)))
    with pytest.raises(ConfigError, match="shape"):
        S.simulate_field("/tmp/unused", S.FieldSpec(n_sources=1, shape=(4, 4)))
    with pytest.raises(ConfigError, match="bright_star_r"):
        S.simulate_field("/tmp/unused", S.FieldSpec(n_sources=1, bright_star_r=(15.0, 12.0)))
    assert S.main(["--size", "32", "32"]) == 2  # no --out
