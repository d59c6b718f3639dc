"""Accuracy of a catalog against a truth catalog (``celeste-score``).

Both catalogs use the project's catalog columns::

    objid, ra, dec (deg), is_star (probability), flux_u..flux_z (nmgy),
    flux_<b>_sd (nmgy), mag_<b>, gal_frac_dev, gal_axis_ratio,
    gal_angle_deg (east of north, [0, 180)), gal_radius_arcsec
    (circularized half-light radius)

Columns a catalog lacks are treated as unknown (NaN) and the metrics that need
them are reported with ``n = 0``.  Only ``ra``, ``dec`` and ``flux_r`` (or
``mag_r``) are required.  Truth catalogs in other formats are converted by
adapters: :func:`truth_from_stripe82` (SDSS Stripe 82 coadd table) and
:func:`truth_from_hsc_m2` (Hubble Source Catalog rows for M2).

Metrics
-------
* detection: recall (matched true sources / true sources with r mag <=
  ``mag_limit``), precision (matched catalog sources / catalog sources with
  r mag <= ``mag_limit``) and F1 = 2PR / (P + R);
* the error set of Regier et al., AoAS 2019 (Table 2): position error in
  pixels (0.396 arcsec), missed stars (true stars with is_star < 0.5), missed
  galaxies (true galaxies with is_star >= 0.5), |d mag_r|, |d colour| for
  u-g, g-r, r-i, i-z (magnitudes); for true galaxies |d frac_dev|, and -- only
  where the true frac_dev <= 0.05 or >= 0.95 (a pure profile, so the shape is
  well defined) -- |d axis ratio|, |d radius| (arcsec) and |d angle| (deg,
  modulo 180; only where the true axis ratio <= 0.6).  Errors are over matched
  pairs whose true r mag <= ``mag_limit``; means are the headline numbers and
  medians are reported alongside;
* uncertainty calibration: the fraction of matched sources whose r flux, and
  whose colours, lie within 1 and 2 posterior standard deviations of the truth
  (0.683 and 0.954 expected for calibrated Gaussian posteriors).  The sd of a
  colour c = m_a - m_b = -2.5 log10(f_a / f_b) comes from the band flux sds by
  the delta method assuming independent band fluxes:
  sd(c) = (2.5 / ln 10) sqrt((sd_a / f_a)^2 + (sd_b / f_b)^2).
  Position, from the catalog's ``ra_sd`` and ``dec_sd`` (arcsec, east and north):
  ``position`` counts each coordinate separately (the z-scores
  dE / ra_sd and dN / dec_sd of every matched source pooled; 0.683 and 0.954
  expected), ``position_2d`` uses the 2-D chi^2 = (dE / ra_sd)^2 + (dN / dec_sd)^2
  against the chi^2 (2 degrees of freedom) quantiles of the same probabilities,
  2.2958 and 6.1801 (the posterior correlation of east and north is not in the
  catalog and is taken as zero).

Helpers for real fields without per-source truth: :func:`galaxies_near_bright`
(catalog galaxies crowding around bright sources, against the region's density),
:func:`pixel_box_region` and :func:`inside_pixel_box` (scoring inside a pixel box
of a frame, as for the M2 core).
"""
import argparse
import json
import math
import os
import sys

import numpy as np

from celeste import ARCSEC_PER_DEG, BANDS
from celeste.errors import CelesteError, ConfigError, DataError
from celeste.sdss import ARCSEC_PER_PX


#: adjacent-band colours scored, as (band a, band b) for m_a - m_b
COLOURS = (("u", "g"), ("g", "r"), ("r", "i"), ("i", "z"))

#: catalog columns every adapter produces (float64 unless noted)
CATALOG_COLUMNS = (
    ["objid", "ra", "dec", "ra_sd", "dec_sd", "is_star"]
    + [f"flux_{b}" for b in BANDS]
    + [f"flux_{b}_sd" for b in BANDS]
    + [f"mag_{b}" for b in BANDS]
    + ["gal_frac_dev", "gal_axis_ratio", "gal_angle_deg", "gal_radius_arcsec"]
)

ERROR_METRICS = (
    ("position_px", "position (px)"),
    ("missed_stars", "missed stars"),
    ("missed_galaxies", "missed gals"),
    ("mag_r", "d mag r"),
    ("colour_ug", "d u-g"),
    ("colour_gr", "d g-r"),
    ("colour_ri", "d r-i"),
    ("colour_iz", "d i-z"),
    ("gal_frac_dev", "d frac_dev"),
    ("gal_axis_ratio", "d axis ratio"),
    ("gal_radius_arcsec", "d radius (arcsec)"),
    ("gal_angle_deg", "d angle (deg)"),
)
"""Error metrics in table order as (key, column header); headers name mean absolute errors."""

#: calibration quantities in table order
CALIBRATION_QUANTITIES = ("flux_r", "colour_ug", "colour_gr", "colour_ri", "colour_iz", "position", "position_2d")

