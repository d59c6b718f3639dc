"""Sky region to boxes, and which box owns each source.

A region ``(ra_min, ra_max, dec_min, dec_max)`` in degrees is cut into a grid
of *boxes*.  Each box has a *core* (the boxes' cores tile the region exactly:
every point of the region lies in exactly one core) and an *extended* region,
the core grown by ``overlap_arcsec`` on every side.  A box's inference fits the
sources whose positions fall in its core, using the pixels and the (fixed)
neighbours of its extended region; the merged catalog takes each source from
the box that owns it.

RA wrap-around: ``ra_min > ra_max`` means the region crosses RA = 0 (for
example ``(359.5, 0.5, -1, 1)``).  All geometry is done in a local frame where
``u = (ra - ra_min) mod 360`` runs from 0 to the region's width, so the grid
edges are plain increasing numbers and adjacent boxes share the same float
edge: the tiling is exact in floating point, not just to rounding.

Boxes are laid out in rows of declination; each row is split in RA into as
many boxes as make them at most ``box_arcsec`` wide on the sky at the row's
widest point (the declination closest to the equator), so boxes stay roughly
square away from the equator.  The grid depends only on the region and the
two sizes, never on the number of MPI ranks, so box ids are stable between
runs.  Box ids are row-major: row 0 is the lowest declination, and within a
row ids increase with ``u`` (eastward from ``ra_min``).
"""
from dataclasses import dataclass
import math

import numpy as np

from celeste import ARCSEC_PER_DEG
from celeste.errors import ConfigError

__all__ = ["Box", "make_boxes", "owner_box", "in_region", "region_width_deg"]


@dataclass(frozen=True)
class Box:
    """One box of the grid: a core region and an extended (overlapping) one.

    Attributes
    ----------
    box_id : int
        Stable id, row-major over the grid (see module docstring).
    ra_min, ra_max, dec_min, dec_max : float
        Core region in degrees; RA in [0, 360); ``ra_min > ra_max`` when the
        core crosses RA = 0.
    ext_ra_min, ext_ra_max, ext_dec_min, ext_dec_max : float
        Extended region in degrees (core grown by ``overlap_arcsec``; the RA
        growth is divided by cos(dec) at the extended region's largest
        ``|dec|``).  When the grown RA range would reach all the way round,
        ``ext_ra_min = 0`` and ``ext_ra_max = 360``.
    row, col : int
        Position in the grid (row of declination, column of RA).
    ra0 : float
        RA (deg) where the region starts: origin of the local frame
        ``u = (ra - ra0) mod 360``.
    u_min, u_max : float
        Core RA range in the local frame, degrees.
    ext_u_min, ext_u_max : float
        Extended RA range in the local frame, degrees; ``ext_u_min`` may be
        negative and ``ext_u_max`` may exceed the region's width.
    closed_ra, closed_dec : bool
        Whether the core's upper RA (resp. dec) edge is included: true only
        for the last column (row) of the grid, at the region's edge.
    """

    box_id: int
    ra_min: float
    ra_max: float
    dec_min: float
    dec_max: float
    ext_ra_min: float
    ext_ra_max: float
    ext_dec_min: float
    ext_dec_max: float
    row: int
    col: int
    ra0: float
    u_min: float
    u_max: float
    ext_u_min: float
    ext_u_max: float
    closed_ra: bool
    closed_dec: bool

    def contains(self, ra, dec):
        """Whether each position lies in this box's core.

        Parameters
        ----------
        ra, dec : array_like, float, degrees
            Positions (broadcast together).

        Returns
        -------
        ndarray of bool, broadcast shape of ``ra`` and ``dec``
            The core is half-open, ``[u_min, u_max) x [dec_min, dec_max)``,
            with the upper edge closed only at the region's edge, so the
            cores of a grid tile its region exactly.  NaN gives False.
        """
        u = _local_u(ra, self.ra0)
        dec = np.asarray(dec, dtype=np.float64)
        in_u = (u >= self.u_min) & ((u <= self.u_max) if self.closed_ra else (u < self.u_max))
        in_d = (dec >= self.dec_min) & ((dec <= self.dec_max) if self.closed_dec else (dec < self.dec_max))
        return in_u & in_d

    def in_extended(self, ra, dec):
        """Whether each position lies in this box's extended region (closed).

        Parameters
        ----------
        ra, dec : array_like, float, degrees

        Returns
        -------
        ndarray of bool
            True inside the extended region, edges included.  Every point of
            the core is inside the extended region.
        """
        u = _local_u(ra, self.ra0)
        dec = np.asarray(dec, dtype=np.float64)
        in_d = (dec >= self.ext_dec_min) & (dec <= self.ext_dec_max)
        if self.ext_u_max - self.ext_u_min >= 360.0:
            return in_d & np.isfinite(u)
        # the extended range may stick out below 0 or above 360 in the local
        # frame: test u and its images one turn away
        in_u = np.zeros(np.shape(u), dtype=bool)
        for shift in (-360.0, 0.0, 360.0):
            v = u + shift
            in_u |= (v >= self.ext_u_min) & (v <= self.ext_u_max)
        return in_u & in_d


