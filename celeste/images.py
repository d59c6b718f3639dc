"""The images stage: what the model needs of one band of one field, and the images of a box.

:class:`Image` is the contract between the survey readers (:mod:`celeste.sdss`) and model
set-up (:mod:`celeste.infer`).  :func:`box_images` is the stage's one entry point for a
box: the cutouts of every field and band over the box's extended region, their sky
refined (:func:`refine_sky`), and a PSF mixture per image (:func:`psf_mixture`, the one
place where PSF mixtures are made).  Pixel coordinates are 0-based, x = column, y = row.
"""
import logging
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import BANDS
from .errors import NumericalError
from .psf import fit_psf_mixture

log = logging.getLogger("celeste.images")

#: pixels added around a box's extended region when cutting images (the PSF of a source at
#: the region's edge reaches this far with most of its light)
PAD_PX = 8


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


# ---------------------------------------------------------------------------- the images of a box

def box_images(data_dir, fields, bands, region, options):
    """The images of a box: cutouts of every field's bands over a sky region, with PSF mixtures.

    Parameters
    ----------
    data_dir : str
        Root of the SDSS layout (:func:`celeste.sdss.field_paths`).
    fields : list of (run, camcol, field)
        Fields that may overlap the region; those that do not are skipped.
    bands : tuple of int
        Band indices to load.
    region : (ra_min, ra_max, dec_min, dec_max)
        The box's extended region, degrees (ra_min > ra_max crosses RA = 0).
    options : celeste.options.ImageOptions
        ``sky_refine``, ``sky_mesh_px``, ``psf_components``.

    Returns
    -------
    images : list of Image
        One per (field, band) that overlaps the region, its sky refined when
        ``options.sky_refine``.
    psf_mixtures : list of ndarray (K, 6)
        Per image, the mixture (:meth:`celeste.psf.PsfMixture.as_array`) fitted at the
        cutout's centre (the box centre).

    Raises
    ------
    DataError
        A file of a field is missing or unusable (names the file).
    NumericalError
        No PSF mixture could be fitted for an image (:func:`psf_mixture`).
    """
    from .sdss import field_paths, load_field, read_frame_header  # sdss imports Image from here

    images, mixes = [], []
    for (run, camcol, fld) in fields:
        paths = field_paths(data_dir, run, camcol, fld)
        ref_band = 2 if 2 in bands else bands[0]
        hdr = read_frame_header(paths["frame"][ref_band])
        shape = (int(hdr["NAXIS2"]), int(hdr["NAXIS1"]))
        pbox = cutout_bounds(hdr, region, shape)
        if pbox is None:
            continue
        for im in load_field(data_dir, run, camcol, fld, bands=bands, box=pbox):
            if options.sky_refine:
                refine_sky(im, options.sky_mesh_px)
            H, W = im.shape
            mix = psf_mixture(im, 0.5 * (W - 1), 0.5 * (H - 1), options.psf_components)
            images.append(im)
            mixes.append(mix.as_array())
    return images, mixes


def cutout_bounds(header, region, shape, pad_px=PAD_PX):
    """Pixel bounds of a sky region in a frame: its corners and centre, padded and clipped.

    Parameters
    ----------
    header : astropy.io.fits.Header
        Frame header with the celestial WCS.
    region : (ra_min, ra_max, dec_min, dec_max)
        Degrees (ra_min > ra_max crosses RA = 0).
    shape : (int, int)
        (rows, columns) of the frame.
    pad_px : int
        Pixels added on every side.

    Returns
    -------
    (x0, x1, y0, y1) ints or None
        0-based, half-open; None when the region misses the frame.
    """
    from astropy.wcs import WCS

    w = WCS(header)
    ra = np.array([region[0], region[1], region[0], region[1], 0.5 * (region[0] + region[1])])
    if region[0] > region[1]:
        ra[4] = (0.5 * (region[0] + region[1] + 360.0)) % 360.0
    dec = np.array([region[2], region[2], region[3], region[3], 0.5 * (region[2] + region[3])])
    x, y = w.all_world2pix(ra, dec, 0)
    H, W = shape
    x0 = int(max(math.floor(x.min()) - pad_px, 0))
    x1 = int(min(math.ceil(x.max()) + pad_px + 1, W))
    y0 = int(max(math.floor(y.min()) - pad_px, 0))
    y1 = int(min(math.ceil(y.max()) + pad_px + 1, H))
    if x0 >= x1 or y0 >= y1:
        return None
    return (x0, x1, y0, y1)


def refine_sky(image, mesh_px):
    """Add to ``image.sky`` the background left in the sky-subtracted data, in place.

    The SDSS sky model of frames (HDU2) sits slightly low on this survey: on field
    2583-2-136 the sigma-clipped background of counts / iota - sky is +0.0044 nmgy per
    pixel in r (0.15 of the pixel noise).  Unmodelled, such a pedestal summed over a
    source's active pixels is brighter than faint sources, and galaxies grow to absorb it.
    We estimate it with SEP's mesh background (sigma-clipped mode per ``mesh_px`` x
    ``mesh_px`` cell, at least 16 and at most half the image, 3 x 3 median filter, bicubic
    interpolation; Barbary 2016, JOSS 1, 58, following Bertin & Arnouts 1996) on masked
    pixels removed, and add it to the sky (nmgy).  Degenerate images (SEP fails) keep
    their sky, with a warning naming the file.

    Returns
    -------
    float
        The median correction added (nmgy per pixel).
    """
    import sep

    iota = np.asarray(image.iota)[None, :]
    resid = np.ascontiguousarray(image.counts / iota - image.sky, dtype=np.float64)
    H, W = resid.shape
    m = int(max(16, min(mesh_px, H // 2, W // 2)))
    try:
        bkg = sep.Background(resid, mask=np.ascontiguousarray(image.mask), bw=m, bh=m, fw=3, fh=3)
        corr = bkg.back()
    except Exception as exc:  # noqa: BLE001 - sep raises plain Exceptions on degenerate inputs
        log.warning("sky refinement skipped for %s: %s", image.path, exc)
        return 0.0
    image.sky = np.maximum(image.sky + corr, 1e-6)
    return float(np.median(corr))


def psf_mixture(image, x, y, n_components):
    """The PSF of an image at pixel (x, y) as a Gaussian mixture (:func:`celeste.psf.fit_psf_mixture`).

    Fits ``n_components`` Gaussians to the survey PSF stamp ``image.psf_at(x, y)``; when the
    fit degenerates (:class:`NumericalError`, e.g. a component of enormous variance) it is
    logged and the fit retried with one component fewer, down to one.

    Parameters
    ----------
    image : Image
    x, y : float
        0-based pixel position in ``image`` (column, row).
    n_components : int
        Components wanted (``--psf-components``).

    Returns
    -------
    celeste.psf.PsfMixture

    Raises
    ------
    NumericalError
        Every number of components from ``n_components`` down to 1 failed.
    """
    stamp = image.psf_at(x, y)
    source = f"{image.path} (band {BANDS[image.band]}) at pixel ({x:.1f}, {y:.1f})"
    last = None
    for k in range(int(n_components), 0, -1):
        try:
            return fit_psf_mixture(stamp, n_components=k, source=source)
        except NumericalError as exc:
            log.warning("%s%s", exc, f"; trying {k - 1} component(s)" if k > 1 else "")
            last = exc
    raise NumericalError(f"{source}: no PSF mixture of 1 to {n_components} components fits ({last})")