#: chi^2 quantiles (2 degrees of freedom) of the probabilities 0.6827 and 0.9545 (1 and 2 sd of a normal):
#: -2 ln(1 - p)
CHI2_2DOF_1SD = -2.0 * math.log(1.0 - math.erf(1.0 / math.sqrt(2.0)))
CHI2_2DOF_2SD = -2.0 * math.log(1.0 - math.erf(2.0 / math.sqrt(2.0)))

_CLASSIFICATION = ("missed_stars", "missed_galaxies")


# --------------------------------------------------------------------------- I/O
def flux_to_mag(flux):
    """Convert nanomaggies to magnitudes.

    Parameters
    ----------
    flux : array_like float
        Flux in nmgy.

    Returns
    -------
    ndarray float64
        ``22.5 - 2.5 log10(flux)``; NaN where flux <= 0 or not finite
        (SDSS photometric flux calibration page: 1 nmgy is magnitude 22.5).
    """
    f = np.asarray(flux, dtype=np.float64)
    out = np.full(f.shape, np.nan)
    ok = np.isfinite(f) & (f > 0)
    out[ok] = 22.5 - 2.5 * np.log10(f[ok])
    return out


def mag_to_flux(mag):
    """Convert magnitudes to nanomaggies: ``10 ** ((22.5 - mag) / 2.5)``; NaN stays NaN."""
    m = np.asarray(mag, dtype=np.float64)
    return 10.0 ** ((22.5 - m) / 2.5)


def _empty_catalog(n):
    cols = {name: np.full(n, np.nan) for name in CATALOG_COLUMNS}
    cols["objid"] = np.arange(n, dtype=np.int64)
    return cols


def as_catalog(cat, name="catalog"):
    """Normalize a catalog to a dict of float64 column arrays with every catalog column.

    Parameters
    ----------
    cat : str or os.PathLike or dict or numpy structured array
        A path (FITS table in HDU 1 or the first table HDU; ``.csv`` with a
        header line), a dict of equal-length arrays, or a structured array.
        Column names are matched case-insensitively.
    name : str
        What to call the catalog in error messages.

    Returns
    -------
    dict of str -> ndarray (N,)
        All of :data:`CATALOG_COLUMNS`; missing ones are NaN (``objid`` is the
        row index when missing).  Missing ``flux_<b>`` are filled from
        ``mag_<b>`` and vice versa.

    Raises
    ------
    DataError
        The file cannot be read, columns have unequal lengths, or ra/dec or
        both flux_r and mag_r are missing.
    """
    label = name
    if isinstance(cat, (str, os.PathLike)):
        label = f"{name} {os.fspath(cat)}"
        cat = _read_table(os.fspath(cat))
    if isinstance(cat, np.ndarray) and cat.dtype.names:
        raw = {n.lower(): cat[n] for n in cat.dtype.names}
    elif hasattr(cat, "colnames"):  # astropy Table
        raw = {str(n).lower(): np.asarray(cat[n]) for n in cat.colnames}
    elif isinstance(cat, dict):
        raw = {str(k).lower(): np.asarray(v) for k, v in cat.items()}
    else:
        raise DataError(f"{label}: expected a path, dict or structured array, got {type(cat).__name__}")
    lengths = {len(np.atleast_1d(v)) for v in raw.values()}
    if len(lengths) > 1:
        raise DataError(f"{label}: columns have unequal lengths {sorted(lengths)}")
    n = lengths.pop() if lengths else 0
    for need in ("ra", "dec"):
        if need not in raw:
            raise DataError(f"{label}: missing column '{need}'")
    if "flux_r" not in raw and "mag_r" not in raw:
        raise DataError(f"{label}: needs column 'flux_r' or 'mag_r'")
    out = _empty_catalog(n)
    for key in CATALOG_COLUMNS:
        if key in raw:
            v = np.atleast_1d(raw[key])
            if key == "objid":
                out[key] = v.astype(np.int64)
            else:
                try:
                    out[key] = v.astype(np.float64)
                except (TypeError, ValueError) as exc:
                    raise DataError(f"{label}: column '{key}' is not numeric ({exc})") from None
    for b in BANDS:
        if f"flux_{b}" not in raw and f"mag_{b}" in raw:
            out[f"flux_{b}"] = mag_to_flux(out[f"mag_{b}"])
        elif f"flux_{b}" in raw:
            out[f"mag_{b}"] = flux_to_mag(out[f"flux_{b}"])
    return out


def _read_table(path):
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file")
    low = path.lower()
    if low.endswith(".csv") or low.endswith(".csv.gz"):
        try:
            data = np.genfromtxt(path, delimiter=",", names=True, dtype=None, encoding="utf-8")
        except Exception as exc:  # numpy raises several kinds on malformed text
            raise DataError(f"{path}: cannot read CSV ({exc})") from None
        return np.atleast_1d(data)
    import fitsio

    try:
        with fitsio.FITS(path) as f:
            for hdu in f:
                if hdu.get_exttype() in ("BINARY_TBL", "ASCII_TBL"):
                    return hdu.read()
    except OSError as exc:
        raise DataError(f"{path}: cannot read FITS ({exc})") from None
    raise DataError(f"{path}: no table HDU")


