"""Per-box inference: active pixels, conflict graph, thread determinism, recovery on a simulated field."""
import math
import os

import numpy as np
import pytest
from astropy.table import Table

from celeste.infer import InferOptions, active_radius_px, init_params
from celeste.pipeline import JobOptions, run_job
from kernels import params as P

HERE = os.path.dirname(__file__)
SIM_DIR = os.path.join(HERE, "data", "sim")
SIM_TRUTH = os.path.join(SIM_DIR, "9999", "1", "1", "truth.fits")
SIM_REGION = (336.6565, 336.6735, -0.9390, -0.9205)


def test_active_radius_grows_with_flux_and_size_and_is_clipped():
    w, s = [0.9, 0.1], [1.2, 4.0]
    r1 = active_radius_px(1.0, 0.03, w, s, 0.0, 0.1, 4.0, 40.0)
    r2 = active_radius_px(100.0, 0.03, w, s, 0.0, 0.1, 4.0, 40.0)
    r3 = active_radius_px(100.0, 0.03, w, s, 3.0, 0.1, 4.0, 40.0)
    assert 4.0 <= r1 < r2 < r3 <= 40.0
    assert active_radius_px(1e-6, 0.03, w, s, 0.0, 0.1, 4.0, 40.0) == 4.0
    assert active_radius_px(1e14, 0.03, w, s, 0.0, 0.1, 4.0, 30.0) == 30.0
    # the wide component sets the radius of bright stars
    assert active_radius_px(1e4, 0.03, w, s, 0.0, 0.1, 0.0, 1e9) > active_radius_px(1e4, 0.03, [1.0], [1.2], 0.0,
                                                                                    0.1, 0.0, 1e9) + 5


def test_light_outside_the_active_radius_is_below_the_threshold():
    """For a Gaussian star, the light per pixel at the radius equals eps times the sky noise."""
    f, sd, s, eps = 50.0, 0.03, 1.3, 0.1
    r = active_radius_px(f, sd, [1.0], [s], 0.0, eps, 0.0, 1e9)
    light = f / (2 * math.pi * s * s) * math.exp(-r * r / (2 * s * s))
    assert light == pytest.approx(eps * sd, rel=1e-9)


def test_init_params_reads_fluxes_colours_and_shape():
    t = Table(dict(ra=[1.0], dec=[0.0], flux_u=[1.0], flux_g=[2.0], flux_r=[4.0], flux_i=[5.0], flux_z=[6.0],
                   is_star_guess=[0.9], a=[2.0], b=[1.0], theta=[30.0]))
    th = init_params(t[0])
    assert th[P.R_MEAN[0]] == pytest.approx(math.log(4.0))
    assert np.allclose(th[P.C_MEAN[0]:P.C_MEAN[0] + 4], np.log([2.0, 2.0, 5 / 4, 6 / 5]))
    assert 1 / (1 + math.exp(-th[P.A_STAR])) == pytest.approx(0.9)
    assert 1 / (1 + math.exp(-th[P.E_AXIS])) == pytest.approx(0.5)
    assert math.degrees(th[P.E_ANGLE]) == pytest.approx(30.0)


def _sim_job(tmp_path, name, threads, init=None):
    opts = JobOptions(region=SIM_REGION, data_dir=SIM_DIR, infer=InferOptions(threads=threads, batch_size=8),
                      init=init)
    out = str(tmp_path / f"{name}.fits")
    res = run_job(opts, out, str(tmp_path / f"{name}.run"), progress=False)
    assert res.complete
    return Table.read(out)


@pytest.fixture(scope="module")
def sim_catalogs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sim")
    return _sim_job(tmp, "t1", 1), _sim_job(tmp, "t2", 2)


def test_threads_give_identical_catalogs(sim_catalogs):
    a, b = sim_catalogs
    assert a.colnames == b.colnames
    assert "opt_seconds" not in a.colnames
    for c in a.colnames:
        assert np.array_equal(np.asarray(a[c]), np.asarray(b[c]), equal_nan=True), c


def test_simulated_field_recovered(sim_catalogs):
    """Bright simulated sources are found, typed and measured (GalSim truth, Sersic galaxies)."""
    from celeste.score import match

    cat = sim_catalogs[0]
    truth = Table.read(SIM_TRUTH)
    inside = (truth["ra"] > SIM_REGION[0]) & (truth["ra"] < SIM_REGION[1]) & (truth["dec"] > SIM_REGION[2]) & (
        truth["dec"] < SIM_REGION[3]) & (truth["mag_r"] < 23.0)
    truth = truth[inside]
    ic, it = match(cat, truth, radius_arcsec=1.0)
    bright = np.asarray(truth["mag_r"]) < 22.0
    assert np.isin(np.flatnonzero(bright), it).mean() >= 0.85  # 8 of the 9 brighter than r = 22
    dmag = np.abs(np.asarray(cat["mag_r"])[ic] - np.asarray(truth["mag_r"])[it])
    assert np.median(dmag) < 0.1
    typed = (np.asarray(cat["is_star"])[ic] > 0.5) == (np.asarray(truth["is_star"])[it] > 0.5)
    assert typed.mean() >= 0.8
    assert np.all(cat["converged"] | (cat["flags"] > 0))
    assert np.all((cat["gal_angle_deg"] >= 0) & (cat["gal_angle_deg"] < 180))
    assert cat["ra"].unit == "deg" and str(cat["flux_r"].unit) == "nmgy"


def _tiny_box(fluxes, shape=(40, 200)):
    """One synthetic r-band image (Gaussian PSF, TAN WCS at 0.396"/px), sources 100 px apart (no overlap)."""
    from astropy.wcs import WCS

    from celeste.images import Image
    from celeste.priors import load_priors

    H, W = shape
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [10.0, 0.0]
    wcs.wcs.crpix = [W / 2, H / 2]
    wcs.wcs.cdelt = [-0.396 / 3600, 0.396 / 3600]
    rng = np.random.default_rng(0)
    sky = np.full(shape, 0.7)
    im = Image(band=2, counts=rng.poisson(940 * sky).astype(float), sky=sky, calibration=np.full(W, 0.005),
               gain=4.7, mask=np.zeros(shape, bool), wcs=wcs, psf_at=None)
    xs = 50.0 + 100.0 * np.arange(len(fluxes))
    ra, dec = wcs.all_pix2world(xs, np.full(len(xs), H / 2), 0)
    cat = Table(dict(ra=ra, dec=dec, objid=np.arange(len(xs), dtype=np.int64), flux_r=np.asarray(fluxes, float)))
    psf = np.array([[1.0, 0.0, 0.0, 2.0, 0.0, 2.0]])
    return [im], [psf], cat, load_priors()


def test_non_finite_elbo_is_flagged_and_logged(caplog):
    """A source whose ELBO overflows at its start is flagged 32 and logged; its neighbour is fitted."""
    from celeste.catalog import FLAG_NUMERICAL, results_table
    from celeste.infer import BoxModel

    images, psfs, cat, priors = _tiny_box([1e300, 5.0])
    model = BoxModel(images, psfs, cat, priors, InferOptions(max_passes=1, residual_rounds=0))
    with caplog.at_level("WARNING", logger="celeste.infer"):
        model.run()
    res = model.source_results()
    assert list(res["numerical"]) == [True, False]
    assert "source 0" in caplog.text and "starting point" in caplog.text
    assert np.isfinite(res["elbo"][1]) and res["converged"][1]
    flags = np.asarray(results_table(res, cat["objid"], 0, 1)["flags"])
    assert flags[0] & FLAG_NUMERICAL and not flags[1] & FLAG_NUMERICAL
