"""Which SDSS fields of a data directory overlap a region of the sky.

The footprint of a field is the quadrilateral of the four outer corners of its
frame (the r frame when present, else another band), computed with the frame's
WCS from its header alone.  Footprints are cached in a JSON file,
``<data-dir>/.celeste-field-index.json`` (or, if the data directory is not
writable, ``~/.cache/celeste/field-index-<hash>.json``), keyed by the frame's
path relative to the data directory and checked against its size and
modification time, so a changed file is read again.
"""
import hashlib
import json
import logging
import math
import os
import re
import tempfile
import warnings

import numpy as np

from celeste import sdss
from celeste.errors import ConfigError, DataError

log = logging.getLogger(__name__)

CACHE_NAME = ".celeste-field-index.json"
_CACHE_VERSION = 1
_FRAME_RE = re.compile(r"^frame-([ugriz])-(\d{6})-(\d)-(\d{4})\.fits(\.bz2)?$")
#: band preference when choosing the frame that defines a field's footprint
_BAND_ORDER = ("r", "g", "i", "z", "u")


# --------------------------------------------------------------------------- regions


def check_region(region):
    """Validate ``region = (ra_min, ra_max, dec_min, dec_max)`` in degrees.

    ``ra_min > ra_max`` means the region crosses RA = 0 (it runs from ra_min up
    to 360 and on from 0 to ra_max).

    Returns
    -------
    tuple of 4 float

    Raises
    ------
    ConfigError
        If the values are not 4 finite numbers with 0 <= ra <= 360,
        -90 <= dec_min < dec_max <= 90 and ra_min != ra_max.
    """
    try:
        ra_min, ra_max, dec_min, dec_max = (float(v) for v in region)
    except (TypeError, ValueError):
        raise ConfigError(f"region: expected (ra_min, ra_max, dec_min, dec_max) in degrees, got {region!r}") from None
    vals = (ra_min, ra_max, dec_min, dec_max)
    if not all(math.isfinite(v) for v in vals):
        raise ConfigError(f"region: non-finite value in {region!r}")
    if not (0.0 <= ra_min <= 360.0 and 0.0 <= ra_max <= 360.0) or ra_min == ra_max:
        raise ConfigError(f"region: RA limits must lie in [0, 360] and differ, got {ra_min}, {ra_max}")
    if not (-90.0 <= dec_min < dec_max <= 90.0):
        raise ConfigError(f"region: need -90 <= dec_min < dec_max <= 90, got {dec_min}, {dec_max}")
    return vals


def _wrap180(d):
    return (np.asarray(d, dtype=np.float64) + 180.0) % 360.0 - 180.0


def footprint_overlaps(corners, region):
    """Whether a field footprint overlaps a region.

    Both are mapped to a plane around the region's centre (x = RA offset times
    cos of the region's central Dec, y = Dec, degrees) and tested with the
    separating-axis theorem for convex polygons.  Exact for the small regions
    and frames of SDSS away from the poles; the cos(Dec) of the region centre
    is used for the whole region, so very tall regions at high |Dec| are
    approximated.

    Parameters
    ----------
    corners : array (4, 2) float
        (ra, dec) in degrees of the footprint corners, in order around it.
    region : (ra_min, ra_max, dec_min, dec_max)
        Degrees; ``ra_min > ra_max`` crosses RA = 0.

    Returns
    -------
    bool
        True if they overlap (touching counts).
    """
    ra_min, ra_max, dec_min, dec_max = check_region(region)
    width = (ra_max - ra_min) % 360.0 or 360.0  # (0, 360) is the full circle
    ra_c = ra_min + width / 2.0
    cosd = math.cos(math.radians(0.5 * (dec_min + dec_max)))
    corners = np.asarray(corners, dtype=np.float64)
    # unwrap the footprint around its own first corner, then bring its centre near ra_c
    dra = _wrap180(corners[:, 0] - corners[0, 0])
    centre = corners[0, 0] + dra.mean()
    offset = _wrap180(centre - ra_c)
    fx = (offset + dra - dra.mean()) * cosd
    foot = np.column_stack([fx, corners[:, 1]])
    half = 0.5 * width * cosd
    rect = np.array([[-half, dec_min], [half, dec_min], [half, dec_max], [-half, dec_max]])
    return _convex_overlap(rect, foot)