def write_catalog(path, cat):
    """Write a catalog dict (see :func:`as_catalog`) as a FITS binary table.

    Parameters
    ----------
    path : str
        Output file; overwritten.
    cat : dict of str -> ndarray (N,)
        Catalog columns; written in :data:`CATALOG_COLUMNS` order, extra
        columns after them.
    """
    import fitsio

    names = [c for c in CATALOG_COLUMNS if c in cat] + [c for c in cat if c not in CATALOG_COLUMNS]
    n = len(cat[names[0]]) if names else 0
    dtype = [(c, np.int64 if c == "objid" else np.float64) for c in names]
    arr = np.zeros(n, dtype=dtype)
    for c in names:
        arr[c] = cat[c]
    fitsio.write(path, arr, clobber=True)


# ---------------------------------------------------------------- truth adapters
def truth_from_stripe82(path):
    """Truth catalog from the SDSS Stripe 82 coadd table (tests/data/stripe82_coadd_94_1_12.fits).

    Parameters
    ----------
    path : str
        FITS table with columns objid, ra, dec, probpsf, psfmag_<b>,
        devmag_<b>, expmag_<b>, fracdev_r, devab_r, expab_r, devphi_r,
        expphi_r, devrad_r, exprad_r (SDSS photoObj semantics; -9999 = unknown).

    Returns
    -------
    dict of str -> ndarray (N,)
        Catalog columns.  ``is_star`` = 1 where probpsf >= 0.5 else 0.
        Star fluxes from psfmag; galaxy fluxes are the composite-model fluxes
        f = fracdev f_dev + (1 - fracdev) f_exp with fracdev_r in every band
        (SDSS cmodel definition, SDSS "Magnitudes" algorithm page).  The shape
        (axis ratio, angle +N through E, radius) is that of the dominant
        component (dev if fracdev_r >= 0.5, else exp); SDSS radii are
        half-light radii along the major axis, circularized here as
        r sqrt(axis ratio).  No sds (NaN).

    Raises
    ------
    DataError
        Missing file or columns.
    """
    raw = _read_table(os.fspath(path))
    names = {n.lower(): n for n in raw.dtype.names}
    need = ["ra", "dec", "probpsf", "fracdev_r", "devab_r", "expab_r", "devphi_r", "expphi_r",
            "devrad_r", "exprad_r"] + [f"{k}mag_{b}" for k in ("psf", "dev", "exp") for b in BANDS]
    missing = [c for c in need if c not in names]
    if missing:
        raise DataError(f"{path}: not a Stripe 82 coadd table, missing columns {missing}")

    def col(c):
        v = np.asarray(raw[names[c]], dtype=np.float64)
        return np.where(v <= -9999.0, np.nan, v)

    n = len(raw)
    cat = _empty_catalog(n)
    if "objid" in names:
        cat["objid"] = np.asarray(raw[names["objid"]], dtype=np.int64)
    cat["ra"], cat["dec"] = col("ra"), col("dec")
    star = col("probpsf") >= 0.5
    cat["is_star"] = star.astype(np.float64)
    fd = np.clip(col("fracdev_r"), 0.0, 1.0)
    for b in BANDS:
        f_gal = fd * mag_to_flux(col(f"devmag_{b}")) + (1.0 - fd) * mag_to_flux(col(f"expmag_{b}"))
        cat[f"flux_{b}"] = np.where(star, mag_to_flux(col(f"psfmag_{b}")), f_gal)
        cat[f"mag_{b}"] = flux_to_mag(cat[f"flux_{b}"])
    dev = fd >= 0.5
    q = np.where(dev, col("devab_r"), col("expab_r"))
    phi = np.where(dev, col("devphi_r"), col("expphi_r"))
    rad = np.where(dev, col("devrad_r"), col("exprad_r"))
    cat["gal_frac_dev"] = fd
    cat["gal_axis_ratio"] = q
    cat["gal_angle_deg"] = np.mod(phi, 180.0)
    cat["gal_radius_arcsec"] = rad * np.sqrt(q)
    return cat


