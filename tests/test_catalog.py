"""celeste.catalog.fits_table_hdu: tables come back from a plain Table.read with every unit and value,
without a warning, whatever units the table holds (including 'nmgy' read from an older file)."""
import warnings

import astropy.units as u
import numpy as np
from astropy.io import fits
from astropy.table import MaskedColumn, Table

from celeste.catalog import fits_table_hdu


def _write_read(table, path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fits.HDUList([fits.PrimaryHDU(), fits_table_hdu(table)]).writeto(path)
        return Table.read(path), fits.getheader(path, 1)


def test_round_trip_units_values_and_no_warning(tmp_path):
    t = Table()
    t["objid"] = np.array([3, 1, 2], np.int64)
    t["ra"] = np.array([1.0, 2.0, np.nan])
    t["ra"].unit = "deg"
    t["flux_r"] = np.array([0.5, 2.0, 1e3])
    t["flux_r"].unit = "nmgy"
    t["mag_r"] = MaskedColumn([1.0, 2.0, 3.0], mask=[False, True, False], unit="mag")
    t["converged"] = np.array([True, False, True])
    t.meta["REGION"] = "1 2 3 4"
    t.meta["TCOMM9"] = "stale, from a table read back"
    back, hdr = _write_read(t, tmp_path / "t.fits")
    assert back.colnames == t.colnames and back.meta["REGION"] == "1 2 3 4"
    assert back["flux_r"].unit == u.nmgy and back["ra"].unit == u.deg and back["mag_r"].unit == u.mag
    np.testing.assert_array_equal(back["flux_r"], t["flux_r"])
    np.testing.assert_array_equal(back["objid"], t["objid"])
    assert np.isnan(back["mag_r"][1]) and np.isnan(back["ra"][2])
    assert hdr["TUNIT2"] == "deg" and "TUNIT3" not in hdr and hdr["TCOMM3"] == "unit: nmgy"
    assert "TCOMM9" not in hdr


def test_unrecognized_nmgy_from_an_old_file_is_written_as_nmgy(tmp_path):
    """A TUNITn of 'nmgy' (as earlier versions wrote) reads as an UnrecognizedUnit; writing it again
    gives the real unit."""
    old = fits.BinTableHDU(Table({"flux_r": [1.0, 2.0]}))
    old.header["TUNIT1"] = "nmgy"
    old.writeto(tmp_path / "old.fits")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", u.UnitsWarning)
        t = Table.read(tmp_path / "old.fits")
    assert isinstance(t["flux_r"].unit, u.UnrecognizedUnit)
    back, _ = _write_read(t, tmp_path / "new.fits")
    assert back["flux_r"].unit == u.nmgy
