"""Tests of celeste.partition: exact tiling of a region by box cores."""
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from celeste.errors import ConfigError
from celeste.partition import in_region, make_boxes, owner_box, region_width_deg


def _count_cores(boxes, ra, dec):
    return sum(b.contains(ra, dec).astype(int) for b in boxes)


def _owner_by_loop(boxes, ra, dec):
    out = np.full(np.shape(ra), -1)
    for k, b in enumerate(boxes):
        m = b.contains(ra, dec)
        assert not (m & (out >= 0)).any(), "two cores contain one point"
        out[m] = k
    return out


@st.composite
def regions(draw):
    """A region (possibly crossing RA 0, possibly near the poles) and box sizes
    giving at most a few hundred boxes."""
    ra_min = draw(st.floats(0.0, 360.0))
    width = draw(st.floats(1e-3, 40.0))
    ra_max = (ra_min + width) % 360.0
    if ra_max == ra_min:
        ra_max = (ra_min + 1.0) % 360.0
    dec_min = draw(st.floats(-89.5, 89.0))
    height = draw(st.floats(1e-3, min(10.0, 90.0 - dec_min)))
    dec_max = min(dec_min + height, 90.0)
    region = (ra_min, ra_max, dec_min, dec_max)
    w = region_width_deg(region)
    cos_max = 1.0 if dec_min <= 0 <= dec_max else max(math.cos(math.radians(dec_min)), math.cos(math.radians(dec_max)))
    scale = max(dec_max - dec_min, w * cos_max) * 3600.0
    k = draw(st.integers(1, 12))
    box_arcsec = scale / k
    overlap = draw(st.sampled_from([0.0, box_arcsec * 0.1, 30.0]))
    return region, box_arcsec, overlap


def _probe_points(region, boxes, rng, n=300):
    """Random interior points, every box corner and edge value, region edges and
    points just outside."""
    ra_min, ra_max, dec_min, dec_max = region
    w = region_width_deg(region)
    u = rng.uniform(0, w, n)
    ras = [(ra_min + u) % 360.0]
    decs = [rng.uniform(dec_min, dec_max, n)]
    # exact grid edges: u edges mapped back to RA, dec edges as stored
    for b in boxes:
        for uu in (b.u_min, b.u_max):
            for dd in (b.dec_min, b.dec_max, 0.5 * (b.dec_min + b.dec_max)):
                ras.append(np.array([(ra_min + uu) % 360.0, b.ra_min, b.ra_max]))
                decs.append(np.array([dd, dd, dd]))
    # region corners and just outside
    eps = 1e-9
    for r in (ra_min, ra_max, (ra_min - eps) % 360, (ra_max + eps) % 360):
        for d in (dec_min, dec_max, dec_min - eps, dec_max + eps, 0.5 * (dec_min + dec_max)):
            ras.append(np.array([r]))
            decs.append(np.array([d]))
    return np.concatenate(ras), np.concatenate(decs)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(regions(), st.integers(0, 2**31 - 1))
@example(((350.0, 10.0, 79.0, 81.0), 900.0, 30.0), 1)      # wraps, near dec +80
@example(((359.0, 1.0, -81.0, -79.5), 600.0, 0.0), 2)      # wraps, near dec -80
@example(((0.0, 360.0, 89.0, 90.0), 1800.0, 60.0), 3)     # full circle at the pole
@example(((10.0, 360.0, -2.0, 2.0), 36000.0, 10.0), 4)    # ends exactly at RA 360
def test_every_point_in_region_has_exactly_one_core(case, seed):
    region, box_arcsec, overlap = case
    boxes = make_boxes(region, box_arcsec, overlap)
    rng = np.random.default_rng(seed)
    ra, dec = _probe_points(region, boxes, rng)
    inside = in_region(region, ra, dec)
    counts = _count_cores(boxes, ra, dec)
    assert np.all(counts[inside] == 1)
    assert np.all(counts[~inside] == 0)
    owner = owner_box(boxes, ra, dec)
    assert np.array_equal(owner, _owner_by_loop(boxes, ra, dec))
    assert np.all((owner >= 0) == inside)
    # the generic path (boxes that are not a whole grid) agrees too
    sub = boxes[::2]
    own_sub = owner_box(sub, ra, dec)
    assert np.array_equal(own_sub, _owner_by_loop(sub, ra, dec))