def truth_from_hsc_m2(path, filter_name="F606W"):
    """Star truth for the core of M2 from the Hubble Source Catalog (tests/data/hsc_m2_ngc7089.csv).

    Parameters
    ----------
    path : str
        CSV with one row per (match, filter): MatchID, MatchRA, MatchDec,
        Filter, MagAuto (HST ABMAG).
    filter_name : str
        HST filter whose MagAuto stands in for SDSS r (F606W by default).

    Returns
    -------
    dict of str -> ndarray (N,)
        One row per MatchID with a finite MagAuto in ``filter_name`` (median
        over repeated rows); ``is_star`` = 1 (the crowded core is stars),
        ``mag_r``/``flux_r`` from MagAuto, other bands and shapes NaN.

    Raises
    ------
    DataError
        Missing file or columns, or no row in ``filter_name``.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file")
    import csv

    rows = {}
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        need = {"MatchID", "MatchRA", "MatchDec", "Filter", "MagAuto"}
        if reader.fieldnames is None or not need <= set(reader.fieldnames):
            raise DataError(f"{path}: missing columns {sorted(need - set(reader.fieldnames or []))}")
        for r in reader:
            if r["Filter"].strip() != filter_name:
                continue
            try:
                mag = float(r["MagAuto"])
            except ValueError:
                continue
            if not np.isfinite(mag):
                continue
            key = int(r["MatchID"])
            entry = rows.setdefault(key, [float(r["MatchRA"]), float(r["MatchDec"]), []])
            entry[2].append(mag)
    if not rows:
        raise DataError(f"{path}: no rows with Filter == {filter_name}")
    ids = np.array(sorted(rows), dtype=np.int64)
    cat = _empty_catalog(len(ids))
    cat["objid"] = ids
    cat["ra"] = np.array([rows[i][0] for i in ids])
    cat["dec"] = np.array([rows[i][1] for i in ids])
    cat["is_star"] = np.ones(len(ids))
    cat["mag_r"] = np.array([np.median(rows[i][2]) for i in ids])
    cat["flux_r"] = mag_to_flux(cat["mag_r"])
    return cat


def load_truth(path, kind="auto"):
    """Read a truth catalog, choosing the adapter by ``kind``.

    Parameters
    ----------
    path : str
    kind : {'auto', 'catalog', 'stripe82', 'hsc'}
        'auto': a CSV with a MatchID column is HSC, a FITS table with a
        probpsf column is Stripe 82, anything else is a project catalog.

    Raises
    ------
    ConfigError
        Unknown ``kind``.
    DataError
        Unreadable file.
    """
    path = os.fspath(path)
    if kind == "auto":
        if path.lower().endswith(".csv"):
            with open(path, encoding="utf-8") as fh:
                head = fh.readline()
            kind = "hsc" if "MatchID" in head else "catalog"
        else:
            raw = _read_table(path)
            kind = "stripe82" if "probpsf" in [n.lower() for n in raw.dtype.names] else "catalog"
    if kind == "stripe82":
        return truth_from_stripe82(path)
    if kind == "hsc":
        return truth_from_hsc_m2(path)
    if kind == "catalog":
        return as_catalog(path, "truth")
    raise ConfigError(f"--truth-format: unknown kind {kind!r} (auto, catalog, stripe82, hsc)")


# ---------------------------------------------------------------------- matching
def _unit_vectors(ra_deg, dec_deg):
    ra = np.radians(ra_deg)
    dec = np.radians(dec_deg)
    return np.column_stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])


def angular_separation_arcsec(ra1, dec1, ra2, dec2):
    """Great-circle separation (haversine formula), arcsec; inputs in degrees, broadcast."""
    ra1, dec1, ra2, dec2 = (np.radians(np.asarray(v, dtype=np.float64)) for v in (ra1, dec1, ra2, dec2))
    s = np.sin((dec2 - dec1) / 2) ** 2 + np.cos(dec1) * np.cos(dec2) * np.sin((ra2 - ra1) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(s, 0.0, 1.0)))) * ARCSEC_PER_DEG


def match(cat, truth, radius_arcsec=1.0, mag_window=None):
    """One-to-one positional match of catalog rows to truth rows.

    Candidate pairs are those closer than ``radius_arcsec`` (and, if
    ``mag_window`` is given, with |mag_r(cat) - mag_r(truth)| <= mag_window;
    pairs with an unknown magnitude are then not candidates).  Pairs are
    accepted greedily in order of increasing separation (ties broken by truth
    index, then catalog index), skipping pairs whose catalog or truth row is
    already taken: deterministic, and each accepted pair is the closest still
    available to both members.

    Parameters
    ----------
    cat, truth : catalog (see :func:`as_catalog`)
    radius_arcsec : float
        Match radius, arcsec, > 0.
    mag_window : float or None
        Largest allowed r-magnitude difference.

    Returns
    -------
    i_cat, i_truth : ndarray (M,) int64
        Indices of matched rows, sorted by ``i_truth``.

    Raises
    ------
    ConfigError
        radius_arcsec <= 0 or mag_window < 0.
    """
    from scipy.spatial import cKDTree

    if not (radius_arcsec > 0 and math.isfinite(radius_arcsec)):
        raise ConfigError(f"radius_arcsec: must be a positive number, got {radius_arcsec}")
    if mag_window is not None and not mag_window >= 0:
        raise ConfigError(f"mag_window: must be >= 0, got {mag_window}")
    cat = as_catalog(cat, "catalog")
    truth = as_catalog(truth, "truth")
    ok_c = np.flatnonzero(np.isfinite(cat["ra"]) & np.isfinite(cat["dec"]))
    ok_t = np.flatnonzero(np.isfinite(truth["ra"]) & np.isfinite(truth["dec"]))
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64))
    if len(ok_c) == 0 or len(ok_t) == 0:
        return empty
    v_c = _unit_vectors(cat["ra"][ok_c], cat["dec"][ok_c])
    v_t = _unit_vectors(truth["ra"][ok_t], truth["dec"][ok_t])
    chord = 2.0 * math.sin(math.radians(radius_arcsec / ARCSEC_PER_DEG) / 2.0)
    pairs = cKDTree(v_t).sparse_distance_matrix(cKDTree(v_c), chord * (1 + 1e-12), output_type="ndarray")
    if len(pairs) == 0:
        return empty
    it = ok_t[pairs["i"]]
    ic = ok_c[pairs["j"]]
    sep = angular_separation_arcsec(cat["ra"][ic], cat["dec"][ic], truth["ra"][it], truth["dec"][it])
    keep = sep <= radius_arcsec
    if mag_window is not None:
        dm = np.abs(cat["mag_r"][ic] - truth["mag_r"][it])
        keep &= dm <= mag_window  # NaN compares False
    it, ic, sep = it[keep], ic[keep], sep[keep]
    order = np.lexsort((ic, it, sep))
    used_c = np.zeros(len(cat["ra"]), bool)
    used_t = np.zeros(len(truth["ra"]), bool)
    out_c, out_t = [], []
    for k in order:
        a, b = ic[k], it[k]
        if used_c[a] or used_t[b]:
            continue
        used_c[a] = used_t[b] = True
        out_c.append(a)
        out_t.append(b)
    out_c = np.asarray(out_c, np.int64)
    out_t = np.asarray(out_t, np.int64)
    s = np.argsort(out_t, kind="stable")
    return out_c[s], out_t[s]


# ----------------------------------------------------------------------- scoring
def _summary(values, classification=False):
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return {"mean": None, "median": None, "n": 0}
    return {
        "mean": float(np.mean(v)),
        "median": None if classification else float(np.median(v)),
        "n": int(len(v)),
    }


def angle_error_deg(a_deg, b_deg):
    """Smallest difference of two axis angles, degrees in [0, 90]: |a - b| modulo 180.

    A galaxy's position angle is defined modulo 180 deg (179 and 1 are 2 apart).
    """
    d = np.mod(np.abs(np.asarray(a_deg, np.float64) - np.asarray(b_deg, np.float64)), 180.0)
    return np.minimum(d, 180.0 - d)


def _colour(c, a, b):
    return c[f"mag_{a}"] - c[f"mag_{b}"]


def _colour_sd(c, a, b):
    """Delta-method sd of m_a - m_b from band flux sds (independent bands)."""
    k = 2.5 / math.log(10.0)
    ra = c[f"flux_{a}_sd"] / c[f"flux_{a}"]
    rb = c[f"flux_{b}_sd"] / c[f"flux_{b}"]
    return k * np.sqrt(ra**2 + rb**2)


def _within(err, sd):
    err = np.asarray(err, np.float64)
    sd = np.asarray(sd, np.float64)
    ok = np.isfinite(err) & np.isfinite(sd) & (sd > 0)
    n = int(ok.sum())
    if n == 0:
        return {"within_1sd": None, "within_2sd": None, "n": 0}
    z = np.abs(err[ok]) / sd[ok]
    return {"within_1sd": float(np.mean(z <= 1.0)), "within_2sd": float(np.mean(z <= 2.0)), "n": n}


def _within_2d(de, dn, sd_e, sd_n):
    """Fractions of 2-D chi^2 = (de/sd_e)^2 + (dn/sd_n)^2 within the 1- and 2-sd chi^2 (2 dof) quantiles."""
    de, dn, sd_e, sd_n = (np.asarray(v, np.float64) for v in (de, dn, sd_e, sd_n))
    ok = np.isfinite(de) & np.isfinite(dn) & np.isfinite(sd_e) & np.isfinite(sd_n) & (sd_e > 0) & (sd_n > 0)
    n = int(ok.sum())
    if n == 0:
        return {"within_1sd": None, "within_2sd": None, "n": 0}
    chi2 = (de[ok] / sd_e[ok]) ** 2 + (dn[ok] / sd_n[ok]) ** 2
    return {"within_1sd": float(np.mean(chi2 <= CHI2_2DOF_1SD)), "within_2sd": float(np.mean(chi2 <= CHI2_2DOF_2SD)),
            "n": n}


def offsets_arcsec(cat, truth):
    """(east, north) offsets catalog - truth in arcsec of paired rows (equal-length catalogs).

    East is dRA cos(dec) (RA difference wrapped into [-180, 180) deg), north dDec.
    """
    dra = (np.asarray(cat["ra"], np.float64) - np.asarray(truth["ra"], np.float64) + 180.0) % 360.0 - 180.0
    cosd = np.cos(np.radians(np.asarray(truth["dec"], np.float64)))
    return dra * cosd * 3600.0, (np.asarray(cat["dec"], np.float64) - np.asarray(truth["dec"], np.float64)) * 3600.0


def score(cat, truth, radius_arcsec=1.0, mag_window=None, mag_limit=22.0):
    """Score a catalog against truth.

    Parameters
    ----------
    cat, truth : catalog (path, dict of arrays or structured array; see :func:`as_catalog`)
    radius_arcsec : float
        Match radius (arcsec).
    mag_window : float or None
        Largest r-magnitude difference for a match.
    mag_limit : float
        Faintest r magnitude counted: truth r mag for recall and for the
        error metrics, catalog r mag for precision.

    Returns
    -------
    dict
        ``n_truth``, ``n_catalog`` (rows brighter than mag_limit),
        ``n_matched``, ``recall``, ``precision``, ``f1`` (None when undefined),
        ``errors``: {metric: {"mean", "median", "n"}} for the keys of
        :data:`ERROR_METRICS` (classification metrics have median None),
        ``calibration``: {quantity: {"within_1sd", "within_2sd", "n"}} for
        :data:`CALIBRATION_QUANTITIES`, and the settings used.

    Raises
    ------
    DataError, ConfigError
        As :func:`as_catalog` and :func:`match`.

    Notes
    -----
    Error set of Regier et al., "Approximate inference for constructing
    astronomical catalogs from images", AoAS 13(3), 2019, Table 2.
    """
    cat = as_catalog(cat, "catalog")
    truth = as_catalog(truth, "truth")
    i_c, i_t = match(cat, truth, radius_arcsec, mag_window)

    t_bright = truth["mag_r"] <= mag_limit
    c_bright = cat["mag_r"] <= mag_limit
    n_t = int(t_bright.sum())
    n_c = int(c_bright.sum())
    matched_t = np.zeros(len(truth["ra"]), bool)
    matched_t[i_t] = True
    matched_c = np.zeros(len(cat["ra"]), bool)
    matched_c[i_c] = True
    recall = float((matched_t & t_bright).sum() / n_t) if n_t else None
    precision = float((matched_c & c_bright).sum() / n_c) if n_c else None
    if recall is not None and precision is not None and recall + precision > 0:
        f1 = 2 * recall * precision / (recall + precision)
    else:
        f1 = None if recall is None or precision is None else 0.0

    sel = t_bright[i_t]
    ic, it = i_c[sel], i_t[sel]
    C = {k: v[ic] for k, v in cat.items()}
    T = {k: v[it] for k, v in truth.items()}
    errors = {}
    sep = angular_separation_arcsec(C["ra"], C["dec"], T["ra"], T["dec"])
    errors["position_px"] = _summary(sep / ARCSEC_PER_PX)
    t_star = T["is_star"] >= 0.5
    t_gal = T["is_star"] < 0.5
    known = np.isfinite(C["is_star"]) & np.isfinite(T["is_star"])
    errors["missed_stars"] = _summary(np.where(t_star & known, C["is_star"] < 0.5, np.nan)[t_star], True)
    errors["missed_galaxies"] = _summary(np.where(t_gal & known, C["is_star"] >= 0.5, np.nan)[t_gal], True)
    errors["mag_r"] = _summary(np.abs(C["mag_r"] - T["mag_r"]))
    for a, b in COLOURS:
        errors[f"colour_{a}{b}"] = _summary(np.abs(_colour(C, a, b) - _colour(T, a, b)))
    fd_t = T["gal_frac_dev"]
    errors["gal_frac_dev"] = _summary(np.abs(C["gal_frac_dev"] - fd_t)[t_gal])
    pure = t_gal & ((fd_t <= 0.05) | (fd_t >= 0.95))
    errors["gal_axis_ratio"] = _summary(np.abs(C["gal_axis_ratio"] - T["gal_axis_ratio"])[pure])
    errors["gal_radius_arcsec"] = _summary(np.abs(C["gal_radius_arcsec"] - T["gal_radius_arcsec"])[pure])
    elong = pure & (T["gal_axis_ratio"] <= 0.6)
    errors["gal_angle_deg"] = _summary(angle_error_deg(C["gal_angle_deg"], T["gal_angle_deg"])[elong])

    calibration = {"flux_r": _within(C["flux_r"] - T["flux_r"], C["flux_r_sd"])}
    for a, b in COLOURS:
        calibration[f"colour_{a}{b}"] = _within(_colour(C, a, b) - _colour(T, a, b), _colour_sd(C, a, b))
    de, dn = offsets_arcsec(C, T)
    calibration["position"] = _within(np.concatenate([de, dn]), np.concatenate([C["ra_sd"], C["dec_sd"]]))
    calibration["position_2d"] = _within_2d(de, dn, C["ra_sd"], C["dec_sd"])

    return {
        "radius_arcsec": float(radius_arcsec),
        "mag_window": None if mag_window is None else float(mag_window),
        "mag_limit": float(mag_limit),
        "n_truth": n_t,
        "n_catalog": n_c,
        "n_matched": int(len(i_c)),
        "n_scored": int(len(ic)),
        "recall": recall,
        "precision": precision,
        "f1": f1,
        "errors": errors,
        "calibration": calibration,
    }


# ------------------------------------------------------------ real-field helpers
def _region_xy_arcsec(ra, dec, region):
    """Flat-sky (x east, y north) arcsec from the region's (ra_min, dec_min) corner; cos(dec) at its middle."""
    cosd = math.cos(math.radians(0.5 * (region[2] + region[3])))
    x = ((np.asarray(ra, np.float64) - region[0] + 180.0) % 360.0 - 180.0) * cosd * 3600.0
    y = (np.asarray(dec, np.float64) - region[2]) * 3600.0
    return x, y, (region[1] - region[0]) * cosd * 3600.0, (region[3] - region[2]) * 3600.0