def _convex_overlap(a, b):
    for poly in (a, b):
        edges = np.roll(poly, -1, axis=0) - poly
        for ex, ey in edges:
            axis = np.array([-ey, ex])
            if not axis.any():
                continue
            pa, pb = a @ axis, b @ axis
            if pa.max() < pb.min() or pb.max() < pa.min():
                return False
    return True


# --------------------------------------------------------------------------- footprints


def _read_header(path):
    """Primary header of a frame (the one place this module reads FITS)."""
    return sdss.read_frame_header(path)


def footprint_from_header(header, path=""):
    """Corners (ra, dec) of a frame from its primary header.

    Parameters
    ----------
    header : astropy.io.fits.Header
        HDU0 header of an SDSS frame (NAXIS1, NAXIS2 and the WCS keywords).
    path : str
        File name for error messages.

    Returns
    -------
    ndarray (4, 2) float64
        (ra, dec) degrees of the outer pixel corners (-0.5, -0.5),
        (W - 0.5, -0.5), (W - 0.5, H - 0.5), (-0.5, H - 0.5) (0-based x, y).

    Raises
    ------
    DataError
        If the header has no image size or no usable celestial WCS.
    """
    from astropy.io.fits.verify import VerifyError

    try:
        w, h = int(header["NAXIS1"]), int(header["NAXIS2"])
    except (KeyError, ValueError, TypeError, OverflowError, VerifyError):
        raise DataError(f"{path}: header has no NAXIS1/NAXIS2") from None
    wcs = sdss._make_wcs(header, path)
    x = np.array([-0.5, w - 0.5, w - 0.5, -0.5])
    y = np.array([-0.5, -0.5, h - 0.5, h - 0.5])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ra, dec = wcs.pixel_to_world_values(x, y)
    corners = np.column_stack([np.asarray(ra) % 360.0, dec])
    if not np.all(np.isfinite(corners)):
        raise DataError(f"{path}: WCS gives non-finite corners")
    return corners


def _choose_frame(names):
    """Name of the frame defining a field's footprint from a list of frame names."""
    by_band = {}
    for n in sorted(names):  # ".fits" sorts before ".fits.bz2": plain files win
        m = _FRAME_RE.match(n)
        if m and m.group(1) not in by_band:
            by_band[m.group(1)] = n
    for b in _BAND_ORDER:
        if b in by_band:
            return by_band[b]
    return None


def field_footprint(data_dir, run, camcol, field, band=None):
    """Footprint of one field: the sky corners of its frame.

    Parameters
    ----------
    data_dir, run, camcol, field
        As :func:`celeste.sdss.field_paths`.
    band : int or str, optional
        Frame to use; by default r, else the first present of g i z u.

    Returns
    -------
    ndarray (4, 2) float64
        (ra, dec) degrees of the frame corners (see :func:`footprint_from_header`).

    Raises
    ------
    DataError
        If no frame of the field (or of ``band``) exists, or its header is unusable.
    """
    paths = sdss.field_paths(data_dir, run, camcol, field)
    if band is not None:
        path = paths["frame"][sdss.band_index(band)]
    else:
        existing = [p for p in paths["frame"].values() if os.path.isfile(p)]
        name = _choose_frame([os.path.basename(p) for p in existing])
        if name is None:
            raise DataError(f"{os.path.dirname(paths['psfield'])}: no frame file of field {run}-{camcol}-{field}")
        path = os.path.join(os.path.dirname(paths["psfield"]), name)
    return footprint_from_header(_read_header(path), path)


# --------------------------------------------------------------------------- index


def _scan(data_dir):
    """(run, camcol, field, relative frame path) of each field directory with a frame."""
    out = []
    for run_dir in _numeric_dirs(data_dir):
        for cam_dir in _numeric_dirs(os.path.join(data_dir, run_dir)):
            for fld_dir in _numeric_dirs(os.path.join(data_dir, run_dir, cam_dir)):
                rel = os.path.join(run_dir, cam_dir, fld_dir)
                try:
                    names = os.listdir(os.path.join(data_dir, rel))
                except OSError:
                    continue
                name = _choose_frame(names)
                if name is not None:
                    out.append((int(run_dir), int(cam_dir), int(fld_dir), os.path.join(rel, name)))
    return out


