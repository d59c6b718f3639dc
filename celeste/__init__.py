"""celeste: catalogs of stars and galaxies by variational inference on survey images.

Data flow (one way)::

    survey files -> images -> initial catalog -> boxes -> per-box inference
                 -> per-box results -> merged catalog

Conventions: fluxes in nanomaggies (nmgy); pixel counts in electrons; pixel
coordinates 0-based with x = column and y = row; sky coordinates ICRS degrees.
"""
__version__ = "0.1.0"

BANDS = ("u", "g", "r", "i", "z")
"""SDSS band names in wavelength order; band index b refers to this tuple."""

ARCSEC_PER_DEG = 3600.0
"""Arcseconds per degree (offsets on the sky are in arcsec, positions in degrees)."""
