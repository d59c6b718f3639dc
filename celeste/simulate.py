"""Simulated SDSS fields with known truth, rendered with GalSim (imported only when rendering).

A field is described by a :class:`FieldSpec` and written by :func:`simulate_field` in the
layout the SDSS reader expects (:mod:`celeste.sdss`)::

    <out>/<run>/<camcol>/photoField-<run:06d>-<camcol>.fits
    <out>/<run>/<camcol>/<field>/frame-<b>-<run:06d>-<camcol>-<field:04d>.fits[.bz2]
    <out>/<run>/<camcol>/<field>/psField-<run:06d>-<camcol>-<field:04d>.fits
    <out>/<run>/<camcol>/<field>/fpM-<run:06d>-<b><camcol>-<field:04d>.fits
    <out>/<run>/<camcol>/<field>/truth.fits      (the sources, catalog columns + x, y, kind, ...)
    <out>/<run>/<camcol>/<field>/sim.json        (the spec, the code hash, PSF widths, saturation counts)

File formats
------------
Frames mimic SDSS DR8+ ``frame`` files (SDSS data model, "frame"): HDU0 the sky-subtracted
calibrated image in nmgy with a TAN WCS copied from a real frame (CRPIX moved to the image
centre, CRVAL to the field's sky position; each band keeps its own real CD matrix, so the
bands of a field are not pixel-registered, as in SDSS); HDU1 the calibration vector (nmgy per
DN, one value per column) cut from the real frame's; HDU2 a one-row table ALLSKY (sky in DN on
a grid binned 8 x 8), XINTERP (W,), YINTERP (H,) with the real frames' semantics (the sky at
(y, x) is ALLSKY bilinearly interpolated at (YINTERP[y], XINTERP[x]), see
:func:`celeste.sdss.interpolate_sky`); HDU3 the real frame's astrometry row (ids updated; its
coefficients do not describe the simulated WCS, use HDU0).  The photoField holds the real
template row (GAIN, DARK_VARIANCE, SATURATION_LEVEL, PSF_* ...) with RUN/CAMCOL/FIELD changed.
fpM files are in the real format (one table HDU per mask plane, objects as row spans); the
SATUR plane holds the saturated pixels (below), every other plane is empty.

The sources
-----------
Every field holds, each part switched by its :class:`FieldSpec` entry:

* **the sky's own population** (``KIND_FIELD``): sources drawn with replacement from the SDSS
  Stripe 82 coadd catalog (:func:`celeste.score.truth_from_stripe82`, r in
  ``r_mag_range``) at the catalog's own density (times ``crowding``), uniform positions.
  Stars are the PSF; galaxies are ``frac_dev`` de Vaucouleurs (Sersic n = 4 truncated at 8
  half-light radii) + (1 - frac_dev) exponential, one shared shape (axis ratio, angle east of
  north, circularized half-light radius re sqrt(q)) -- the coadd's own model;
* **blends** (``KIND_BLEND``): ``n_blends`` pairs 1-3" apart (``blend_sep_arcsec``), both
  members drawn from the catalog (primary r 16-21.5, companion r 17-22.5), both labelled;
* **very bright, large galaxies** (``KIND_BRIGHT_GALAXY``): r in ``bright_galaxy_r`` (12.5-14),
  circularized half-light radius of the whole galaxy in ``bright_galaxy_hlr_arcsec`` (4-10");
  a Sersic bulge (n in [1.5, 3.5] or [4.5, 6]) plus a Sersic disk (n in [0.55, 0.85] or
  [1.15, 1.6]) -- indices never 1 or 4, so the exp/dev prototypes cannot fit them exactly --
  each truncated at 8 of its half-light radii if n > 1 (beyond, an n <= 1 profile holds less
  than 3e-5 of its light), bulge radius 0.15-0.5 of the disk's, bulge
  fraction B/T 0.1-0.7 in r, one axis ratio (drawn from the coadd galaxies, >= 0.2) and angle;
  the bulge takes the colours of a coadd galaxy with frac_dev >= 0.8 and the disk those of
  one with frac_dev <= 0.2 (a colour gradient the one-colour model lacks).  Truth:
  ``gal_frac_dev`` = B/T in r, ``gal_radius_arcsec`` = the composite's circularized
  half-light radius in r (:func:`composite_hlr`), ``sersic_n_bulge``, ``sersic_n_disk``;
* **bright stars** (``KIND_BRIGHT_STAR``): r in ``bright_star_r`` (12-15), colours of a coadd
  star; with the PSF wing and saturation below they are the hardest part of a real field;
* **a star cluster** (``KIND_CLUSTER``): ``cluster_stars`` coadd stars (r 15-23.5) with a
  Plummer surface density Sigma(R) ~ (1 + R^2/a^2)^-2 (Plummer 1911, MNRAS 71, 460), a =
  ``cluster_radius_arcsec``, cut at 4a; the projected radius is drawn by inverting
  M(<R) / M = R^2 / (R^2 + a^2).

Bright objects are placed at least 60 px from the image edge and apart from each other.

The PSF
-------
The core PSF of every source is the real psField Karhunen-Loeve reconstruction at the source's
own position in its band (:func:`celeste.sdss.read_psfield`, the full 51 x 51 stamp, the
model the reader gives the inference), drawn as ``galsim.InterpolatedImage`` with
``method='no_pixel'`` (psField stamps include the pixel response).  Its spatial variation is
the real one; ``psf_variation = k`` writes a psField whose KL weights vary k times as much
around the field centre (:func:`scale_psfield_variation`: w'(x, y) = w(c) + k (w(x, y) - w(c)),
an exact rewrite of the polynomial coefficients) and renders with it -- the file in the field
describes the PSF used, as in real data.  ``sim.json`` records the PSF's FWHM (adaptive
moments, ``galsim.hsm``) over a 5 x 5 grid across the field in every band
(:func:`psf_width_range`).

**Wings** (``psf_wings``).  psField KL stamps carry a star's light only to about 12 px (4.8")
from its centre and are zero (to their noise) beyond; real SDSS stars continue in a power law.
SDSS photo's own radial PSF model (SDSS data model, photoField: PSF_SIGMA1, PSF_SIGMA2, PSF_B,
PSF_P0, PSF_BETA, PSF_SIGMAP; Stoughton et al. 2002, AJ 123, 485, Sec. 4.4) is, at radius r
(pixels),

    psf(r) ~ exp(-r^2 / 2 s1^2) + b exp(-r^2 / 2 s2^2) + p0 (1 + r^2 / (beta sP^2))^(-beta/2),

and its power-law term is a Moffat profile with index beta/2 and scale radius sP sqrt(beta).
The simulator adds that power law, with the amplitude of the template photoField's fit relative
to the model's total (:func:`wing_parameters`; a band whose fit is degenerate, PSF_P0 < 1e-4,
takes the median of the other bands' parameters), from the radius r_in where the psField
stamp's azimuthal mean falls below it (10-12 px for the shipped psField;
:func:`wing_start_radius`; the stamp is tapered to zero over r_in +- 2 px, :func:`stamp_taper`,
since beyond r_in it holds only its reconstruction's noise) out to R_w: where the wing's
surface brightness falls to ``WING_EPS`` = 0.01 of the sky noise per pixel, at most
``WING_MAX_PX`` = 300 px (sources whose wing never reaches that level get none).  The source's
flux is conserved: the core carries (1 - f_w) of it, the wing f_w, the wing's share between
r_in and R_w -- 1.5-2.6% of an r = 12 star's flux in u, g, r, z and 6% in i, whose photoField
slope is shallow (beta = 2.3); ``python bench/simulate.py --wing-table`` prints the figures.
For galaxies the wing is the galaxy's core image convolved with the wing ring
(the extra convolution by the PSF core is negligible at these radii).  The inference reads only
the psField: the wing is model mismatch, as on the sky.

Noise and saturation
--------------------
Expected electrons (model / calibration + sky_DN) * gain, a Poisson draw, plus Gaussian
read/dark noise of variance DARK_VARIANCE (DN^2); DN = electrons / gain.  With
``saturation``, pixels above the band's photoField SATURATION_LEVEL (DN) are clipped to it and
their excess charge bleeds along the column (half up, half down, filling each pixel to the
level before moving on; charge reaching the frame edge is lost) -- :func:`saturate`.  The
saturated pixels, grown by one pixel (SDSS photo flags the neighbours of saturated pixels: the
smallest SATUR objects of the real 2583-2-136 fpM files are a pixel and its 4 neighbours),
form the objects of the fpM SATUR plane.  The frame is (DN - sky_DN) * calibration, the
exact inverse of the reader's counts_e = (frame / calibration + sky_DN) * gain.

Caveat: the psField stamps' first moments are off their centre pixel by up to ~0.2 px; a
source's truth position is the stamp centre, as the reader's ``psf_at`` assumes.

CLI: ``python bench/simulate.py`` (:func:`main`).
"""
import argparse
import bz2
import hashlib
import json
import math
import os
import shutil
import sys
from dataclasses import asdict, dataclass

import numpy as np

from . import BANDS
from .errors import ConfigError, DataError
from .score import flux_to_mag, truth_from_stripe82, write_catalog
from .sdss import ARCSEC_PER_PX, interpolate_sky, read_psfield
from .tangent import pixel_to_sky_jacobian

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CATALOG = os.path.join(ROOT, "tests", "data", "stripe82_coadd_94_1_12.fits")
DEFAULT_PSFIELD = os.path.join(ROOT, "tests", "data", "psField-000094-1-0012.fits")
DEFAULT_TEMPLATE = os.path.join(ROOT, "data", "sdss", "2583", "2", "136")
TEMPLATE_RUN, TEMPLATE_CAMCOL, TEMPLATE_FIELD = 2583, 2, 136