def _numeric_dirs(path):
    try:
        entries = list(os.scandir(path))
    except OSError:
        return []
    return sorted((e.name for e in entries if e.name.isdigit() and e.is_dir()), key=int)


def _writable(data_dir):
    return os.access(data_dir, os.W_OK)


def cache_path(data_dir):
    """Where the footprint cache of ``data_dir`` is kept.

    ``<data-dir>/.celeste-field-index.json`` if the directory is writable, else
    ``$XDG_CACHE_HOME/celeste/field-index-<hash>.json`` (default
    ``~/.cache/celeste``), the hash being of the absolute data directory path.
    """
    data_dir = os.path.abspath(os.fspath(data_dir))
    if _writable(data_dir):
        return os.path.join(data_dir, CACHE_NAME)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    digest = hashlib.sha1(data_dir.encode()).hexdigest()[:16]
    return os.path.join(base, "celeste", f"field-index-{digest}.json")


def _load_cache(path):
    try:
        with open(path) as fh:
            data = json.load(fh)
        if data.get("version") == _CACHE_VERSION and isinstance(data.get("entries"), dict):
            return data["entries"]
        log.warning("%s: field index cache of another version; rebuilding", path)
    except FileNotFoundError:
        pass
    except (OSError, ValueError, AttributeError) as exc:
        log.warning("%s: unreadable field index cache (%s); rebuilding", path, exc)
    return {}


def _save_cache(path, entries):
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".celeste-index-", dir=os.path.dirname(path))
        with os.fdopen(fd, "w") as fh:
            json.dump({"version": _CACHE_VERSION, "entries": entries}, fh, indent=0, sort_keys=True)
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("%s: cannot write field index cache (%s)", path, exc)


def field_index(data_dir):
    """Footprints of all fields under ``data_dir``, refreshing the cache as needed.

    Parameters
    ----------
    data_dir : str or path-like
        Root of the layout ``<data-dir>/<run>/<camcol>/<field>/frame-*.fits[.bz2]``.

    Returns
    -------
    list of ((run, camcol, field), ndarray (4, 2) float64)
        Each field with a frame and its (ra, dec) corners in degrees, sorted.

    Raises
    ------
    ConfigError
        If ``data_dir`` is not a directory.
    DataError
        If a frame header that must be read is unusable (names the file).
    """
    data_dir = os.path.abspath(os.fspath(data_dir))
    if not os.path.isdir(data_dir):
        raise ConfigError(f"data_dir: {data_dir} is not a directory")
    cpath = cache_path(data_dir)
    cached = _load_cache(cpath)
    entries, changed, out = {}, False, []
    for run, camcol, field, rel in _scan(data_dir):
        full = os.path.join(data_dir, rel)
        st = os.stat(full)
        key = rel.replace(os.sep, "/")
        entry = cached.get(key)
        if not (entry and entry.get("mtime_ns") == st.st_mtime_ns and entry.get("size") == st.st_size):
            corners = footprint_from_header(_read_header(full), full)
            entry = {"mtime_ns": st.st_mtime_ns, "size": st.st_size, "corners": corners.tolist()}
            changed = True
        entries[key] = entry
        out.append(((run, camcol, field), np.asarray(entry["corners"], dtype=np.float64)))
    if changed or set(entries) != set(cached):
        _save_cache(cpath, entries)
    return out


def find_fields(data_dir, region):
    """Fields under ``data_dir`` whose footprint overlaps a sky region.

    Parameters
    ----------
    data_dir : str or path-like
        Root of the layout ``<data-dir>/<run>/<camcol>/<field>/``.
    region : (ra_min, ra_max, dec_min, dec_max)
        Degrees.  ``ra_min > ra_max`` means the region crosses RA = 0.

    Returns
    -------
    list of (run, camcol, field)
        Sorted.  Only frame headers are read (and only for files not already in
        the cache, see :func:`cache_path`).

    Raises
    ------
    ConfigError
        If ``region`` is invalid or ``data_dir`` is not a directory.
    DataError
        If a frame header is unusable.
    """
    region = check_region(region)
    return [key for key, corners in field_index(data_dir) if footprint_overlaps(corners, region)]


__all__ = [
    "CACHE_NAME",
    "cache_path",
    "check_region",
    "field_footprint",
    "field_index",
    "find_fields",
    "footprint_from_header",
    "footprint_overlaps",
]
