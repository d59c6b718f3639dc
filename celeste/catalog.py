"""From per-source posterior summaries to catalog rows (units, sd, flags), and objids.

Catalog columns (one row per source inside the region; FITS binary table written by
:func:`fits_table_hdu`: units in TUNITn, nmgy in astropy's column metadata and TCOMMn;
readable by astropy.table.Table.read without warnings and by TOPCAT):

==================  =========  ===============================================================
column              unit       meaning
==================  =========  ===============================================================
objid               -          int64 from the detection position (stable across reruns)
ra, dec             deg        ICRS posterior position
ra_sd, dec_sd       arcsec     posterior sd of the position (linear response, east/north)
is_star             -          posterior probability that the source is a star
flux_<b>            nmgy       posterior mean flux under the more probable type, b in ugriz
flux_<b>_sd         nmgy       posterior sd (linear response plus the variational variance)
mag_<b>             mag        22.5 - 2.5 log10(flux_<b>) (SDSS asinh-free nanomaggie scale)
gal_frac_dev        -          de Vaucouleurs fraction of the galaxy light
gal_axis_ratio      -          minor / major axis
gal_angle_deg       deg        position angle of the major axis, east of north, [0, 180)
gal_radius_arcsec   arcsec     circularized half-light radius re sqrt(axis ratio)
elbo                nat        final ELBO of the source's update (without sum ln x!)
n_iter              -          Newton iterations of the last update
converged           -          the last update met its stopping rule
n_passes            -          block-coordinate passes of the box
n_pixels            -          active pixels of the source, all bands
opt_seconds         s          optimizer wall time of the source, all passes (box files only)
box_id              -          the box that optimized the source
flags               -          bit field, see FLAG_* below
==================  =========  ===============================================================
"""
import io
import re
import warnings

import numpy as np
from astropy.table import MaskedColumn, QTable, Table
from astropy.utils.exceptions import AstropyUserWarning

from . import BANDS

#: no unmasked pixel in any image: parameters are the initial guesses
FLAG_NO_PIXELS = 1
#: the optimizer did not meet its stopping rule in the last pass
FLAG_NOT_CONVERGED = 2
#: posterior sd could not be computed (Hessian block not negative definite)
FLAG_NO_SD = 4
#: the source came from --init (not from detection)
FLAG_USER_INIT = 8
#: the source was found in the model's residuals (not by the initial detection)
FLAG_RESIDUAL = 16
#: the ELBO was not finite at the start of the source's last update (NumericalError, logged)
FLAG_NUMERICAL = 32

FLAG_DOC = {
    FLAG_NO_PIXELS: "no unmasked pixel covers the source; values are the initial guesses",
    FLAG_NOT_CONVERGED: "Newton iterations did not converge in the last pass",
    FLAG_NO_SD: "posterior sd unavailable (Hessian not negative definite)",
    FLAG_USER_INIT: "initialised from the user's --init catalog",
    FLAG_RESIDUAL: "found in the residuals of the model (residual round)",
    FLAG_NUMERICAL: "non-finite ELBO at the last update's start; values unchanged",
}


def make_objid(ra, dec):
    """Stable int64 ids from positions: RA and Dec+90 quantized to 0.01 arcsec.

    objid = round(ra * 360000) * 2^26 + round((dec + 90) * 360000); both parts fit
    (RA < 2^27, Dec + 90 < 2^26 in these units), so two positions differ in id iff they
    differ by at least 0.01 arcsec in either coordinate.
    """
    ra = np.mod(np.asarray(ra, float), 360.0)
    dec = np.asarray(dec, float)
    a = np.round(ra * 360000.0).astype(np.int64) % (360 * 360000)
    d = np.round((dec + 90.0) * 360000.0).astype(np.int64)
    return a * np.int64(2 ** 26) + d