def _local_u(ra, ra0):
    """RA relative to ``ra0`` in [0, 360) degrees (NaN stays NaN)."""
    return np.mod(np.asarray(ra, dtype=np.float64) - ra0, 360.0)


def region_width_deg(region):
    """Width in RA (degrees of RA, not of arc) of a region, wrap-around aware.

    Parameters
    ----------
    region : sequence of 4 floats
        ``(ra_min, ra_max, dec_min, dec_max)`` in degrees.

    Returns
    -------
    float
        ``(ra_max - ra_min) mod 360`` computed exactly as positions are mapped
        to the local frame (so ``ra_max`` itself maps to the width), or 360
        for a full circle such as ``(0, 360)``; 0 if ``ra_min == ra_max``.
    """
    ra_min, ra_max = float(region[0]), float(region[1])
    width = float(_local_u(ra_max, ra_min))
    if width == 0.0 and ra_min != ra_max:
        width = 360.0
    return width


def in_region(region, ra, dec):
    """Whether each position lies in the (closed) region.

    Parameters
    ----------
    region : sequence of 4 floats
        ``(ra_min, ra_max, dec_min, dec_max)`` in degrees (wrap-around allowed).
    ra, dec : array_like, float, degrees

    Returns
    -------
    ndarray of bool
        True where ``0 <= (ra - ra_min) mod 360 <= width`` and
        ``dec_min <= dec <= dec_max``; exactly the positions that
        :func:`owner_box` assigns to some box of ``make_boxes(region, ...)``.
    """
    u = _local_u(ra, float(region[0]))
    dec = np.asarray(dec, dtype=np.float64)
    return (u <= region_width_deg(region)) & (dec >= float(region[2])) & (dec <= float(region[3]))


def _check_region(region):
    try:
        ra_min, ra_max, dec_min, dec_max = (float(v) for v in region)
    except (TypeError, ValueError):
        raise ConfigError(f"region must be 4 numbers (ra_min, ra_max, dec_min, dec_max) in degrees, got {region!r}")
    if not all(math.isfinite(v) for v in (ra_min, ra_max, dec_min, dec_max)):
        raise ConfigError(f"region has a non-finite value: {region!r}")
    if not (0.0 <= ra_min <= 360.0 and 0.0 <= ra_max <= 360.0):
        raise ConfigError(f"region RA must be in [0, 360] degrees, got ra_min={ra_min}, ra_max={ra_max}")
    if not (-90.0 <= dec_min < dec_max <= 90.0):
        raise ConfigError(f"region needs -90 <= dec_min < dec_max <= 90, got dec_min={dec_min}, dec_max={dec_max}")
    width = region_width_deg((ra_min, ra_max))
    if not 0.0 < width <= 360.0:
        raise ConfigError(f"region has zero RA width (ra_min == ra_max == {ra_min})")
    return ra_min, ra_max, dec_min, dec_max, width


def _count(length, size):
    """Number of equal pieces of at most ``size`` covering ``length`` (>= 1)."""
    # the small tolerance keeps an exact multiple from gaining a sliver box
    return max(1, int(math.ceil(length / size - 1e-9)))


