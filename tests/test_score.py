"""Known-answer tests of the accuracy scorer (celeste.score)."""
import json
import os

import numpy as np
import pytest

from celeste import BANDS
from celeste.errors import ConfigError, DataError
from celeste.score import (
    ARCSEC_PER_PX,
    angle_error_deg,
    as_catalog,
    format_table,
    galaxies_near_bright,
    inside_pixel_box,
    main,
    match,
    pixel_box_region,
    score,
    truth_from_hsc_m2,
    truth_from_stripe82,
    write_catalog,
)

DATA = os.path.join(os.path.dirname(__file__), "data")


def make_truth(n=200, seed=0):
    """Random catalog on a 0.1 x 0.1 deg patch near Stripe 82, sources >= 6 arcsec apart."""
    rng = np.random.default_rng(seed)
    # a jittered grid keeps neighbours far apart compared with the match radius
    side = int(np.ceil(np.sqrt(n)))
    gx, gy = np.meshgrid(np.arange(side), np.arange(side))
    step = 0.1 / side
    ra = 336.6 + (gx.ravel()[:n] + 0.5 + rng.uniform(-0.2, 0.2, n)) * step
    dec = -0.9 + (gy.ravel()[:n] + 0.5 + rng.uniform(-0.2, 0.2, n)) * step
    cat = {"objid": np.arange(n), "ra": ra, "dec": dec, "is_star": (rng.uniform(size=n) < 0.5).astype(float)}
    r = 10 ** rng.uniform(0, 2, n)  # mag 17.5 .. 22.5
    for k, b in enumerate(BANDS):
        cat[f"flux_{b}"] = r * np.exp(rng.normal(0, 0.5, n) + 0.3 * (k - 2))
        cat[f"flux_{b}_sd"] = 0.05 * cat[f"flux_{b}"]
    fd = rng.choice([0.0, 0.02, 0.5, 0.97, 1.0], n)
    cat["gal_frac_dev"] = fd
    cat["gal_axis_ratio"] = rng.uniform(0.2, 1.0, n)
    cat["gal_angle_deg"] = rng.uniform(0, 180, n)
    cat["gal_radius_arcsec"] = rng.uniform(0.5, 3.0, n)
    return cat


def copy(cat):
    return {k: np.array(v, copy=True) for k, v in cat.items()}


def test_perfect_catalog_scores_zero():
    t = make_truth()
    s = score(copy(t), t, mag_limit=30)
    assert s["recall"] == 1.0 and s["precision"] == 1.0 and s["f1"] == 1.0
    for key, e in s["errors"].items():
        assert e["n"] > 0, key
        assert e["mean"] == pytest.approx(0.0, abs=1e-9), key
    # exact values sit at 0 sd: everything within 1 sd
    assert s["calibration"]["flux_r"]["within_1sd"] == 1.0


def test_shift_by_fifth_of_a_pixel():
    t = make_truth()
    c = copy(t)
    c["dec"] = c["dec"] + 0.2 * ARCSEC_PER_PX / 3600.0
    s = score(c, t, mag_limit=30)
    assert s["errors"]["position_px"]["mean"] == pytest.approx(0.2, rel=1e-6)
    assert s["errors"]["position_px"]["median"] == pytest.approx(0.2, rel=1e-6)
    assert s["f1"] == 1.0


def test_dropping_ten_percent_gives_recall_point_nine():
    t = make_truth(n=200)
    keep = np.arange(200) % 10 != 3
    c = {k: v[keep] for k, v in t.items()}
    s = score(c, t, mag_limit=30)
    assert s["recall"] == pytest.approx(0.9)
    assert s["precision"] == 1.0
    assert s["f1"] == pytest.approx(2 * 0.9 / 1.9)


def test_mag_limit_uses_truth_for_recall_and_catalog_for_precision():
    t = make_truth(n=100)
    c = copy(t)
    # catalog has every source 1 mag brighter than truth
    for b in BANDS:
        c[f"flux_{b}"] = c[f"flux_{b}"] * 10 ** 0.4
    lim = 20.0
    s = score(c, t, mag_limit=lim)
    mt = 22.5 - 2.5 * np.log10(t["flux_r"])
    assert s["n_truth"] == int((mt <= lim).sum())
    assert s["n_catalog"] == int((mt - 1 <= lim).sum())
    assert s["errors"]["mag_r"]["mean"] == pytest.approx(1.0)
    assert s["errors"]["colour_gr"]["mean"] == pytest.approx(0.0, abs=1e-9)