#: allsky grid binning (pixels per grid cell), as in SDSS frames
SKY_BIN = 8
#: side of the psField stamps drawn (the whole KL eigen-image)
PSF_SIZE = 51
#: the wing is never drawn beyond this radius (pixels; 119 arcsec)
WING_MAX_PX = 300.0
#: the wing of a source is drawn out to where it falls to this fraction of the sky noise per pixel
WING_EPS = 0.01
#: truncation of every Sersic component, in its half-light radii
SERSIC_TRUNC = 8.0
#: bright objects keep this far from the image edge (pixels)
BRIGHT_EDGE_PX = 60.0
#: saturated pixels are grown by this many pixels in the fpM SATUR plane
SATUR_GROW_PX = 1

KIND_FIELD, KIND_BLEND, KIND_BRIGHT_GALAXY, KIND_BRIGHT_STAR, KIND_CLUSTER = 0, 1, 2, 3, 4
KIND_NAMES = {KIND_FIELD: "field", KIND_BLEND: "blend", KIND_BRIGHT_GALAXY: "bright galaxy",
              KIND_BRIGHT_STAR: "bright star", KIND_CLUSTER: "cluster"}

#: Sersic index ranges of the bright galaxies (unions of intervals avoiding 4 and 1)
BULGE_N = ((1.5, 3.5), (4.5, 6.0))
DISK_N = ((0.55, 0.85), (1.15, 1.6))

_TEMPLATE_CACHE = {}
_COADD_CACHE = {}


@dataclass(frozen=True)
class FieldSpec:
    """What one simulated field holds (see the module docstring for each part).

    Attributes
    ----------
    run, camcol, field : int
        SDSS identifiers of the simulated field.
    seed : int
        Seed of every random choice (positions, sources, noise).
    shape : (int, int)
        Image (H, W) pixels; (1489, 2048) is a full SDSS frame.
    center_radec : (float, float)
        Sky position (deg) of the image centre.
    n_sources : int or None
        Sources of the sky's own population; None: the coadd catalog's density over the image.
    crowding : float
        Multiplies the population's number (density).
    r_mag_range : (float, float)
        r magnitudes of catalog sources eligible for the population.
    n_blends : int
        Blended pairs added.
    blend_sep_arcsec : (float, float)
        Range of the pairs' separations.
    n_bright_galaxies : int
    bright_galaxy_r, bright_galaxy_hlr_arcsec : (float, float)
    n_bright_stars : int
    bright_star_r : (float, float)
    cluster_stars : int
        Stars of the Plummer cluster (0: none).
    cluster_radius_arcsec : float
        Plummer radius a.
    cluster_center_px : (float, float) or None
        (x, y) in r pixels; None: the image centre.
    psf_variation : float
        k >= 0: the psField's spatial variation multiplied by k (1: the real one).
    psf_wings : bool
        Add the power-law wing beyond the psField stamp.
    saturation : bool
        Clip and bleed pixels above the saturation level and flag them in fpM SATUR.
    """

    run: int = 9999
    camcol: int = 1
    field: int = 1
    seed: int = 0
    shape: tuple = (1489, 2048)
    center_radec: tuple = (336.665, -0.93)
    n_sources: int = None
    crowding: float = 1.0
    r_mag_range: tuple = (14.0, 23.5)
    n_blends: int = 0
    blend_sep_arcsec: tuple = (1.0, 3.0)
    n_bright_galaxies: int = 0
    bright_galaxy_r: tuple = (12.5, 14.0)
    bright_galaxy_hlr_arcsec: tuple = (4.0, 10.0)
    n_bright_stars: int = 0
    bright_star_r: tuple = (12.0, 15.0)
    cluster_stars: int = 0
    cluster_radius_arcsec: float = 30.0
    cluster_center_px: tuple = None
    psf_variation: float = 1.0
    psf_wings: bool = True
    saturation: bool = True

    def validate(self):
        """Raise :class:`ConfigError` naming the first bad attribute."""
        h, w = self.shape
        if int(h) < 16 or int(w) < 16:
            raise ConfigError(f"shape: image must be at least 16 x 16 pixels, got {self.shape}")
        if not self.crowding > 0:
            raise ConfigError(f"crowding: must be > 0, got {self.crowding}")
        for name in ("n_sources", "n_blends", "n_bright_galaxies", "n_bright_stars", "cluster_stars"):
            v = getattr(self, name)
            if v is not None and v < 0:
                raise ConfigError(f"{name}: must be >= 0, got {v}")
        for name in ("r_mag_range", "blend_sep_arcsec", "bright_galaxy_r", "bright_galaxy_hlr_arcsec",
                     "bright_star_r"):
            lo, hi = getattr(self, name)
            if not lo <= hi:
                raise ConfigError(f"{name}: need low <= high, got {getattr(self, name)}")
        if not self.psf_variation >= 0:
            raise ConfigError(f"psf_variation: must be >= 0, got {self.psf_variation}")
        if not self.cluster_radius_arcsec > 0:
            raise ConfigError(f"cluster_radius_arcsec: must be > 0, got {self.cluster_radius_arcsec}")
        if (self.n_bright_galaxies or self.n_bright_stars) and min(h, w) <= 2 * BRIGHT_EDGE_PX:
            raise ConfigError(f"shape: bright objects need an image larger than {2 * BRIGHT_EDGE_PX:.0f} px")

    def to_json(self):
        """The spec as a JSON-able dict (tuples as lists)."""
        return json.loads(json.dumps(asdict(self)))