def _edges(start, stop, n):
    """n + 1 increasing edges from ``start`` to ``stop``, the ends exact."""
    e = start + (stop - start) * (np.arange(n + 1, dtype=np.float64) / n)
    e[0], e[-1] = start, stop
    return e


def make_boxes(region, box_arcsec, overlap_arcsec):
    """Cut a sky region into a grid of boxes with overlapping extended regions.

    Parameters
    ----------
    region : sequence of 4 floats
        ``(ra_min, ra_max, dec_min, dec_max)`` in degrees; RA in [0, 360],
        ``ra_min > ra_max`` for a region crossing RA = 0; dec in [-90, 90].
    box_arcsec : float
        Largest side of a box core, arcsec (on the sky: RA extents are
        multiplied by cos(dec)).
    overlap_arcsec : float
        Margin added on every side of the core to make the extended region,
        arcsec (>= 0).

    Returns
    -------
    list of Box
        Row-major; ``boxes[i].box_id == i``.  The cores tile the region
        exactly (half-open intervals, closed at the region's upper edges).

    Raises
    ------
    ConfigError
        If the region or the sizes are invalid (names the argument).

    Notes
    -----
    Row ``i`` spans ``dec_min + i * H / n_rows`` to the next edge, with
    ``n_rows = ceil(H / box)``; in a row, ``n_cols = ceil(W cos(d*) / box)``
    where ``d*`` is the row's declination closest to the equator (so no
    box is wider than ``box_arcsec`` on the sky).  The extended RA margin is
    ``overlap / cos(d_ext)`` with ``d_ext`` the largest ``|dec|`` of the
    extended region (so the margin is at least ``overlap`` on the sky).
    """
    ra_min, ra_max, dec_min, dec_max, width = _check_region(region)
    try:
        box_arcsec = float(box_arcsec)
        overlap_arcsec = float(overlap_arcsec)
    except (TypeError, ValueError):
        raise ConfigError(f"box_arcsec and overlap_arcsec must be numbers, got {box_arcsec!r}, {overlap_arcsec!r}")
    if not (math.isfinite(box_arcsec) and box_arcsec > 0):
        raise ConfigError(f"box_arcsec must be positive, got {box_arcsec}")
    if not (math.isfinite(overlap_arcsec) and overlap_arcsec >= 0):
        raise ConfigError(f"overlap_arcsec must be >= 0, got {overlap_arcsec}")
    box_deg = box_arcsec / ARCSEC_PER_DEG
    ov_deg = overlap_arcsec / ARCSEC_PER_DEG

    n_rows = _count(dec_max - dec_min, box_deg)
    dec_edges = _edges(dec_min, dec_max, n_rows)
    boxes = []
    for i in range(n_rows):
        d_lo, d_hi = float(dec_edges[i]), float(dec_edges[i + 1])
        cos_max = 1.0 if d_lo <= 0.0 <= d_hi else max(math.cos(math.radians(d_lo)), math.cos(math.radians(d_hi)))
        n_cols = _count(width * cos_max, box_deg)
        u_edges = _edges(0.0, width, n_cols)
        e_lo, e_hi = max(d_lo - ov_deg, -90.0), min(d_hi + ov_deg, 90.0)
        cos_ext = min(math.cos(math.radians(e_lo)), math.cos(math.radians(e_hi)))
        for j in range(n_cols):
            u_lo, u_hi = float(u_edges[j]), float(u_edges[j + 1])
            if ov_deg == 0.0:
                grow = 0.0
            elif cos_ext <= 1e-12:
                grow = math.inf
            else:
                grow = ov_deg / cos_ext
            if (u_hi - u_lo) + 2.0 * grow >= 360.0:
                ext_u_lo, ext_u_hi = u_lo - 180.0, u_lo + 180.0
                ext_ra = (0.0, 360.0)
            else:
                ext_u_lo, ext_u_hi = u_lo - grow, u_hi + grow
                ext_ra = ((ra_min + ext_u_lo) % 360.0, (ra_min + ext_u_hi) % 360.0)
            boxes.append(Box(
                box_id=len(boxes),
                ra_min=(ra_min + u_lo) % 360.0,
                ra_max=(ra_min + u_hi) % 360.0 if j < n_cols - 1 or ra_max != 360.0 else 360.0,
                dec_min=d_lo, dec_max=d_hi,
                ext_ra_min=ext_ra[0], ext_ra_max=ext_ra[1],
                ext_dec_min=e_lo, ext_dec_max=e_hi,
                row=i, col=j, ra0=ra_min,
                u_min=u_lo, u_max=u_hi, ext_u_min=ext_u_lo, ext_u_max=ext_u_hi,
                closed_ra=(j == n_cols - 1), closed_dec=(i == n_rows - 1),
            ))
    return boxes