def test_swapped_types_are_all_misclassified():
    t = make_truth()
    c = copy(t)
    c["is_star"] = 1.0 - t["is_star"]
    s = score(c, t, mag_limit=30)
    assert s["errors"]["missed_stars"]["mean"] == 1.0
    assert s["errors"]["missed_galaxies"]["mean"] == 1.0
    assert s["errors"]["missed_stars"]["n"] == int((t["is_star"] == 1).sum())


def test_angle_error_modulo_180():
    assert angle_error_deg(179.0, 1.0) == pytest.approx(2.0)
    assert angle_error_deg(90.0, 0.0) == pytest.approx(90.0)
    assert angle_error_deg(0.0, 360.0 - 1.0) == pytest.approx(1.0)
    t = make_truth()
    t["gal_frac_dev"][:] = 1.0
    t["gal_axis_ratio"][:] = 0.5
    t["gal_angle_deg"][:] = 1.0
    c = copy(t)
    c["gal_angle_deg"][:] = 179.0
    s = score(c, t, mag_limit=30)
    assert s["errors"]["gal_angle_deg"]["mean"] == pytest.approx(2.0)


def test_shape_errors_only_on_pure_profiles_and_elongated_angles():
    t = make_truth(n=100)
    t["is_star"][:] = 0.0
    t["gal_frac_dev"][:] = 0.5
    t["gal_frac_dev"][:10] = 0.0
    t["gal_axis_ratio"][:] = 0.9
    t["gal_axis_ratio"][:4] = 0.3
    c = copy(t)
    c["gal_radius_arcsec"] = c["gal_radius_arcsec"] + 0.25
    c["gal_angle_deg"] = c["gal_angle_deg"] + 30
    s = score(c, t, mag_limit=30)
    assert s["errors"]["gal_radius_arcsec"]["n"] == 10
    assert s["errors"]["gal_radius_arcsec"]["mean"] == pytest.approx(0.25)
    assert s["errors"]["gal_angle_deg"]["n"] == 4
    assert s["errors"]["gal_frac_dev"]["n"] == 100


def test_calibration_fractions():
    t = make_truth(n=100)
    c = copy(t)
    # first 30 sources off by 0.5 sd, next 40 by 1.5 sd, last 30 by 3 sd
    k = np.concatenate([np.full(30, 0.5), np.full(40, 1.5), np.full(30, 3.0)])
    c["flux_r"] = t["flux_r"] + k * c["flux_r_sd"]
    cal = score(c, t, mag_limit=30)["calibration"]["flux_r"]
    assert cal["within_1sd"] == pytest.approx(0.3)
    assert cal["within_2sd"] == pytest.approx(0.7)
    assert cal["n"] == 100


def test_colour_sd_by_delta_method():
    # one source: g off by x in log flux; colour g-r error = 2.5 x / ln10, sd from the delta method
    t = make_truth(n=1)
    c = copy(t)
    c["flux_g"] = t["flux_g"] * np.exp(0.1)
    c["flux_g_sd"] = 0.06 * c["flux_g"]
    c["flux_r_sd"] = 0.08 * c["flux_r"]
    s = score(c, t, mag_limit=30)
    # |d colour| = 0.1 * 2.5/ln10 = 0.1086; sd = 1.0857 * 0.1 = 0.1086: within 1 sd (z = 1.0 exactly)
    assert s["errors"]["colour_gr"]["mean"] == pytest.approx(0.1 * 2.5 / np.log(10))
    assert s["calibration"]["colour_gr"]["within_1sd"] == 1.0
    c["flux_r_sd"] = 0.07 * c["flux_r"]  # sd shrinks below the error
    s = score(c, t, mag_limit=30)
    assert s["calibration"]["colour_gr"]["within_1sd"] == 0.0
    assert s["calibration"]["colour_gr"]["within_2sd"] == 1.0


def test_match_is_one_to_one_and_greedy_by_distance():
    t = {"ra": np.array([10.0, 10.0 + 1.0 / 3600]), "dec": np.zeros(2), "flux_r": np.ones(2)}
    # catalog source 0 sits between both truths, closer to truth 1; source 1 is near truth 1 too
    c = {"ra": np.array([10.0 + 0.6 / 3600, 10.0 + 0.9 / 3600]), "dec": np.zeros(2), "flux_r": np.ones(2)}
    ic, it = match(c, t, radius_arcsec=1.0)
    # closest pair (c1, t1) at 0.1"; then c0 - t0 at 0.6"
    assert ic.tolist() == [0, 1] and it.tolist() == [0, 1]
    ic, it = match(c, t, radius_arcsec=0.5)
    assert ic.tolist() == [1] and it.tolist() == [1]