@settings(max_examples=40, deadline=None)
@given(regions(), st.integers(0, 2**31 - 1))
@example(((350.0, 10.0, 79.0, 81.0), 900.0, 30.0), 1)
@example(((0.0, 360.0, 89.0, 90.0), 1800.0, 60.0), 3)
def test_extended_contains_core_and_margin(case, seed):
    region, box_arcsec, overlap = case
    boxes = make_boxes(region, box_arcsec, overlap)
    rng = np.random.default_rng(seed)
    ov = overlap / 3600.0
    for b in boxes[:: max(1, len(boxes) // 10)]:
        u = np.concatenate([[b.u_min, b.u_max], rng.uniform(b.u_min, b.u_max, 20)])
        d = np.concatenate([[b.dec_min, b.dec_max], rng.uniform(b.dec_min, b.dec_max, 20)])
        ra = (b.ra0 + u) % 360.0
        core = b.contains(ra, d)
        assert core[2:].all()  # interior points (the edge ones may round out of the core)
        assert b.in_extended(ra[core], d[core]).all()
        assert b.ext_dec_min <= b.dec_min and b.ext_dec_max >= b.dec_max
        if overlap > 0:
            # a point 0.99 * overlap (on the sky) beyond each core edge is in the extended region
            dm = 0.5 * (b.dec_min + b.dec_max)
            c = math.cos(math.radians(dm))
            if b.dec_max + 0.99 * ov <= 90:
                assert b.in_extended((b.ra0 + b.u_min) % 360, b.dec_max + 0.99 * ov)
            if b.dec_min - 0.99 * ov >= -90:
                assert b.in_extended((b.ra0 + b.u_min) % 360, b.dec_min - 0.99 * ov)
            if c > 1e-3:
                assert b.in_extended((b.ra0 + b.u_max + 0.99 * ov / c) % 360, dm)
                assert b.in_extended((b.ra0 + b.u_min - 0.99 * ov / c) % 360, dm)
            # and a point 3 overlaps beyond the dec edge is not
            if b.dec_max + 3 * ov <= 90:
                assert not b.in_extended((b.ra0 + b.u_min) % 360, b.dec_max + 3 * ov)


@settings(max_examples=30, deadline=None)
@given(regions())
def test_box_ids_stable(case):
    region, box_arcsec, overlap = case
    a = make_boxes(region, box_arcsec, overlap)
    b = make_boxes(tuple(region), box_arcsec, overlap)
    assert a == b
    assert [x.box_id for x in a] == list(range(len(a)))
    # row-major: rows increase in dec, columns in RA within a row
    keys = [(x.row, x.col) for x in a]
    assert keys == sorted(keys)


def test_known_grid_sizes():
    # 1 deg x 1 deg at the equator in 360" boxes: 10 rows x 10 columns
    boxes = make_boxes((0.0, 1.0, 0.0, 1.0), 360.0, 30.0)
    assert len(boxes) == 100
    assert boxes[0].dec_min == 0.0 and boxes[-1].dec_max == 1.0
    assert boxes[-1].ra_max == 1.0 and boxes[-1].closed_ra and boxes[-1].closed_dec
    # at dec 60, cos = 0.5: 1 deg of RA is 1800" of arc, so 5 columns (cos at 60 deg, the row's widest)
    boxes = make_boxes((0.0, 1.0, 60.0, 61.0), 360.0, 30.0)
    assert len(boxes) == 10 * 5
    assert all(b.u_max - b.u_min == pytest.approx(0.2) for b in boxes)
    b = boxes[0]
    # extended margin: 30" in dec; 30"/cos(61.0083 deg) in RA (largest |dec| of the extended region)
    assert b.ext_dec_min == pytest.approx(60.0 - 30 / 3600)
    assert b.ext_dec_max == pytest.approx(60.1 + 30 / 3600)
    assert b.u_min - b.ext_u_min == pytest.approx(30 / 3600 / math.cos(math.radians(60.1 + 30 / 3600)))


def test_wraparound_matches_shifted_region():
    # a region crossing RA 0 has the same grid as the same-size region starting at 0
    a = make_boxes((359.5, 0.5, -0.3, 0.3), 120.0, 10.0)
    b = make_boxes((0.0, 1.0, -0.3, 0.3), 120.0, 10.0)
    assert len(a) == len(b)
    rng = np.random.default_rng(1)
    u = rng.uniform(0, 1, 2000)
    dec = rng.uniform(-0.3, 0.3, 2000)
    oa = owner_box(a, (359.5 + u) % 360, dec)
    ob = owner_box(b, u, dec)
    # away from edges (rounding of the shift) the owners agree
    edges = np.array([x.u_min for x in b] + [1.0])
    far = np.min(np.abs(u[:, None] - edges[None, :]), axis=1) > 1e-9
    assert np.array_equal(oa[far], ob[far])
    assert (oa >= 0).all()
    # RA 0 itself and 359.9 are in the wrapped region; 0.6 and 359.4 are not
    assert (owner_box(a, [0.0, 359.9, 0.6, 359.4], [0, 0, 0, 0]) >= 0).tolist() == [True, True, False, False]
    # the boxes on the two sides of RA 0 share the edge: the one east of RA 0 owns it
    k = owner_box(a, [0.0], [0.1])[0]
    assert a[k].contains(0.0, 0.1) and a[k].ra_min == pytest.approx(0.0, abs=1e-9)


def test_extended_full_circle_near_pole():
    boxes = make_boxes((0.0, 360.0, 89.9, 90.0), 180.0, 60.0)
    top = [b for b in boxes if b.closed_dec]
    assert top and all(b.ext_dec_max == 90.0 for b in top)
    assert all(b.ext_dec_max < 90.0 for b in boxes if not b.closed_dec)
    # at the pole the RA margin covers every RA
    assert all(b.in_extended(np.array([0.0, 90.0, 180.0, 270.0]), 89.999).all() for b in top)
    assert (owner_box(boxes, [0.0, 123.0, 359.999], [90.0, 89.95, 89.9]) >= 0).all()


def test_owner_nan_and_outside():
    boxes = make_boxes((10.0, 11.0, 0.0, 1.0), 600.0, 0.0)
    own = owner_box(boxes, [np.nan, 10.5, 12.0, 10.5], [0.5, np.nan, 0.5, 1.5])
    assert own.tolist() == [-1, -1, -1, -1]


@pytest.mark.parametrize("region,box,ov,word", [
    ((0, 1, 1, 0), 60, 0, "dec_min"),
    ((0, 0, 0, 1), 60, 0, "RA width"),
    ((-1, 1, 0, 1), 60, 0, "RA"),
    ((0, 1, 0, 91), 60, 0, "dec"),
    ((0, 1, 0), 60, 0, "region"),
    ((0, 1, 0, 1), 0, 0, "box_arcsec"),
    ((0, 1, 0, 1), 60, -1, "overlap_arcsec"),
    ((0, 1, 0, float("nan")), 60, 0, "non-finite"),
])
def test_bad_input(region, box, ov, word):
    with pytest.raises(ConfigError, match=word):
        make_boxes(region, box, ov)