def galaxies_near_bright(cat, region, bright_mag=16.5, radius_arcsec=15.0):
    """Catalog galaxies around bright sources against the number the region's galaxy density predicts.

    Bright sources are catalog rows with r mag < ``bright_mag`` whose ``radius_arcsec`` disc
    lies inside ``region``; around each, the catalog galaxies (is_star < 0.5, any magnitude,
    itself excluded) within ``radius_arcsec`` are counted.  Expected: the density of catalog
    galaxies over the region times pi radius^2.  A catalog that shreds bright sources or fits
    their wings with galaxies has a ratio well above 1 (clustering of real galaxies around
    bright galaxies adds a little).  ``ratio_background`` uses instead the density of galaxies
    farther than 2 ``radius_arcsec`` from every bright source (r < ``bright_mag``) in the
    region, over that part of its area (what the sky holds away from bright sources).

    Parameters
    ----------
    cat : catalog (see :func:`as_catalog`)
    region : (ra_min, ra_max, dec_min, dec_max), degrees (flat-sky approximation; no RA wrap)
    bright_mag, radius_arcsec : float

    Returns
    -------
    dict
        ``n_bright``, ``mean_near`` (galaxies per bright source), ``expected``, ``ratio``,
        ``density_per_arcmin2``, ``expected_background``, ``ratio_background`` (None when
        undefined), ``counts`` (per bright source).
    """
    cat = as_catalog(cat, "catalog")
    x, y, width, height = _region_xy_arcsec(cat["ra"], cat["dec"], region)
    inside = (x >= 0) & (x <= width) & (y >= 0) & (y <= height)
    bright = inside & (cat["mag_r"] < bright_mag)
    r = float(radius_arcsec)
    centred = bright & (x >= r) & (x <= width - r) & (y >= r) & (y <= height - r)
    gal = inside & (cat["is_star"] < 0.5) & np.isfinite(x) & np.isfinite(y)
    gx, gy = x[gal], y[gal]
    gidx = np.flatnonzero(gal)
    counts = []
    for k in np.flatnonzero(centred):
        d = np.hypot(gx - x[k], gy - y[k])
        counts.append(int(np.sum((d <= r) & (gidx != k))))
    area = width * height
    density = gal.sum() / area if area > 0 else float("nan")
    expected = density * math.pi * r * r
    mean_near = float(np.mean(counts)) if counts else None
    # background: galaxies and area farther than 2 r from every bright source
    bx, by = x[bright], y[bright]
    far = np.ones(len(gx), bool)
    for cx, cy in zip(bx, by):
        far &= np.hypot(gx - cx, gy - cy) > 2 * r
    step = max(min(width, height) / 400.0, 1.0)
    ux, uy = np.meshgrid(np.arange(0.5 * step, width, step), np.arange(0.5 * step, height, step))
    keep = np.ones(ux.shape, bool)
    for cx, cy in zip(bx, by):
        keep &= np.hypot(ux - cx, uy - cy) > 2 * r
    bg_area = keep.mean() * area
    bg_density = far.sum() / bg_area if bg_area > 0 else float("nan")
    expected_bg = bg_density * math.pi * r * r
    return {
        "n_bright": len(counts),
        "mean_near": mean_near,
        "expected": float(expected),
        "ratio": None if mean_near is None or not expected > 0 else mean_near / expected,
        "density_per_arcmin2": float(density * 3600.0),
        "expected_background": float(expected_bg),
        "ratio_background": None if mean_near is None or not expected_bg > 0 else mean_near / expected_bg,
        "counts": counts,
    }