def test_mag_window_blocks_matches():
    t = make_truth(n=50)
    c = copy(t)
    c["flux_r"] = t["flux_r"] * 10 ** (0.4 * 2)  # 2 mag brighter
    assert len(match(c, t, 1.0)[0]) == 50
    assert len(match(c, t, 1.0, mag_window=1.0)[0]) == 0
    assert len(match(c, t, 1.0, mag_window=2.5)[0]) == 50


def test_bad_input_raises_package_errors(tmp_path):
    t = make_truth(n=5)
    with pytest.raises(ConfigError, match="radius_arcsec"):
        match(t, t, radius_arcsec=0)
    with pytest.raises(DataError, match="missing column 'dec'"):
        as_catalog({"ra": [1.0], "flux_r": [1.0]})
    with pytest.raises(DataError, match="no such file"):
        as_catalog(str(tmp_path / "nope.fits"))


def test_format_table_side_by_side():
    t = make_truth()
    c = copy(t)
    c["is_star"] = 1 - c["is_star"]
    table = format_table({"perfect": score(copy(t), t), "swapped": score(c, t)})
    lines = table.splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("| tool | F1 |")
    assert lines[2].startswith("| perfect | 1.000 |")
    assert len(lines[2].split("|")) == len(lines[0].split("|"))


def test_stripe82_adapter():
    t = truth_from_stripe82(os.path.join(DATA, "stripe82_coadd_94_1_12.fits"))
    assert len(t["ra"]) == 901
    assert set(np.unique(t["is_star"])) == {0.0, 1.0}
    assert np.nanmin(t["gal_angle_deg"]) >= 0 and np.nanmax(t["gal_angle_deg"]) < 180
    assert np.nanmax(t["gal_axis_ratio"]) <= 1.0
    star = t["is_star"] == 1
    # stars keep their PSF magnitudes exactly
    import fitsio

    raw = fitsio.read(os.path.join(DATA, "stripe82_coadd_94_1_12.fits"))
    np.testing.assert_allclose(t["mag_r"][star], raw["psfmag_r"][star], atol=1e-4)
    # a pure-dev galaxy has its dev magnitude
    pure = (~star) & (raw["fracdev_r"] == 1.0)
    np.testing.assert_allclose(t["mag_g"][pure], raw["devmag_g"][pure], atol=1e-4)


def test_hsc_adapter():
    t = truth_from_hsc_m2(os.path.join(DATA, "hsc_m2_ngc7089.csv"))
    n = len(t["ra"])
    assert 1000 < n <= 4651
    assert np.all(t["is_star"] == 1)
    assert np.all((t["ra"] > 323.32) & (t["ra"] < 323.35))
    assert np.all(np.isfinite(t["mag_r"]))
    assert np.all(np.isnan(t["flux_g"]))


def test_cli_writes_json(tmp_path, capsys):
    t = make_truth(n=60)
    write_catalog(str(tmp_path / "truth.fits"), t)
    c = copy(t)
    c["ra"] = c["ra"] + 0.1 / 3600
    write_catalog(str(tmp_path / "cat.fits"), c)
    out = tmp_path / "s.json"
    rc = main([str(tmp_path / "cat.fits"), str(tmp_path / "truth.fits"), "--json", str(out), "--mag-limit", "30"])
    assert rc == 0
    s = json.loads(out.read_text())
    assert s["f1"] == 1.0
    assert s["n_matched"] == 60
    assert "recall" in capsys.readouterr().out
    rc = main([str(tmp_path / "cat.fits"), str(tmp_path / "missing.fits")])
    assert rc == 2
    assert "missing.fits" in capsys.readouterr().err


def test_position_coverage_per_coordinate_and_by_2d_chi2():
    t = make_truth(n=100)
    c = copy(t)
    c["ra_sd"] = np.full(100, 0.1)
    c["dec_sd"] = np.full(100, 0.1)
    # east offsets of 0.5, 1.5 and 3 sd for 30, 40, 30 sources; north exact
    k = np.concatenate([np.full(30, 0.5), np.full(40, 1.5), np.full(30, 3.0)])
    c["ra"] = t["ra"] + k * 0.1 / 3600.0 / np.cos(np.radians(t["dec"]))
    cal = score(c, t, mag_limit=30)["calibration"]
    # per coordinate: all 100 north z-scores are 0, east as above
    assert cal["position"]["within_1sd"] == pytest.approx(130 / 200)
    assert cal["position"]["within_2sd"] == pytest.approx(170 / 200)
    assert cal["position"]["n"] == 200
    # 2-D: chi^2 = z_east^2 = 0.25, 2.25, 9 against 2.2958 and 6.1801
    assert cal["position_2d"]["within_1sd"] == pytest.approx(0.7)
    assert cal["position_2d"]["within_2sd"] == pytest.approx(0.7)
    # a catalog without sds has no position coverage
    assert score(copy(t), t, mag_limit=30)["calibration"]["position"]["n"] == 0