def results_table(res, objid, box_id, n_passes, flags0=None):
    """Catalog rows (astropy Table with units) from :meth:`celeste.infer.BoxModel.source_results`.

    Parameters
    ----------
    res : dict of arrays
        Output of ``source_results`` restricted to the rows to report.
    objid : ndarray (n,) int64
    box_id : int
    n_passes : int
    flags0 : ndarray (n,) int, optional
        Flags set before inference (e.g. FLAG_USER_INIT).

    Returns
    -------
    astropy.table.Table
    """
    n = len(objid)
    t = Table()
    t["objid"] = np.asarray(objid, np.int64)
    t["ra"] = res["ra"]
    t["ra"].unit = "deg"
    t["dec"] = res["dec"]
    t["dec"].unit = "deg"
    t["ra_sd"] = res["ra_sd"]
    t["ra_sd"].unit = "arcsec"
    t["dec_sd"] = res["dec_sd"]
    t["dec_sd"].unit = "arcsec"
    t["is_star"] = res["is_star"]
    for b, name in enumerate(BANDS):
        t[f"flux_{name}"] = res["flux"][:, b]
        t[f"flux_{name}"].unit = "nmgy"
        t[f"flux_{name}_sd"] = res["flux_sd"][:, b]
        t[f"flux_{name}_sd"].unit = "nmgy"
    for b, name in enumerate(BANDS):
        with np.errstate(divide="ignore", invalid="ignore"):
            t[f"mag_{name}"] = 22.5 - 2.5 * np.log10(res["flux"][:, b])
        t[f"mag_{name}"].unit = "mag"
    t["gal_frac_dev"] = res["gal_frac_dev"]
    t["gal_axis_ratio"] = res["gal_axis_ratio"]
    t["gal_angle_deg"] = res["gal_angle_deg"]
    t["gal_angle_deg"].unit = "deg"
    t["gal_radius_arcsec"] = res["gal_radius_arcsec"]
    t["gal_radius_arcsec"].unit = "arcsec"
    t["elbo"] = res["elbo"]
    t["n_iter"] = res["n_iter"].astype(np.int32)
    t["converged"] = res["converged"].astype(bool)
    t["n_passes"] = np.full(n, n_passes, np.int16)
    t["n_pixels"] = np.asarray(res["n_pixels"], np.int32)
    t["opt_seconds"] = res["opt_seconds"]
    t["opt_seconds"].unit = "s"
    t["box_id"] = np.full(n, box_id, np.int32)
    flags = np.zeros(n, np.int32) if flags0 is None else np.asarray(flags0, np.int32).copy()
    flags |= np.where(res["no_pixels"], FLAG_NO_PIXELS, 0).astype(np.int32)
    flags |= np.where(~res["converged"] & ~res["no_pixels"], FLAG_NOT_CONVERGED, 0).astype(np.int32)
    flags |= np.where(~np.isfinite(res["flux_sd"][:, 2]) & ~res["no_pixels"], FLAG_NO_SD, 0).astype(np.int32)
    flags |= np.where(res["numerical"], FLAG_NUMERICAL, 0).astype(np.int32)
    t["flags"] = flags
    for k, v in FLAG_DOC.items():
        t.meta[f"FLAG{k}"] = v[:68]
    return t


def empty_results():
    """:meth:`celeste.infer.BoxModel.source_results` of no source (a box that owns none)."""
    z = np.zeros(0)
    d = {k: z for k in ("ra", "dec", "ra_sd", "dec_sd", "is_star", "gal_frac_dev", "gal_axis_ratio",
                         "gal_angle_deg", "gal_radius_arcsec", "elbo", "grad_max")}
    d["flux"] = np.zeros((0, 5))
    d["flux_sd"] = np.zeros((0, 5))
    d["n_iter"] = np.zeros(0, np.int32)
    d["converged"] = np.zeros(0, bool)
    d["no_pixels"] = np.zeros(0, bool)
    d["numerical"] = np.zeros(0, bool)
    d["n_pixels"] = np.zeros(0, np.int32)
    d["opt_seconds"] = np.zeros(0)
    return d


def fits_table_hdu(table):
    """A BinTableHDU of ``table`` that ``astropy.table.Table.read`` gives back with its units, silently.

    Used for every table the package writes (box results, catalogs).  Columns with units
    are written as astropy Quantity columns, whose units astropy keeps in its serialized
    column metadata (COMMENT cards).  Units of the FITS standard (deg, arcsec, mag, s) also
    get TUNITn.  Nanomaggies have no FITS-standard spelling: a TUNITn of 'nmgy' makes
    astropy warn on every read, so flux columns carry their unit in the metadata only
    (astropy reads ``u.nmgy``) and in TCOMMn, the column description other readers such as
    TOPCAT show.  Masked float columns are written with NaN.

    Parameters
    ----------
    table : astropy.table.Table

    Returns
    -------
    astropy.io.fits.BinTableHDU
    """
    from astropy.io import fits

    import astropy.units as u

    q = QTable()
    for name in table.colnames:
        col = table[name]
        if isinstance(col, MaskedColumn):
            col = col.filled(np.nan if col.dtype.kind == "f" else col.fill_value)
        if isinstance(col.unit, u.UnrecognizedUnit):  # e.g. 'nmgy' read from an older file's TUNITn
            col = col.copy()
            col.unit = u.Unit(col.unit.to_string(), parse_strict="silent")
        q[name] = col
    q.meta.update((k, v) for k, v in table.meta.items() if not re.fullmatch(r"TCOMM\d+", str(k).upper()))
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # "could not be saved in native FITS format": nmgy, kept in the serialized metadata
        warnings.simplefilter("ignore", AstropyUserWarning)
        q.write(buf, format="fits")
    buf.seek(0)
    with fits.open(buf, memmap=False) as hdul:
        hdu = hdul[1].copy()
    for i, col in enumerate(table.itercols(), start=1):
        if col.unit is not None and f"TUNIT{i}" not in hdu.header:
            hdu.header[f"TCOMM{i}"] = f"unit: {col.unit.to_string()}"
    return hdu