def code_hash():
    """SHA-256 (16 hex digits) of this module's source: a rendered field is reused only if it matches."""
    with open(os.path.abspath(__file__), "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()[:16]


# ----------------------------------------------------------------- real inputs
def read_template(template_dir=DEFAULT_TEMPLATE):
    """Header, calibration, sky, gain and mask-format facts from a real SDSS field.

    Parameters
    ----------
    template_dir : str
        Directory holding ``frame-<b>-002583-2-0136.fits.bz2`` and fpM files;
        ``photoField-002583-2.fits`` is in its parent.

    Returns
    -------
    dict
        ``header[b]`` (fitsio header of HDU0), ``calibration[b]`` (2048,) nmgy/DN,
        ``sky_dn[b]`` mean ALLSKY (DN), ``astrom[b]`` HDU3 row, ``photofield_row`` (1,)
        structured, ``photofield_header``, ``fpm_header``, ``fpm_types`` (mask-type table).

    Raises
    ------
    DataError
        A template file is missing or unreadable.
    """
    import fitsio

    key = os.path.abspath(template_dir)
    if key in _TEMPLATE_CACHE:
        return _TEMPLATE_CACHE[key]
    tag = f"{TEMPLATE_RUN:06d}-{TEMPLATE_CAMCOL}-{TEMPLATE_FIELD:04d}"
    out = {"header": {}, "calibration": {}, "sky_dn": {}, "astrom": {}}
    pf = os.path.join(os.path.dirname(template_dir), f"photoField-{TEMPLATE_RUN:06d}-{TEMPLATE_CAMCOL}.fits")
    try:
        for b in BANDS:
            path = os.path.join(template_dir, f"frame-{b}-{tag}.fits.bz2")
            with fitsio.FITS(path) as f:
                out["header"][b] = f[0].read_header()
                out["calibration"][b] = np.asarray(f[1].read(), np.float64)
                out["sky_dn"][b] = float(np.mean(f[2].read()["ALLSKY"][0]))
                out["astrom"][b] = f[3].read()
        with fitsio.FITS(pf) as f:
            rows = f[1].read()
            out["photofield_row"] = rows[rows["FIELD"] == TEMPLATE_FIELD]
            out["photofield_header"] = f[0].read_header()
        fpm = os.path.join(template_dir, f"fpM-{TEMPLATE_RUN:06d}-r{TEMPLATE_CAMCOL}-{TEMPLATE_FIELD:04d}.fits")
        with fitsio.FITS(fpm) as f:
            out["fpm_header"] = f[0].read_header()
            out["fpm_types"] = f[len(f) - 1].read()
    except OSError as exc:
        raise DataError(f"{template_dir}: cannot read the template SDSS field ({exc})") from None
    if len(out["photofield_row"]) != 1:
        raise DataError(f"{pf}: no row for field {TEMPLATE_FIELD}")
    _TEMPLATE_CACHE[key] = out
    return out


# ----------------------------------------------------------------------- sky
def sky_grid(shape, sky_dn, slope=0.01):
    """ALLSKY grid and XINTERP/YINTERP vectors for an image of ``shape`` (H, W).

    Grid cell k covers columns 8k .. 8k+7 (centre 8k + 3.5), so XINTERP[x] = (x - 3.5) / 8 as in
    real frames; rows carry the real frames' one-cell margin, YINTERP[y] = (y - 3.5) / 8 + 1.
    The sky is ``sky_dn`` (DN) with a linear ramp of +-``slope``/2 (fractional) along rows.

    Returns
    -------
    allsky : ndarray (ny, nx) float32, DN
    xinterp : ndarray (W,) float32
    yinterp : ndarray (H,) float32
    """
    h, w = shape
    nx = int(math.ceil(w / SKY_BIN))
    ny = int(math.ceil((h + SKY_BIN) / SKY_BIN)) + 4
    xinterp = ((np.arange(w) - 3.5) / SKY_BIN).astype(np.float32)
    yinterp = ((np.arange(h) - 3.5) / SKY_BIN + 1.0).astype(np.float32)
    ramp = 1.0 + slope * (np.arange(ny) - (ny - 1) / 2.0) / max(ny - 1, 1)
    allsky = (sky_dn * ramp[:, None] * np.ones((1, nx))).astype(np.float32)
    return allsky, xinterp, yinterp


# ----------------------------------------------------------------- the PSF
def scale_psfield_variation(src, dst, factor, center_xy):
    """Write a psField whose PSF varies ``factor`` times as much around ``center_xy`` as ``src``'s.

    The KL weights are polynomials w_k(x, y) = sum_ij C_k[i, j] r^i c^j (see
    :class:`celeste.sdss.PsfModel`).  The new weights w'_k = w_k(c) + factor (w_k - w_k(c)),
    with c the centre, are the same kind of polynomial: C' = factor C, plus (1 - factor)
    w_k(c) on the constant term.  So the PSF at the centre is unchanged and every departure
    from it is scaled.  Every other HDU and column is copied.

    Parameters
    ----------
    src, dst : str
        psField paths.
    factor : float
    center_xy : (float, float)
        Frame pixel (x, y) around which the variation is scaled.

    Raises
    ------
    DataError
        ``src`` is unreadable.
    """
    import warnings

    from astropy.io import fits

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(src) as hdul:
                for b in range(len(BANDS)):
                    model = read_psfield(src, b, size=PSF_SIZE)
                    wc = model.weights(*center_xy)
                    data = hdul[b + 1].data
                    c = np.array(data["C"], dtype=np.float64)
                    nrb = np.asarray(data["NROW_B"]).astype(int)
                    ncb = np.asarray(data["NCOL_B"]).astype(int)
                    new = factor * c
                    for k in range(len(c)):
                        new[k, nrb[k]:, :] = c[k, nrb[k]:, :]  # unused entries as they were
                        new[k, :, ncb[k]:] = c[k, :, ncb[k]:]
                        new[k, 0, 0] += (1.0 - factor) * wc[k]
                    data["C"] = new.astype(data["C"].dtype)
                hdul.writeto(dst, overwrite=True)
    except OSError as exc:
        raise DataError(f"{src}: cannot rewrite the psField ({exc})") from None


def psf_fwhm_arcsec(stamp):
    """FWHM (arcsec) of a PSF stamp from its adaptive second moments (``galsim.hsm``): 2.3548 sigma."""
    import galsim

    mom = galsim.hsm.FindAdaptiveMom(galsim.ImageD(np.asarray(stamp, np.float64), scale=1.0))
    return 2.0 * math.sqrt(2.0 * math.log(2.0)) * mom.moments_sigma * ARCSEC_PER_PX


def psf_width_range(psfield, shape, grid=5):
    """FWHM of the psField PSF over a ``grid`` x ``grid`` lattice covering an image of ``shape``.

    Returns
    -------
    dict band letter -> {"min", "max", "centre"} FWHM in arcsec
    """
    h, w = shape
    out = {}
    for b, name in enumerate(BANDS):
        model = read_psfield(psfield, b, size=PSF_SIZE)
        vals = [psf_fwhm_arcsec(model.psf_at(x, y)) for y in np.linspace(0, h - 1, grid)
                for x in np.linspace(0, w - 1, grid)]
        out[name] = {"min": round(min(vals), 4), "max": round(max(vals), 4),
                     "centre": round(psf_fwhm_arcsec(model.psf_at(0.5 * (w - 1), 0.5 * (h - 1))), 4)}
    return out


def _moffat_integral(rd, beta_m, radius):
    """Integral of (1 + r^2/rd^2)^-beta_m over the disc of ``radius`` (px^2): pi rd^2 (1 - (1 + R^2/rd^2)^(1-beta_m)) / (beta_m - 1)."""
    return math.pi * rd * rd * (1.0 - (1.0 + radius * radius / (rd * rd)) ** (1.0 - beta_m)) / (beta_m - 1.0)


def wing_start_radius(stamp, wing):
    """Radius (px) where a PSF stamp's azimuthal mean first falls below the power-law wing ``wing``.

    psField stamps carry the PSF's light to about 12 px and are zero (to their noise) beyond:
    the wing takes over from the first 1-px ring whose mean is below the power law
    A (1 + r^2/rd^2)^-beta_m.  Returns the ring's inner radius, at most PSF_SIZE // 2.
    """
    p = np.asarray(stamp, np.float64)
    p = p / p.sum()
    n = p.shape[0]
    yy, xx = np.mgrid[:n, :n]
    r = np.hypot(xx - n // 2, yy - n // 2)
    for a in range(2, n // 2):
        ring = (r >= a) & (r < a + 1)
        if p[ring].mean() < wing["amp"] * (1.0 + (a + 0.5) ** 2 / wing["rd"] ** 2) ** (-wing["beta"]):
            return float(a)
    return float(n // 2)


def stamp_taper(r_in, width=2.0, size=PSF_SIZE):
    """Weights (size, size) that keep a stamp within ``r_in - width`` px and zero it beyond ``r_in + width``.

    A raised cosine in between.  Beyond r_in the psField stamp holds only its KL reconstruction's
    noise (about 1e-5 of the total per pixel, negative on average); the wing replaces it.
    """
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(xx - size // 2, yy - size // 2)
    t = np.clip((r - (r_in - width)) / (2 * width), 0.0, 1.0)
    return 0.5 * (1.0 + np.cos(math.pi * t))


def wing_parameters(photofield_row, psfield=None, center_xy=(1023.5, 744.0)):
    """Power-law wing of each band from SDSS photo's PSF fit (photoField PSF_* columns).

    The photoField model (module docstring) is core(r) + p0 (1 + r^2/(beta sP^2))^(-beta/2), with
    core(r) = exp(-r^2/2 s1^2) + b exp(-r^2/2 s2^2).  Normalized to unit flux within
    ``WING_MAX_PX``, the power law's surface brightness per unit source flux is
    A (1 + r^2/rd^2)^(-beta_m) with beta_m = beta/2, rd = sP sqrt(beta) and
    A = p0 / (2 pi s1^2 + b 2 pi s2^2 + p0 I(WING_MAX_PX)), I the Moffat disc integral.
    Bands whose fit is degenerate (PSF_P0 < 1e-4 or PSF_BETA <= 2.05) take the median of the
    other bands' (A, beta_m, rd).  The wing starts at ``r_in``: where the psField stamp at
    ``center_xy`` falls below it (:func:`wing_start_radius`), or PSF_SIZE // 2 without ``psfield``.

    Returns
    -------
    list of dict, one per band
        ``amp`` (A, per px^2 per unit flux), ``beta`` (beta_m), ``rd`` (px), ``r_in`` (px),
        ``fitted`` (bool: the band's own fit).

    Raises
    ------
    DataError
        No band has a usable fit.
    """
    row = photofield_row
    out = []
    for b in range(len(BANDS)):
        s1, s2, bb = (float(np.ravel(row[k])[b]) for k in ("PSF_SIGMA1", "PSF_SIGMA2", "PSF_B"))
        p0, beta, sp = (float(np.ravel(row[k])[b]) for k in ("PSF_P0", "PSF_BETA", "PSF_SIGMAP"))
        ok = p0 >= 1e-4 and beta > 2.05 and sp > 0 and s1 > 0
        if ok:
            bm, rd = beta / 2.0, sp * math.sqrt(beta)
            norm = 2 * math.pi * s1 * s1 + bb * 2 * math.pi * s2 * s2 + p0 * _moffat_integral(rd, bm, WING_MAX_PX)
            out.append({"amp": p0 / norm, "beta": bm, "rd": rd, "fitted": True})
        else:
            out.append(None)
    good = [w for w in out if w is not None]
    if not good:
        raise DataError("photoField row: no band has a usable PSF power-law fit (PSF_P0, PSF_BETA)")
    med = {k: float(np.median([w[k] for w in good])) for k in ("amp", "beta", "rd")}
    out = [w if w is not None else dict(med, fitted=False) for w in out]
    for b, w in enumerate(out):
        if psfield is None:
            w["r_in"] = float(PSF_SIZE // 2)
        else:
            w["r_in"] = wing_start_radius(read_psfield(psfield, b, size=PSF_SIZE).psf_at(*center_xy), w)
    return out


def sky_sd_nmgy(template, band, calibration):
    """Sky noise per pixel (nmgy) of ``band`` (letter) on the template's sky: sqrt(sky e- + dark var e-^2) / iota."""
    bi = BANDS.index(band)
    row = template["photofield_row"][0]
    gain, dark = float(row["GAIN"][bi]), float(row["DARK_VARIANCE"][bi])
    return math.sqrt(template["sky_dn"][band] * gain + dark * gain ** 2) / gain * float(np.mean(calibration))


def wing_radius(flux, wing, sky_sd):
    """Outer radius R_w (px) of a source's wing: where A F (1 + R^2/rd^2)^-beta_m = WING_EPS sky_sd, <= WING_MAX_PX.

    Returns 0 when the wing never reaches that level beyond its start ``wing["r_in"]``.
    """
    peak = wing["amp"] * flux / (WING_EPS * sky_sd)
    if peak <= 1.0:
        return 0.0
    r = wing["rd"] * math.sqrt(peak ** (1.0 / wing["beta"]) - 1.0)
    r = min(r, WING_MAX_PX)
    return r if r > wing["r_in"] + 1 else 0.0


def wing_fraction(wing, outer):
    """Share of a source's flux in its wing between ``wing["r_in"]`` and ``outer`` (px)."""
    if outer <= wing["r_in"]:
        return 0.0
    return wing["amp"] * (_moffat_integral(wing["rd"], wing["beta"], outer)
                          - _moffat_integral(wing["rd"], wing["beta"], wing["r_in"]))


def wing_table(template_dir=DEFAULT_TEMPLATE, psfield=DEFAULT_PSFIELD, r_mag=12.0):
    """Per band: the wing's parameters and the flux share f_w of a star of r magnitude ``r_mag`` (template sky).

    Returns
    -------
    list of dict (band, beta, rd_px, r_in_px, fitted, f_w, r_w_px, f_w_max)
    """
    tpl = read_template(template_dir)
    row = tpl["photofield_row"][0]
    rows = []
    for b, w in enumerate(wing_parameters(row, psfield)):
        sky_sd = sky_sd_nmgy(tpl, BANDS[b], tpl["calibration"][BANDS[b]])
        flux = 10 ** ((22.5 - r_mag) / 2.5)
        rw = wing_radius(flux, w, sky_sd)
        rows.append({"band": BANDS[b], "beta": round(w["beta"], 3), "rd_px": round(w["rd"], 3),
                     "r_in_px": w["r_in"], "fitted": w["fitted"], "f_w": round(wing_fraction(w, rw), 4),
                     "r_w_px": round(rw, 1), "f_w_max": round(wing_fraction(w, WING_MAX_PX), 4)})
    return rows


# ----------------------------------------------------------------- sources
def _coadd(catalog_path):
    """The converted Stripe 82 coadd catalog and its usable rows (cached per path)."""
    key = os.path.abspath(catalog_path)
    if key not in _COADD_CACHE:
        if not os.path.exists(catalog_path):
            raise DataError(f"{catalog_path}: no such file")
        cat = truth_from_stripe82(catalog_path)
        ok = np.ones(len(cat["ra"]), bool)
        for b in BANDS:
            ok &= np.isfinite(cat[f"flux_{b}"]) & (cat[f"flux_{b}"] > 0)
        gal = cat["is_star"] < 0.5
        shape_ok = (np.isfinite(cat["gal_axis_ratio"]) & np.isfinite(cat["gal_angle_deg"])
                    & np.isfinite(cat["gal_radius_arcsec"]) & np.isfinite(cat["gal_frac_dev"]))
        ok &= ~gal | shape_ok
        _COADD_CACHE[key] = (cat, ok)
    return _COADD_CACHE[key]


def catalog_density(catalog_path, r_mag_range):
    """Sources per square degree of the coadd catalog with r in ``r_mag_range`` (its bounding box as area)."""
    cat, ok = _coadd(catalog_path)
    sel = ok & (cat["mag_r"] >= r_mag_range[0]) & (cat["mag_r"] <= r_mag_range[1])
    dec0 = math.radians(float(np.mean(cat["dec"])))
    area = np.ptp(cat["ra"]) * math.cos(dec0) * np.ptp(cat["dec"])
    return float(sel.sum()) / area


def _empty_sources(n):
    return {"x": np.zeros(n), "y": np.zeros(n), "kind": np.zeros(n, np.int64), "is_star": np.zeros(n),
            "flux": np.zeros((n, len(BANDS))), "bulge_frac": np.full((n, len(BANDS)), np.nan),
            "n_bulge": np.full(n, np.nan), "n_disk": np.full(n, np.nan), "r_bulge": np.full(n, np.nan),
            "r_disk": np.full(n, np.nan), "q": np.full(n, np.nan), "angle": np.full(n, np.nan),
            "radius": np.full(n, np.nan)}


def _concat_sources(parts):
    parts = [p for p in parts if len(p["x"])]
    if not parts:
        return _empty_sources(0)
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def draw_sources(rng, n, catalog_path=DEFAULT_CATALOG, r_mag_range=(14.0, 23.5), stars=None, kind=KIND_FIELD):
    """Draw ``n`` sources (with replacement) from the Stripe 82 coadd catalog, positions zero.

    Parameters
    ----------
    rng : numpy.random.Generator
    n : int
    catalog_path : str
    r_mag_range : (float, float)
        r magnitudes eligible.
    stars : bool or None
        Only stars (True), only galaxies (False) or both (None).
    kind : int
        ``KIND_*`` label of the drawn sources.

    Returns
    -------
    dict of arrays (see :func:`_empty_sources`): ``flux`` (n, 5) nmgy; galaxies are
    frac_dev de Vaucouleurs + exponential with one radius (``n_bulge`` 4, ``n_disk`` 1,
    ``r_bulge`` = ``r_disk`` = ``radius``, circularized, clipped to [0.1, 6] arcsec),
    axis ratio clipped to [0.1, 1]; galaxy entries are NaN for stars.

    Raises
    ------
    ConfigError
        No catalog source is eligible.
    DataError
        The catalog is missing or not a coadd table.
    """
    cat, ok = _coadd(catalog_path)
    ok = ok & (cat["mag_r"] >= r_mag_range[0]) & (cat["mag_r"] <= r_mag_range[1])
    if stars is not None:
        ok &= (cat["is_star"] >= 0.5) == bool(stars)
    idx = np.flatnonzero(ok)
    if len(idx) == 0:
        raise ConfigError(f"r_mag_range: no catalog source of {catalog_path} within {r_mag_range}"
                          + ("" if stars is None else (" (stars)" if stars else " (galaxies)")))
    src = _empty_sources(n)
    if n == 0:
        return src
    pick = rng.choice(idx, size=n, replace=True)
    src["kind"][:] = kind
    src["is_star"] = cat["is_star"][pick].astype(np.float64)
    src["flux"] = np.stack([cat[f"flux_{b}"][pick] for b in BANDS], axis=1)
    gal = src["is_star"] < 0.5
    fd = np.clip(cat["gal_frac_dev"][pick], 0.0, 1.0)
    src["bulge_frac"] = np.where(gal[:, None], fd[:, None] * np.ones((1, len(BANDS))), np.nan)
    rad = np.clip(cat["gal_radius_arcsec"][pick], 0.1, 6.0)
    src["n_bulge"] = np.where(gal, 4.0, np.nan)
    src["n_disk"] = np.where(gal, 1.0, np.nan)
    src["radius"] = np.where(gal, rad, np.nan)
    src["r_bulge"] = src["radius"].copy()
    src["r_disk"] = src["radius"].copy()
    src["q"] = np.where(gal, np.clip(cat["gal_axis_ratio"][pick], 0.1, 1.0), np.nan)
    src["angle"] = np.where(gal, np.mod(cat["gal_angle_deg"][pick], 180.0), np.nan)
    return src


def _uniform_in(rng, lo, hi, n):
    return rng.uniform(lo, hi, n) if n else np.zeros(0)


def _draw_from_intervals(rng, intervals):
    widths = np.array([b - a for a, b in intervals])
    k = rng.choice(len(intervals), p=widths / widths.sum())
    return float(rng.uniform(*intervals[k]))


def _sersic_cdf(n_index, hlr, radius):
    """Fraction of a Sersic profile's flux within ``radius`` (same units as ``hlr``), as the renderer draws it.

    n <= 1: untruncated (less than 3e-5 of the light lies beyond SERSIC_TRUNC half-light radii);
    otherwise truncated there (GalSim normalizes the truncated profile, its half-light radius is ``hlr``).  The profile is
    exp(-(r/r0)^(1/n)), so the enclosed flux is the regularized lower incomplete gamma
    P(2n, (R/r0)^(1/n)) (Graham & Driver 2005, PASA 22, 118, eq. 2), divided by its value at the
    truncation.
    """
    import galsim
    from scipy.special import gammainc

    if n_index <= 1.0:
        r0 = galsim.Sersic(n_index, half_light_radius=hlr).scale_radius
        return float(gammainc(2 * n_index, (radius / r0) ** (1 / n_index)))
    trunc = SERSIC_TRUNC * hlr
    r0 = galsim.Sersic(n_index, half_light_radius=hlr, trunc=trunc).scale_radius
    if radius >= trunc:
        return 1.0
    return float(gammainc(2 * n_index, (radius / r0) ** (1 / n_index))
                 / gammainc(2 * n_index, (trunc / r0) ** (1 / n_index)))


def composite_hlr(bulge_frac, n_bulge, r_bulge, n_disk, r_disk):
    """Half-light radius of bulge + disk (both circular, or both sheared alike: then circularized).

    Solves bulge_frac C_b(R) + (1 - bulge_frac) C_d(R) = 1/2 for R with the components'
    enclosed-flux fractions :func:`_sersic_cdf` (Brent's method).  A common shear preserves
    area, so for components sharing axis ratio and angle the result is the circularized
    half-light radius (major-axis radius times sqrt(q)).
    """
    from scipy.optimize import brentq

    def f(radius):
        return bulge_frac * _sersic_cdf(n_bulge, r_bulge, radius) + (1 - bulge_frac) * _sersic_cdf(
            n_disk, r_disk, radius) - 0.5

    hi = SERSIC_TRUNC * max(r_bulge, r_disk)
    return float(brentq(f, 1e-6 * hi, hi, xtol=1e-10 * hi))


def bright_galaxies(rng, n, catalog_path, r_range, hlr_range):
    """``n`` bright bulge + disk Sersic galaxies (module docstring); positions zero."""
    src = _empty_sources(n)
    if n == 0:
        return src
    cat, ok = _coadd(catalog_path)
    gal = ok & (cat["is_star"] < 0.5) & (cat["mag_r"] < 21.0)
    red = np.flatnonzero(gal & (cat["gal_frac_dev"] >= 0.8))
    blue = np.flatnonzero(gal & (cat["gal_frac_dev"] <= 0.2))
    qs = np.flatnonzero(gal)
    if min(len(red), len(blue), len(qs)) == 0:
        raise DataError(f"{catalog_path}: too few galaxies to draw bright-galaxy colours from")
    colours = np.stack([cat[f"flux_{b}"] / cat["flux_r"] for b in BANDS], axis=1)  # flux_b / flux_r
    for i in range(n):
        flux_r = 10 ** ((22.5 - rng.uniform(*r_range)) / 2.5)
        bt = rng.uniform(0.1, 0.7)
        nb, nd = _draw_from_intervals(rng, BULGE_N), _draw_from_intervals(rng, DISK_N)
        ratio = rng.uniform(0.15, 0.5)
        target = rng.uniform(*hlr_range)
        unit = composite_hlr(bt, nb, ratio, nd, 1.0)  # disk radius 1: the composite scales linearly
        rdisk = target / unit
        bulge = bt * flux_r * colours[rng.choice(red)]
        disk = (1 - bt) * flux_r * colours[rng.choice(blue)]
        src["kind"][i] = KIND_BRIGHT_GALAXY
        src["is_star"][i] = 0.0
        src["flux"][i] = bulge + disk
        src["bulge_frac"][i] = bulge / (bulge + disk)
        src["n_bulge"][i], src["n_disk"][i] = nb, nd
        src["r_bulge"][i], src["r_disk"][i] = ratio * rdisk, rdisk
        src["radius"][i] = composite_hlr(bt, nb, ratio * rdisk, nd, rdisk)
        src["q"][i] = float(np.clip(cat["gal_axis_ratio"][rng.choice(qs)], 0.2, 1.0))
        src["angle"][i] = rng.uniform(0.0, 180.0)
    return src


def bright_stars(rng, n, catalog_path, r_range):
    """``n`` stars with the colours of coadd stars and r uniform in ``r_range``; positions zero."""
    src = draw_sources(rng, n, catalog_path, (14.0, 21.0), stars=True, kind=KIND_BRIGHT_STAR)
    if n:
        target = 10 ** ((22.5 - rng.uniform(r_range[0], r_range[1], n)) / 2.5)
        src["flux"] = src["flux"] * (target / src["flux"][:, BANDS.index("r")])[:, None]
    return src


def _place_apart(rng, n, shape, margin, min_sep, taken=()):
    """``n`` uniform positions ``margin`` px inside ``shape`` and ``min_sep`` px from each other and ``taken``."""
    h, w = shape
    pts = [tuple(p) for p in taken]
    out = []
    for _ in range(n):
        for _attempt in range(1000):
            x, y = rng.uniform(margin, w - 1 - margin), rng.uniform(margin, h - 1 - margin)
            if all(math.hypot(x - px, y - py) >= min_sep for px, py in pts):
                break
        pts.append((x, y))
        out.append((x, y))
    return np.array(out, np.float64).reshape(-1, 2)


def make_sources(spec, rng, catalog_path=DEFAULT_CATALOG):
    """Every source of a field (module docstring), r-band pixel positions in ``x``, ``y``.

    Returns
    -------
    dict of arrays (:func:`_empty_sources`), the parts concatenated in the order
    population, blends, bright galaxies, bright stars, cluster.
    """
    h, w = (int(spec.shape[0]), int(spec.shape[1]))
    # the sky's own population
    if spec.n_sources is None:
        area = h * w * (ARCSEC_PER_PX / 3600.0) ** 2
        n = int(round(catalog_density(catalog_path, spec.r_mag_range) * area * spec.crowding))
    else:
        n = int(round(spec.n_sources * spec.crowding))
    pop = draw_sources(rng, n, catalog_path, spec.r_mag_range)
    pop["x"] = _uniform_in(rng, -0.5, w - 0.5, n)
    pop["y"] = _uniform_in(rng, -0.5, h - 0.5, n)
    # blended pairs
    nb = int(spec.n_blends)
    prim = draw_sources(rng, nb, catalog_path, (16.0, 21.5), kind=KIND_BLEND)
    comp = draw_sources(rng, nb, catalog_path, (17.0, 22.5), kind=KIND_BLEND)
    prim["x"] = _uniform_in(rng, 10.0, w - 11.0, nb)
    prim["y"] = _uniform_in(rng, 10.0, h - 11.0, nb)
    sep_px = _uniform_in(rng, spec.blend_sep_arcsec[0], spec.blend_sep_arcsec[1], nb) / ARCSEC_PER_PX
    ang = _uniform_in(rng, 0.0, 2 * math.pi, nb)
    comp["x"] = prim["x"] + sep_px * np.cos(ang)
    comp["y"] = prim["y"] + sep_px * np.sin(ang)
    # bright galaxies and stars, apart from each other
    gals = bright_galaxies(rng, int(spec.n_bright_galaxies), catalog_path, spec.bright_galaxy_r,
                           spec.bright_galaxy_hlr_arcsec)
    stars = bright_stars(rng, int(spec.n_bright_stars), catalog_path, spec.bright_star_r)
    min_sep = 150.0 if spec.n_bright_galaxies else 100.0
    xy = _place_apart(rng, len(gals["x"]) + len(stars["x"]), (h, w), BRIGHT_EDGE_PX, min_sep)
    gals["x"], gals["y"] = xy[:len(gals["x"]), 0], xy[:len(gals["x"]), 1]
    stars["x"], stars["y"] = xy[len(gals["x"]):, 0], xy[len(gals["x"]):, 1]
    # Plummer cluster
    nc = int(spec.cluster_stars)
    clu = draw_sources(rng, nc, catalog_path, (15.0, 23.5), stars=True, kind=KIND_CLUSTER)
    if nc:
        cx, cy = spec.cluster_center_px if spec.cluster_center_px is not None else (0.5 * (w - 1), 0.5 * (h - 1))
        a = spec.cluster_radius_arcsec / ARCSEC_PER_PX
        u = rng.uniform(0.0, 16.0 / 17.0, nc)  # M(<R)/M = R^2 / (R^2 + a^2), cut at R = 4a
        rr = a * np.sqrt(u / (1.0 - u))
        phi = rng.uniform(0.0, 2 * math.pi, nc)
        clu["x"], clu["y"] = cx + rr * np.cos(phi), cy + rr * np.sin(phi)
        inside = (clu["x"] > -0.5) & (clu["x"] < w - 0.5) & (clu["y"] > -0.5) & (clu["y"] < h - 0.5)
        clu = {k: v[inside] for k, v in clu.items()}
    return _concat_sources([pop, prim, comp, gals, stars, clu])


# ----------------------------------------------------------------- rendering
def saturate(dn, level):
    """Clip pixels above ``level`` and bleed their excess charge along columns.

    In every column, each run of consecutive pixels above ``level`` is set to ``level``; its
    excess (sum of dn - level) is shared half up, half down the column, filling each next
    pixel up to ``level`` before moving on (a CCD's bleed trail; the charge is conserved
    except what reaches the image edge).

    Parameters
    ----------
    dn : ndarray (H, W) float
        Pixel values (DN, sky included).
    level : float
        Saturation level (DN).

    Returns
    -------
    out : ndarray (H, W) float64
        The clipped and bled image.
    saturated : ndarray (H, W) bool
        Pixels at the level (clipped or filled by the bleed).
    """
    out = np.array(dn, dtype=np.float64, copy=True)
    h, _ = out.shape
    sat = np.zeros(out.shape, bool)
    for c in np.flatnonzero((out > level).any(axis=0)):
        col = out[:, c]
        scol = sat[:, c]
        rows = np.flatnonzero(col > level)
        for run in np.split(rows, np.flatnonzero(np.diff(rows) > 1) + 1):
            a, b = int(run[0]), int(run[-1])
            excess = float(np.sum(col[a:b + 1] - level))
            col[a:b + 1] = level
            scol[a:b + 1] = True
            for start, step, share in ((b + 1, 1, 0.5 * excess), (a - 1, -1, 0.5 * excess)):
                i = start
                while share > 0 and 0 <= i < h:
                    room = level - col[i]
                    if room > 0:
                        if share >= room:
                            col[i] = level
                            scol[i] = True
                            share -= room
                        else:
                            col[i] += share
                            share = 0.0
                    i += step
    return out, sat


def _sersic(n_index, hlr, flux):
    import galsim

    if n_index == 1.0:
        return galsim.Exponential(half_light_radius=hlr, flux=flux)
    if n_index == 4.0:
        return galsim.DeVaucouleurs(half_light_radius=hlr, trunc=SERSIC_TRUNC * hlr, flux=flux)
    if n_index < 1.0:  # nothing to truncate (and GalSim's solver fails for such a far truncation)
        return galsim.Sersic(n_index, half_light_radius=hlr, flux=flux)
    return galsim.Sersic(n_index, half_light_radius=hlr, trunc=SERSIC_TRUNC * hlr, flux=flux)


def _ring(wing, outer, amp_flux):
    """GalSim profile of the wing between ``wing["r_in"]`` and ``outer`` px carrying ``amp_flux`` (pixel units)."""
    import galsim

    i_out = _moffat_integral(wing["rd"], wing["beta"], outer)
    i_in = _moffat_integral(wing["rd"], wing["beta"], wing["r_in"])
    scale = amp_flux / (i_out - i_in)
    return galsim.Add([
        galsim.Moffat(beta=wing["beta"], scale_radius=wing["rd"], trunc=outer, flux=scale * i_out),
        galsim.Moffat(beta=wing["beta"], scale_radius=wing["rd"], trunc=wing["r_in"], flux=-scale * i_in),
    ])


def _fft_convolve(a, b):
    """Full linear convolution of two 2-D arrays by FFT, shape (a + b - 1) per axis."""
    from scipy import fft

    shape = [a.shape[k] + b.shape[k] - 1 for k in range(2)]
    fshape = [fft.next_fast_len(n, real=True) for n in shape]
    out = fft.irfft2(fft.rfft2(a, fshape) * fft.rfft2(b, fshape), fshape)
    return out[:shape[0], :shape[1]]


def _add_stamp(image, stamp_array, x0, y0):
    """Add ``stamp_array`` whose pixel [0, 0] is image pixel (x0, y0); clipped to the image."""
    h, w = image.shape
    sh, sw = stamp_array.shape
    xa, ya = max(x0, 0), max(y0, 0)
    xb, yb = min(x0 + sw, w), min(y0 + sh, h)
    if xa < xb and ya < yb:
        image[ya:yb, xa:xb] += stamp_array[ya - y0:yb - y0, xa - x0:xb - x0]


def render_band(task):
    """Render one band: noise-free model (nmgy), then the noisy, saturated frame (nmgy).

    Parameters
    ----------
    task : dict
        band (int), shape (H, W), psfield (path), seed; per source (n,): x, y (this band's
        pixels), flux (nmgy), is_star, bulge_frac, n_bulge, n_disk, r_bulge, r_disk (arcsec),
        q, angle (deg east of north), jac (n, 2, 2) arcsec/px; calibration (W,) nmgy/DN,
        sky_dn (H, W), gain, dark_variance (DN^2), wing (dict or None), sky_sd (nmgy, for the
        wing's extent), saturation_level (DN or None).

    Returns
    -------
    model : ndarray (H, W) float64
        nmgy, noise-free, no sky, not saturated.
    frame : ndarray (H, W) float32
        nmgy, sky-subtracted, as written to HDU0.
    saturated : ndarray (H, W) bool
        Pixels at the saturation level.
    """
    import galsim

    h, w = task["shape"]
    model = np.zeros((h, w))
    psf_model = read_psfield(task["psfield"], task["band"], size=PSF_SIZE)
    wing = task.get("wing")
    half_psf = PSF_SIZE // 2
    taper = None if wing is None else stamp_taper(wing["r_in"])
    for k in range(len(task["x"])):
        x, y, flux = float(task["x"][k]), float(task["y"][k]), float(task["flux"][k])
        if not flux > 0:
            continue
        rw = wing_radius(flux, wing, task["sky_sd"]) if wing is not None else 0.0
        fw = wing_fraction(wing, rw) if rw > 0 else 0.0
        psf_arr = psf_model.psf_at(x, y)
        if taper is not None:
            psf_arr = psf_arr * taper
            psf_arr /= psf_arr.sum()
        psf = galsim.InterpolatedImage(galsim.ImageD(psf_arr, scale=1.0))
        ix, iy = int(round(x)), int(round(y))
        if task["is_star"][k] == 1:
            obj = psf.withFlux(flux * (1.0 - fw))
            half = half_psf + 2
        else:
            bf = float(task["bulge_frac"][k])
            comps = []
            if bf > 0:
                comps.append(_sersic(float(task["n_bulge"][k]), float(task["r_bulge"][k]), bf))
            if bf < 1:
                comps.append(_sersic(float(task["n_disk"][k]), float(task["r_disk"][k]), 1.0 - bf))
            gal = galsim.Add(comps) if len(comps) > 1 else comps[0]
            q = float(task["q"][k])
            # GalSim's shear angle is measured from +x (east here) towards +y (north): beta = 90 deg - PA
            gal = gal.shear(q=q, beta=(90.0 - float(task["angle"][k])) * galsim.degrees)
            j = task["jac"][k]
            wcs = galsim.JacobianWCS(j[0, 0], j[0, 1], j[1, 0], j[1, 1])
            obj = galsim.Convolve(wcs.toImage(gal), psf).withFlux(flux * (1.0 - fw))
            rmax = SERSIC_TRUNC * max(float(task["r_bulge"][k]), float(task["r_disk"][k]))
            half = min(half_psf + int(math.ceil(rmax / ARCSEC_PER_PX / math.sqrt(q))) + 2, 700)
        bounds = galsim.BoundsI(ix - half, ix + half, iy - half, iy + half)
        stamp = galsim.ImageD(bounds, init_value=0.0, scale=1.0)
        obj.drawImage(image=stamp, method="no_pixel", center=galsim.PositionD(x, y), add_to_image=True)
        _add_stamp(model, stamp.array, ix - half, iy - half)
        if fw > 0:
            if task["is_star"][k] == 1:
                rh = int(math.ceil(rw)) + 2
                wb = galsim.BoundsI(ix - rh, ix + rh, iy - rh, iy + rh)
                wstamp = galsim.ImageD(wb, init_value=0.0, scale=1.0)
                _ring(wing, rw, flux * fw).drawImage(image=wstamp, method="no_pixel", center=galsim.PositionD(x, y),
                                                     add_to_image=True)
                _add_stamp(model, wstamp.array, ix - rh, iy - rh)
            else:
                rh = int(math.ceil(rw)) + 1
                kern = _ring(wing, rw, 1.0).drawImage(nx=2 * rh + 1, ny=2 * rh + 1, scale=1.0, method="no_pixel").array
                core = stamp.array / max(stamp.array.sum(), 1e-300)
                wimg = _fft_convolve(core, kern * (fw * flux / kern.sum()))
                _add_stamp(model, wimg, ix - half - rh, iy - half - rh)
    rng = np.random.default_rng(task["seed"])
    cal = np.asarray(task["calibration"], np.float64)[None, :]
    sky_dn = task["sky_dn"]
    gain = task["gain"]
    expected_e = (model / cal + sky_dn) * gain
    counts_e = rng.poisson(np.clip(expected_e, 0, None)).astype(np.float64)
    counts_e += rng.normal(0.0, math.sqrt(task["dark_variance"]) * gain, counts_e.shape)
    dn = counts_e / gain
    saturated = np.zeros(dn.shape, bool)
    if task.get("saturation_level") is not None:
        dn, saturated = saturate(dn, float(task["saturation_level"]))
    frame = ((dn - sky_dn) * cal).astype(np.float32)
    return model, frame, saturated


# ---------------------------------------------------------------------- writing
def _frame_header(template_header, band, run, camcol, field, crpix, crval, nmgy, seed):
    import fitsio

    skip = {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "BZERO", "BSCALE"}
    hdr = fitsio.FITSHDR()
    for rec in template_header.records():
        name = rec.get("name")
        if name is None or name.upper() in skip:
            continue
        hdr.add_record(rec)
    hdr["RUN"] = run
    hdr["CAMCOL"] = camcol
    hdr["FRAME"] = field
    hdr["FILTER"] = band
    hdr["CRPIX1"], hdr["CRPIX2"] = float(crpix[0]), float(crpix[1])
    hdr["CRVAL1"], hdr["CRVAL2"] = float(crval[0]), float(crval[1])
    hdr["NMGY"] = float(nmgy)
    hdr.add_record({"name": "SIMULATE", "value": True, "comment": "rendered by celeste.simulate"})
    hdr.add_record({"name": "SIMSEED", "value": int(seed), "comment": "simulation seed"})
    return hdr


def band_wcs(template_header, band, shape, center_radec):
    """astropy WCS of a simulated band: the template band's CD matrix, CRPIX at the image centre."""
    from astropy.wcs import WCS

    h, w = shape
    crpix = ((w + 1) / 2.0, (h + 1) / 2.0)
    hdr = _frame_header(template_header, band, 1, 1, 1, crpix, center_radec, 0.0, 0)
    keys = ("CTYPE1", "CTYPE2", "CUNIT1", "CUNIT2", "CRPIX1", "CRPIX2", "CRVAL1", "CRVAL2",
            "CD1_1", "CD1_2", "CD2_1", "CD2_2")
    return WCS({k: hdr[k] for k in keys})


def _write_frame(path, frame, header, calibration, allsky, xinterp, yinterp, astrom, compress):
    import fitsio

    h, w = frame.shape
    sky = np.zeros(1, dtype=[("ALLSKY", ">f4", allsky.shape), ("XINTERP", ">f4", (w,)), ("YINTERP", ">f4", (h,))])
    sky["ALLSKY"][0] = allsky
    sky["XINTERP"][0] = xinterp
    sky["YINTERP"][0] = yinterp
    plain = path[:-4] if path.endswith(".bz2") else path
    with fitsio.FITS(plain, "rw", clobber=True) as f:
        f.write(np.ascontiguousarray(frame, dtype=np.float32), header=header)
        f.write(np.asarray(calibration, dtype=np.float32))
        f.write(sky)
        f.write(astrom)
    if compress:
        with open(plain, "rb") as src, bz2.open(plain + ".bz2", "wb", compresslevel=9) as dst:
            shutil.copyfileobj(src, dst)
        os.remove(plain)


FPM_COLUMNS = ("refcntr", "nspan", "row0", "col0", "rmin", "rmax", "cmin", "cmax", "npix", "s")


def mask_objects(mask):
    """fpM objects of a boolean mask: one row per 8-connected component, spans as in SDSS fpM files.

    Returns
    -------
    ndarray structured, one row per object
        refcntr 1, nspan, row0 = col0 = 0, rmin, rmax, cmin, cmax, npix, and ``s`` the spans
        (row, first column, last column; inclusive) as big-endian int16 triples in bytes
        (the layout :func:`celeste.sdss.read_fpm` reads).
    """
    from scipy import ndimage

    dtype = [(c, ">i4") for c in FPM_COLUMNS[:-1]] + [("s", "O")]
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), int))
    rows = np.zeros(n, dtype=dtype)
    for k, sl in enumerate(ndimage.find_objects(labels)):
        sub = labels[sl] == k + 1
        spans = []
        for r in range(sub.shape[0]):
            cols = np.flatnonzero(sub[r])
            for run in np.split(cols, np.flatnonzero(np.diff(cols) > 1) + 1):
                if len(run):
                    spans.append((sl[0].start + r, sl[1].start + run[0], sl[1].start + run[-1]))
        spans = np.array(spans, dtype=">i2")
        rows[k]["refcntr"] = 1
        rows[k]["nspan"] = len(spans)
        rows[k]["rmin"], rows[k]["rmax"] = sl[0].start, sl[0].stop - 1
        rows[k]["cmin"], rows[k]["cmax"] = sl[1].start, sl[1].stop - 1
        rows[k]["npix"] = int(sub.sum())
        rows[k]["s"] = spans.view(np.uint8).ravel()
    return rows


def _write_fpm(path, template_header, types, run, camcol, field, shape, satur=None):
    """fpM file in the real format: empty planes, except SATUR from ``satur`` (bool (H, W)) if given."""
    import fitsio

    hdr = fitsio.FITSHDR()
    for rec in template_header.records():
        if rec.get("name", "").upper() in {"SIMPLE", "BITPIX", "NAXIS", "EXTEND"}:
            continue
        hdr.add_record(rec)
    hdr["RUN"], hdr["CAMCOL"], hdr["FIELD"] = run, camcol, field
    hdr["MASKROWS"], hdr["MASKCOLS"] = int(shape[0]), int(shape[1])
    formats = ["1J"] * 9 + ["1PB()"]
    nplane = int(template_header.get("NPLANE", 10))
    planes = {str(a).strip(): int(v) for _, a, v in (tuple(r) for r in types)}
    satur_plane = planes.get("S_MASK_SATUR", 1)
    objects = mask_objects(satur) if satur is not None and satur.any() else None
    with fitsio.FITS(path, "rw", clobber=True) as f:
        f.write(None, header=hdr)
        for p in range(nplane):
            if p == satur_plane and objects is not None:
                f.write(objects)
            else:
                f.create_table_hdu(names=list(FPM_COLUMNS), formats=formats)
        f.write(types)


def _write_photofield(path, template, run, camcol, field):
    """Write or update the photoField with one row per simulated field (template row, ids replaced)."""
    import fitsio

    row = template["photofield_row"].copy()
    row["RUN"] = run
    row["CAMCOL"] = camcol
    row["FIELD"] = field
    rows = row
    if os.path.exists(path):
        old = fitsio.read(path, ext=1)
        old = old[old["FIELD"] != field]
        rows = np.sort(np.concatenate([old, row]), order="FIELD")
    hdr = fitsio.FITSHDR()
    for rec in template["photofield_header"].records():
        if rec.get("name", "").upper() in {"SIMPLE", "BITPIX", "NAXIS", "EXTEND"}:
            continue
        hdr.add_record(rec)
    hdr["RUN"] = run
    hdr["CAMCOL"] = str(camcol)
    hdr["FIELD0"] = int(rows["FIELD"].min())
    hdr["NFIELDS"] = len(rows)
    tmp = path + ".part"
    with fitsio.FITS(tmp, "rw", clobber=True) as f:
        f.write(None, header=hdr)
        f.write(rows)
    os.replace(tmp, path)


# ---------------------------------------------------------------------- driver
def _truth_columns(src, ra, dec):
    """The truth catalog's columns (see :func:`simulate_field`) from :func:`make_sources`' output."""
    n = len(src["x"])
    truth = {"objid": np.arange(1, n + 1), "ra": np.asarray(ra, np.float64), "dec": np.asarray(dec, np.float64),
             "is_star": src["is_star"]}
    for bi, b in enumerate(BANDS):
        truth[f"flux_{b}"] = src["flux"][:, bi]
        truth[f"flux_{b}_sd"] = np.zeros(n)
        truth[f"mag_{b}"] = flux_to_mag(src["flux"][:, bi])
    truth["gal_frac_dev"] = src["bulge_frac"][:, BANDS.index("r")]
    truth["gal_axis_ratio"] = src["q"]
    truth["gal_angle_deg"] = src["angle"]
    truth["gal_radius_arcsec"] = src["radius"]
    truth["x"], truth["y"] = src["x"], src["y"]
    truth["kind"] = src["kind"].astype(np.float64)
    truth["sersic_n_bulge"] = src["n_bulge"]
    truth["sersic_n_disk"] = src["n_disk"]
    return truth


def _band_tasks(spec, tpl, wcs_b, src, truth, wings, psf_path):
    """One :func:`render_band` task per band, and per band (calibration, sky grid, xi, yi)."""
    h, w = (int(spec.shape[0]), int(spec.shape[1]))
    n = len(src["x"])
    x, y = src["x"], src["y"]
    pf = tpl["photofield_row"][0]
    tasks, sky_meta = [], {}
    x0 = max((2048 - w) // 2, 0)  # calibration vectors cut from the middle of the template frame's
    for bi, b in enumerate(BANDS):
        cal_real = tpl["calibration"][b]
        if w <= len(cal_real):
            cal = cal_real[x0:x0 + w]
        else:
            cal = np.interp(np.linspace(0, len(cal_real) - 1, w), np.arange(len(cal_real)), cal_real)
        allsky, xi, yi = sky_grid((h, w), tpl["sky_dn"][b])
        xb, yb = wcs_b[b].all_world2pix(truth["ra"], truth["dec"], 0) if n else (x, y)
        jac = pixel_to_sky_jacobian(wcs_b[b], xb, yb) if n else np.zeros((0, 2, 2))
        sky_meta[b] = (cal, allsky, xi, yi)
        gain, dark = float(pf["GAIN"][bi]), float(pf["DARK_VARIANCE"][bi])
        sky_sd = sky_sd_nmgy(tpl, b, cal)
        tasks.append({
            "band": bi, "shape": (h, w), "x": np.asarray(xb), "y": np.asarray(yb), "flux": src["flux"][:, bi],
            "is_star": src["is_star"], "bulge_frac": src["bulge_frac"][:, bi], "n_bulge": src["n_bulge"],
            "n_disk": src["n_disk"], "r_bulge": src["r_bulge"], "r_disk": src["r_disk"], "q": src["q"],
            "angle": src["angle"], "jac": jac, "psfield": os.path.abspath(psf_path), "calibration": cal,
            "sky_dn": interpolate_sky(allsky, xi, yi), "gain": gain, "dark_variance": dark,
            "wing": wings[bi], "sky_sd": sky_sd,
            "saturation_level": float(pf["SATURATION_LEVEL"][bi]) if spec.saturation else None,
            "seed": int(np.random.SeedSequence([int(spec.seed), bi]).generate_state(1)[0]),
        })
    return tasks, sky_meta


def _write_field_files(out_dir, field_dir, spec, tpl, sky_meta, results, compress):
    """Write the rendered frames, fpM masks and the camcol's photoField row; returns the frame paths."""
    h, w = (int(spec.shape[0]), int(spec.shape[1]))
    run, camcol, fld = int(spec.run), int(spec.camcol), int(spec.field)
    tag = f"{run:06d}-{camcol}-{fld:04d}"
    crpix = ((w + 1) / 2.0, (h + 1) / 2.0)
    frames = []
    for bi, b in enumerate(BANDS):
        cal, allsky, xi, yi = sky_meta[b]
        hdr = _frame_header(tpl["header"][b], b, run, camcol, fld, crpix, spec.center_radec, float(np.mean(cal)),
                            spec.seed)
        astrom = tpl["astrom"][b].copy()
        for col, val in (("RUN", run), ("CAMCOL", camcol), ("FIELD", fld)):
            if col in astrom.dtype.names:
                astrom[col] = val
        path = os.path.join(field_dir, f"frame-{b}-{tag}.fits" + (".bz2" if compress else ""))
        _write_frame(path, results[bi][1], hdr, cal, allsky, xi, yi, astrom, compress)
        frames.append(path)
        satur = results[bi][2]
        if satur.any() and SATUR_GROW_PX > 0:
            from scipy import ndimage

            satur = ndimage.binary_dilation(satur, iterations=SATUR_GROW_PX)
        _write_fpm(os.path.join(field_dir, f"fpM-{run:06d}-{b}{camcol}-{fld:04d}.fits"), tpl["fpm_header"],
                   tpl["fpm_types"], run, camcol, fld, (h, w), satur)
    _write_photofield(os.path.join(out_dir, str(run), str(camcol), f"photoField-{run:06d}-{camcol}.fits"),
                      tpl, run, camcol, fld)
    return frames


def _saturated_cluster_sizes(sat_r, x, y):
    """Per source at r pixel (x, y): the size (pixels) of the saturated r region it lies in; 0 outside any."""
    n = len(x)
    h, w = sat_r.shape
    out = np.zeros(n)
    if sat_r.any() and n:
        ix = np.clip(np.round(x).astype(int), 0, w - 1)
        iy = np.clip(np.round(y).astype(int), 0, h - 1)
        from scipy import ndimage

        lab, _ = ndimage.label(sat_r, structure=np.ones((3, 3), int))
        sizes = np.bincount(lab.ravel())
        out = np.where(lab[iy, ix] > 0, sizes[lab[iy, ix]], 0).astype(np.float64)
    return out


def simulate_field(out_dir, spec, catalog=DEFAULT_CATALOG, psfield=DEFAULT_PSFIELD, template_dir=DEFAULT_TEMPLATE,
                   compress=True, processes=None):
    """Render one simulated SDSS field and its truth catalog.

    Parameters
    ----------
    out_dir : str
        Root of the SDSS-layout tree to write into.
    spec : FieldSpec
    catalog : str
        Stripe 82 coadd catalog the sources are drawn from.
    psfield : str
        Real psField file (rewritten with ``spec.psf_variation``, copied into the field).
    template_dir : str
        Real field whose headers, calibration, sky, gains and saturation levels are reused.
    compress : bool
        Write frames as ``.fits.bz2`` (as SDSS distributes them).
    processes : int or None
        Render bands in this many spawned processes; None: 1 under a million pixels, else 2.

    Returns
    -------
    dict
        ``dir`` (field directory), ``truth`` (catalog dict with x, y in r pixels, ``kind``,
        ``sersic_n_bulge``, ``sersic_n_disk``, ``n_saturated_r`` pixels), ``frames`` (paths),
        ``model`` (5, H, W) noise-free nmgy, ``saturated`` (5, H, W) bool, ``sky_nmgy`` (5,)
        mean sky per pixel, ``info`` (what ``sim.json`` holds).

    Raises
    ------
    ConfigError
        A bad spec (names the attribute).
    DataError
        Unreadable template, catalog or psField.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    spec.validate()
    for p in (catalog, psfield):
        if not os.path.exists(p):
            raise DataError(f"{p}: no such file")
    tpl = read_template(template_dir)
    h, w = (int(spec.shape[0]), int(spec.shape[1]))
    run, camcol, fld = int(spec.run), int(spec.camcol), int(spec.field)
    rng = np.random.default_rng(spec.seed)
    field_dir = os.path.join(out_dir, str(run), str(camcol), str(fld))
    os.makedirs(field_dir, exist_ok=True)
    tag = f"{run:06d}-{camcol}-{fld:04d}"
    psf_path = os.path.join(field_dir, f"psField-{tag}.fits")
    # the PSF the field's psField describes is the one rendered (both indexed in this image's pixels)
    if spec.psf_variation == 1.0:
        shutil.copyfile(psfield, psf_path)
    else:
        scale_psfield_variation(psfield, psf_path, float(spec.psf_variation), (0.5 * (w - 1), 0.5 * (h - 1)))

    wcs_b = {b: band_wcs(tpl["header"][b], b, (h, w), spec.center_radec) for b in BANDS}
    src = make_sources(spec, rng, catalog)
    n = len(src["x"])
    x, y = src["x"], src["y"]
    ra, dec = wcs_b["r"].all_pix2world(x, y, 0) if n else (np.zeros(0), np.zeros(0))
    truth = _truth_columns(src, ra, dec)
    r_i = BANDS.index("r")
    pf = tpl["photofield_row"][0]
    wings = wing_parameters(pf, psf_path, (0.5 * (w - 1), 0.5 * (h - 1))) if spec.psf_wings else [None] * len(BANDS)
    tasks, sky_meta = _band_tasks(spec, tpl, wcs_b, src, truth, wings, psf_path)
    if processes is None:
        processes = 1 if h * w < 1_000_000 else 2
    if processes > 1:
        with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as ex:
            results = list(ex.map(render_band, tasks))
    else:
        results = [render_band(t) for t in tasks]

    frames = _write_field_files(out_dir, field_dir, spec, tpl, sky_meta, results, compress)
    truth["n_saturated_r"] = _saturated_cluster_sizes(results[r_i][2], x, y)
    write_catalog(os.path.join(field_dir, "truth.fits"), truth)
    info = {"spec": spec.to_json(), "code": code_hash(), "n_sources": int(n),
            "n_by_kind": {KIND_NAMES[k]: int(np.sum(src["kind"] == k)) for k in KIND_NAMES},
            "psf_fwhm_arcsec": psf_width_range(psf_path, (h, w)),
            "saturated_pixels": {b: int(results[bi][2].sum()) for bi, b in enumerate(BANDS)},
            "wing": [None if wg is None else {k: (round(v, 6) if isinstance(v, float) else v) for k, v in wg.items()}
                     for wg in wings]}
    tmp = os.path.join(field_dir, "sim.json.part")
    with open(tmp, "w") as fh:
        json.dump(info, fh, indent=1)
    os.replace(tmp, os.path.join(field_dir, "sim.json"))
    sky_nmgy = np.array([float(np.mean(sky_meta[b][1])) * float(np.mean(sky_meta[b][0])) for b in BANDS])
    return {"dir": field_dir, "truth": truth, "frames": frames, "model": np.stack([r[0] for r in results]),
            "saturated": np.stack([r[2] for r in results]), "sky_nmgy": sky_nmgy, "info": info}


def field_is_current(field_dir, spec):
    """True if ``field_dir`` holds a complete rendering of ``spec`` by this module's current code."""
    path = os.path.join(field_dir, "sim.json")
    if not (os.path.exists(path) and os.path.exists(os.path.join(field_dir, "truth.fits"))):
        return False
    try:
        with open(path) as fh:
            info = json.load(fh)
    except (OSError, ValueError):
        return False
    return info.get("spec") == spec.to_json() and info.get("code") == code_hash()


def main(argv=None):
    """``python bench/simulate.py --out DIR [options]``: render one field; exit 2 on a CelesteError."""
    from .errors import CelesteError

    d = FieldSpec()
    p = argparse.ArgumentParser(description="Render a simulated SDSS field with GalSim (celeste.simulate).")
    p.add_argument("--out", default=None, help="root directory of the SDSS-layout tree (required to render)")
    p.add_argument("--run", type=int, default=d.run)
    p.add_argument("--camcol", type=int, default=d.camcol)
    p.add_argument("--field", type=int, default=d.field)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--size", type=int, nargs=2, default=list(d.shape), metavar=("H", "W"))
    p.add_argument("--center", type=float, nargs=2, default=list(d.center_radec), metavar=("RA", "DEC"))
    p.add_argument("--n-sources", type=int, default=None, help="population size (default: the catalog's density)")
    p.add_argument("--crowding", type=float, default=d.crowding, help="multiplies the population's density")
    p.add_argument("--r-mag-range", type=float, nargs=2, default=list(d.r_mag_range), metavar=("BRIGHT", "FAINT"))
    p.add_argument("--blends", type=int, default=0, help="pairs 1-3 arcsec apart")
    p.add_argument("--bright-galaxies", type=int, default=0, help="r 12.5-14, half-light radius 4-10 arcsec")
    p.add_argument("--bright-stars", type=int, default=0, help="r 12-15")
    p.add_argument("--cluster-stars", type=int, default=0, help="stars of a Plummer cluster at the centre")
    p.add_argument("--cluster-radius", type=float, default=d.cluster_radius_arcsec, help="Plummer radius (arcsec)")
    p.add_argument("--psf-variation", type=float, default=d.psf_variation,
                   help="multiplies the psField's spatial variation (1: the real one)")
    p.add_argument("--no-wings", action="store_true", help="no PSF wing beyond the psField stamp")
    p.add_argument("--no-saturation", action="store_true", help="no saturation, bleeding or SATUR masks")
    p.add_argument("--catalog", default=DEFAULT_CATALOG)
    p.add_argument("--psfield", default=DEFAULT_PSFIELD)
    p.add_argument("--no-compress", action="store_true", help="write plain .fits frames")
    p.add_argument("--processes", type=int, default=None)
    p.add_argument("--wing-table", action="store_true", help="print the PSF wing's parameters per band and exit")
    a = p.parse_args(argv)
    try:
        if a.wing_table:
            for row in wing_table(psfield=a.psfield):
                print(row)
            return 0
        if a.out is None:
            raise ConfigError("--out: the root directory to render into is required")
        spec = FieldSpec(run=a.run, camcol=a.camcol, field=a.field, seed=a.seed, shape=tuple(a.size),
                         center_radec=tuple(a.center), n_sources=a.n_sources, crowding=a.crowding,
                         r_mag_range=tuple(a.r_mag_range), n_blends=a.blends, n_bright_galaxies=a.bright_galaxies,
                         n_bright_stars=a.bright_stars, cluster_stars=a.cluster_stars,
                         cluster_radius_arcsec=a.cluster_radius, psf_variation=a.psf_variation,
                         psf_wings=not a.no_wings, saturation=not a.no_saturation)
        res = simulate_field(a.out, spec, a.catalog, a.psfield, compress=not a.no_compress, processes=a.processes)
    except CelesteError as exc:
        print(f"simulate: error: {exc}", file=sys.stderr)
        return 2
    print(f"{res['dir']}: {len(res['truth']['ra'])} sources {res['info']['n_by_kind']}; "
          f"saturated pixels {res['info']['saturated_pixels']}")
    return 0