def test_chi2_quantiles_match_one_and_two_sigma():
    from scipy.stats import chi2, norm

    from celeste.score import CHI2_2DOF_1SD, CHI2_2DOF_2SD

    assert chi2.cdf(CHI2_2DOF_1SD, 2) == pytest.approx(norm.cdf(1) - norm.cdf(-1), rel=1e-12)
    assert chi2.cdf(CHI2_2DOF_2SD, 2) == pytest.approx(norm.cdf(2) - norm.cdf(-2), rel=1e-12)


def test_galaxies_near_bright_counts_against_the_density():
    """A 10" grid of galaxies, 4 bright stars at cell centres, each with 3 extra galaxies within 15"."""
    region = (10.0, 10.1, 0.0, 0.1)
    step = 10.0 / 3600.0
    g = np.arange(step / 2, 0.1, step)
    gx, gy = np.meshgrid(g, g)
    ra, dec = list(10.0 + gx.ravel()), list(gy.ravel())
    star = []
    for cx, cy in ((12, 12), (12, 22), (22, 12), (22, 22)):
        sr, sd = 10.0 + (cx + 1) * step, (cy + 1) * step  # cell corners: 7.07" from the nearest grid galaxies
        star.append((sr, sd))
        for ang in (0.0, 2.0, 4.0):
            ra.append(sr + 3.0 / 3600 * np.cos(ang))
            dec.append(sd + 3.0 / 3600 * np.sin(ang))
    n_gal = len(ra)
    ra += [s[0] for s in star]
    dec += [s[1] for s in star]
    cat = {"ra": np.array(ra), "dec": np.array(dec), "is_star": np.r_[np.zeros(n_gal), np.ones(4)],
           "flux_r": np.r_[np.ones(n_gal), np.full(4, 10 ** ((22.5 - 14.0) / 2.5))]}
    out = galaxies_near_bright(cat, region, bright_mag=16.5, radius_arcsec=15.0)
    cosd = np.cos(np.radians(0.05))
    area = (0.1 * 3600) ** 2 * cosd
    d = np.hypot((gx.ravel() - (12 + 1) * step) * cosd, gy.ravel() - (12 + 1) * step) * 3600
    on_grid = int(np.sum(d <= 15.0))
    assert out["n_bright"] == 4 and out["counts"] == [on_grid + 3] * 4
    assert out["expected"] == pytest.approx(n_gal / area * np.pi * 225, rel=1e-6)
    assert out["ratio"] == pytest.approx((on_grid + 3) / out["expected"], rel=1e-9)
    # away from the bright stars the density is the grid's, one galaxy per 100 arcsec^2
    assert out["expected_background"] == pytest.approx(np.pi * 225 / 100 / cosd, rel=0.03)
    # a bright source whose 15" disc leaves the region is not counted
    cat2 = {k: np.r_[v, v[-1:]] for k, v in cat.items()}
    cat2["ra"][-1], cat2["dec"][-1] = 10.001, 0.05
    assert galaxies_near_bright(cat2, region)["n_bright"] == 4


def test_pixel_box_region_round_trips_the_box():
    from astropy.wcs import WCS

    from celeste.sdss import read_frame_header

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    hdr = read_frame_header(os.path.join(root, "data", "sdss", "2583", "2", "136", "frame-r-002583-2-0136.fits.bz2"))
    wcs = WCS(hdr)
    box = (310, 409, 630, 729)
    region = pixel_box_region(wcs, box)
    x, y = wcs.all_world2pix([region[0], region[1]], [region[2], region[3]], 0)
    assert sorted(x) == pytest.approx([309.5, 409.5], abs=0.6)
    assert sorted(y) == pytest.approx([629.5, 729.5], abs=0.6)
    ra, dec = wcs.all_pix2world([360.0, 312.0, 360.0], [680.0, 680.0, 726.0], 0)
    assert inside_pixel_box({"ra": ra, "dec": dec}, wcs, box, 5.0).tolist() == [True, False, False]