def pixel_box_region(wcs, box):
    """(ra_min, ra_max, dec_min, dec_max) spanned by the outer pixel edges of ``box`` = (x0, x1, y0, y1) inclusive."""
    x0, x1, y0, y1 = box
    xs = np.array([x0 - 0.5, x1 + 0.5, x0 - 0.5, x1 + 0.5])
    ys = np.array([y0 - 0.5, y0 - 0.5, y1 + 0.5, y1 + 0.5])
    ra, dec = wcs.all_pix2world(xs, ys, 0)
    return (float(ra.min()), float(ra.max()), float(dec.min()), float(dec.max()))


def inside_pixel_box(cat, wcs, box, edge_px=0.0):
    """Rows of ``cat`` whose position maps (through ``wcs``) at least ``edge_px`` inside ``box`` (x0, x1, y0, y1)."""
    x, y = wcs.all_world2pix(np.asarray(cat["ra"], float), np.asarray(cat["dec"], float), 0)
    x0, x1, y0, y1 = box
    e = edge_px
    return (x >= x0 + e) & (x <= x1 - e) & (y >= y0 + e) & (y <= y1 - e)


# ------------------------------------------------------------------------ output
def _fmt(v, digits=3):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return f"{v:.{digits}f}"


def format_text(scores):
    """Plain-text report of one :func:`score` result: detection lines, then one line per metric."""
    lines = [
        f"match radius {scores['radius_arcsec']:g} arcsec, r mag limit {scores['mag_limit']:g}"
        + ("" if scores.get("mag_window") is None else f", mag window {scores['mag_window']:g}"),
        f"truth {scores['n_truth']}  catalog {scores['n_catalog']}  matched {scores['n_matched']}"
        f"  scored {scores['n_scored']}",
        f"recall {_fmt(scores['recall'])}  precision {_fmt(scores['precision'])}  F1 {_fmt(scores['f1'])}",
        "",
        f"{'error':<22}{'mean':>10}{'median':>10}{'n':>8}",
    ]
    for key, _ in ERROR_METRICS:
        e = scores["errors"][key]
        lines.append(f"{key:<22}{_fmt(e['mean'], 4):>10}{_fmt(e['median'], 4):>10}{e['n']:>8}")
    lines += ["", f"{'calibration':<22}{'<=1 sd':>10}{'<=2 sd':>10}{'n':>8}"]
    for key in CALIBRATION_QUANTITIES:
        c = scores["calibration"][key]
        lines.append(f"{key:<22}{_fmt(c['within_1sd'])!s:>10}{_fmt(c['within_2sd'])!s:>10}{c['n']:>8}")
    lines.append(f"{'(gaussian)':<22}{0.683:>10.3f}{0.954:>10.3f}")
    return "\n".join(lines)


