"""The in-memory image: what the model needs of one band of one field.

Produced by the survey readers (:mod:`celeste.sdss`), consumed by model set-up
(:mod:`celeste.infer`).  Pixel coordinates are 0-based, x = column, y = row.
"""
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np


@dataclass
class Image:
    """One band of one field (or a cutout of it).

    Attributes
    ----------
    band : int
        Band index 0..4 (u g r i z).
    counts : ndarray (H, W) float64
        Observed pixel values in electrons (sky included): the Poisson data x.
    sky : ndarray (H, W) float64
        Sky level in nanomaggies per pixel.
    calibration : ndarray (W,) float64
        nanomaggies per DN for each column (SDSS frame HDU1).
    gain : float
        electrons per DN (photoField GAIN for this band and camcol).
    mask : ndarray (H, W) bool
        True where a pixel must be ignored (fpM interpolated, saturated, cosmic
        ray, ghost; or non-finite data).
    wcs : astropy.wcs.WCS
        Celestial WCS of this array (already shifted for cutouts: pixel (0, 0)
        of ``counts`` is pixel (0, 0) of ``wcs``).
    psf_at : callable (x, y) -> ndarray (P, P)
        Survey PSF image at pixel (x, y) of this array, normalized to sum 1,
        centred at (P // 2, P // 2).
    dark_variance : float
        Read noise plus dark current variance, DN^2 per pixel (photoField).
    run, camcol, field : int
        SDSS identifiers.
    x0, y0 : int
        Offset of this array in the full frame (0 for full frames).
    path : str
        The frame file this came from.
    """

    band: int
    counts: np.ndarray
    sky: np.ndarray
    calibration: np.ndarray
    gain: float
    mask: np.ndarray
    wcs: object
    psf_at: Callable
    dark_variance: float = 0.0
    run: int = 0
    camcol: int = 0
    field: int = 0
    x0: int = 0
    y0: int = 0
    path: str = ""

    @property
    def shape(self):
        return self.counts.shape

    @property
    def iota(self):
        """electrons per nanomaggy for each column, shape (W,): gain / calibration."""
        return self.gain / self.calibration