def _grid_of(boxes):
    """Dec edges and per-row RA edges if ``boxes`` is a whole grid, else None."""
    if not boxes or any(b.ra0 != boxes[0].ra0 for b in boxes):
        return None
    rows = {}
    for k, b in enumerate(boxes):
        rows.setdefault(b.row, []).append((b.col, k, b))
    n_rows = len(rows)
    if sorted(rows) != list(range(n_rows)):
        return None
    dec_edges = [rows[0][0][2].dec_min]
    row_info = []
    for i in range(n_rows):
        cols = sorted(rows[i], key=lambda t: t[0])
        if [c for c, _, _ in cols] != list(range(len(cols))):
            return None
        b0 = cols[0][2]
        if b0.dec_min != dec_edges[-1] or b0.u_min != 0.0 or not cols[-1][2].closed_ra:
            return None
        u_edges = [0.0]
        for c, k, b in cols:
            if b.dec_min != b0.dec_min or b.dec_max != b0.dec_max or b.u_min != u_edges[-1]:
                return None
            u_edges.append(b.u_max)
        dec_edges.append(b0.dec_max)
        row_info.append((np.array(u_edges), np.array([k for _, k, _ in cols])))
    if not all(b.closed_dec for _, _, b in rows[n_rows - 1]):
        return None
    return np.array(dec_edges), row_info


def owner_box(boxes, ra, dec):
    """Index (into ``boxes``) of the box whose core contains each position.

    Parameters
    ----------
    boxes : list of Box
        Usually the output of :func:`make_boxes` (then a binary search on the
        grid edges is used); any list of boxes works (then each box is tested).
    ra, dec : array_like, float, degrees
        Source positions (broadcast together).

    Returns
    -------
    ndarray of int64, broadcast shape
        Index of the owning box, or -1 for a position outside every core
        (outside the region, or NaN).  For a grid from :func:`make_boxes`
        every position inside the region has exactly one owner, and
        ``owner_box(...) == i`` iff ``boxes[i].contains(...)``.
    """
    ra, dec = np.broadcast_arrays(np.asarray(ra, dtype=np.float64), np.asarray(dec, dtype=np.float64))
    out = np.full(ra.shape, -1, dtype=np.int64)
    if not boxes:
        return out
    grid = _grid_of(boxes)
    if grid is None:
        for k in range(len(boxes) - 1, -1, -1):
            out[boxes[k].contains(ra, dec)] = k
        return out
    dec_edges, row_info = grid
    u = _local_u(ra, boxes[0].ra0)
    # row: dec_edges[i] <= dec < dec_edges[i + 1], last row closed
    row = np.searchsorted(dec_edges, dec, side="right") - 1
    row[dec == dec_edges[-1]] = len(row_info) - 1
    ok_row = (row >= 0) & (row < len(row_info)) & np.isfinite(dec)
    for i, (u_edges, ids) in enumerate(row_info):
        sel = ok_row & (row == i)
        if not sel.any():
            continue
        uu = u[sel]
        col = np.searchsorted(u_edges, uu, side="right") - 1
        col[uu == u_edges[-1]] = len(ids) - 1
        good = (col >= 0) & (col < len(ids)) & np.isfinite(uu)
        res = np.full(uu.shape, -1, dtype=np.int64)
        res[good] = ids[col[good]]
        out[sel] = res
    return out