def format_table(results):
    """Markdown table comparing tools side by side, one row per tool.

    Parameters
    ----------
    results : dict of str -> dict
        Tool name -> :func:`score` result.

    Returns
    -------
    str
        Markdown: columns F1, recall, precision, then the mean of each error
        metric (:data:`ERROR_METRICS`), then the fraction of r fluxes within
        1 and 2 sd.  "-" where a metric is undefined.
    """
    head = ["tool", "F1", "recall", "precision"] + [h for _, h in ERROR_METRICS] + ["r flux <=1sd", "r flux <=2sd"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for tool, s in results.items():
        row = [str(tool), _fmt(s.get("f1")), _fmt(s.get("recall")), _fmt(s.get("precision"))]
        row += [_fmt(s["errors"][k]["mean"]) for k, _ in ERROR_METRICS]
        cal = s["calibration"]["flux_r"]
        row += [_fmt(cal["within_1sd"]), _fmt(cal["within_2sd"])]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv=None):
    """Console script ``celeste-score CATALOG TRUTH [options]``; exit status 2 on a CelesteError."""
    p = argparse.ArgumentParser(prog="celeste-score", description="Score a catalog against a truth catalog.")
    p.add_argument("catalog", help="catalog (FITS table or CSV with the project's columns)")
    p.add_argument("truth", help="truth catalog (project columns, Stripe 82 coadd FITS, or HSC CSV)")
    p.add_argument("--radius-arcsec", type=float, default=1.0, help="match radius, arcsec (default 1.0)")
    p.add_argument("--mag-window", type=float, default=None, help="largest |d r mag| for a match")
    p.add_argument("--mag-limit", type=float, default=22.0, help="faintest r magnitude counted (default 22)")
    p.add_argument("--truth-format", default="auto", choices=["auto", "catalog", "stripe82", "hsc"])
    p.add_argument("--json", default=None, help="also write the scores as JSON to this file")
    args = p.parse_args(argv)
    try:
        truth = load_truth(args.truth, args.truth_format)
        s = score(args.catalog, truth, args.radius_arcsec, args.mag_window, args.mag_limit)
        print(format_text(s))
        if args.json:
            try:
                with open(args.json, "w", encoding="utf-8") as fh:
                    json.dump(s, fh, indent=2)
            except OSError as exc:
                raise ConfigError(f"--json: cannot write {args.json} ({exc})") from None
    except CelesteError as exc:
        print(f"celeste-score: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
