"""Reader of SDSS imaging files (DR8+ reductions) into :class:`celeste.images.Image`.

Files of one field, in the layout this module expects under a data directory::

    <data-dir>/<run>/<camcol>/<field>/frame-<band>-<run:06d>-<camcol>-<field:04d>.fits[.bz2]
    <data-dir>/<run>/<camcol>/<field>/psField-<run:06d>-<camcol>-<field:04d>.fits
    <data-dir>/<run>/<camcol>/<field>/fpM-<run:06d>-<band><camcol>-<field:04d>.fits
    <data-dir>/<run>/<camcol>/photoField-<run:06d>-<camcol>.fits

What each file holds (SDSS data model, https://data.sdss.org/datamodel/):

* ``frame`` (files/BOSS_PHOTOOBJ/frames/RERUN/RUN/CAMCOL/frame.html): HDU0 the
  calibrated, sky-subtracted image in nanomaggies with its WCS; HDU1 the
  calibration vector (nanomaggies per DN, one value per column); HDU2 the sky
  grid ALLSKY (DN) with XINTERP, YINTERP, the grid coordinates of each column
  and row.  Raw DN are recovered as ``img / calibration + sky``.
* ``psField`` (files/PHOTO_REDUX/RERUN/RUN/objcs/CAMCOL/psField.html): HDUs
  1..5 (u g r i z) hold the Karhunen-Loeve PSF basis: eigen-images RROWS and
  polynomial coefficients C of their weights in (row, column).
* ``fpM`` (files/PHOTO_REDUX/RERUN/RUN/objcs/CAMCOL/fpM.html): one table HDU
  per mask plane, each row an object given as row spans; the last HDU names
  the planes.
* ``photoField`` (files/BOSS_PHOTOOBJ/RERUN/RUN/CAMCOL/photoField.html): one
  row per field with GAIN (electrons per DN) and DARK_VARIANCE (DN^2) per band.

Pixel coordinates are 0-based, x = column, y = row.
"""
import bz2
import collections
import io
import logging
import os
import threading
import warnings
from dataclasses import dataclass

import numpy as np
from astropy.io.fits.verify import VerifyError

from celeste import BANDS
from celeste.errors import ConfigError, DataError
from celeste.images import Image

log = logging.getLogger(__name__)

#: (rows, columns) of an SDSS frame
FRAME_SHAPE = (1489, 2048)

#: nominal SDSS pixel scale, arcsec per pixel (the WCS gives the local value)
ARCSEC_PER_PX = 0.396

#: fpM mask planes that make a pixel unusable (SDSS photo S_MASK_* names)
FPM_BAD_PLANES = ("INTERP", "SATUR", "CR", "GHOST")

#: scale applied by SDSS photo to (row, col) in the PSF polynomial (variablePsf.c RC_SCALE)
_PSF_RC_SCALE = 1.0e-3

_FITS_BLOCK = 2880


# --------------------------------------------------------------------------- paths


def band_index(band):
    """Band index 0..4 from an index or a letter of ``celeste.BANDS``.

    Raises
    ------
    ConfigError
        If ``band`` is neither 0..4 nor one of u g r i z.
    """
    if isinstance(band, str):
        if band in BANDS:
            return BANDS.index(band)
    elif isinstance(band, (int, np.integer)) and 0 <= int(band) < len(BANDS):
        return int(band)
    raise ConfigError(f"band: expected 0..4 or one of {''.join(BANDS)}, got {band!r}")


def field_paths(data_dir, run, camcol, field):
    """Paths of the files of one field.

    Parameters
    ----------
    data_dir : str or path-like
        Root of the layout ``<data-dir>/<run>/<camcol>/<field>/``.
    run, camcol, field : int
        SDSS identifiers.

    Returns
    -------
    dict
        ``"frame"``: dict band index (0..4) -> frame path (the ``.fits`` file if
        it exists, else the ``.fits.bz2`` name, whether or not it exists);
        ``"fpm"``: dict band index -> fpM path; ``"psfield"``: psField path;
        ``"photofield"``: photoField path of the camcol.  Existence is not
        checked (the readers raise :class:`DataError` naming a missing file).
    """
    run, camcol, field = int(run), int(camcol), int(field)
    camcol_dir = os.path.join(os.fspath(data_dir), str(run), str(camcol))
    field_dir = os.path.join(camcol_dir, str(field))
    frames, fpms = {}, {}
    for b, name in enumerate(BANDS):
        base = os.path.join(field_dir, f"frame-{name}-{run:06d}-{camcol}-{field:04d}.fits")
        frames[b] = base if os.path.exists(base) else base + ".bz2"
        fpms[b] = os.path.join(field_dir, f"fpM-{run:06d}-{name}{camcol}-{field:04d}.fits")
    return {
        "frame": frames,
        "fpm": fpms,
        "psfield": os.path.join(field_dir, f"psField-{run:06d}-{camcol}-{field:04d}.fits"),
        "photofield": os.path.join(camcol_dir, f"photoField-{run:06d}-{camcol}.fits"),
    }


def _require(path, what):
    if not os.path.isfile(path):
        raise DataError(f"{path}: missing {what} file")


# --------------------------------------------------------------------------- frames


@dataclass
class Frame:
    """Content of one SDSS frame file (or a cutout of it).

    Attributes
    ----------
    image : ndarray (H, W) float64
        Calibrated, sky-subtracted image, nanomaggies.
    calibration : ndarray (W,) float64
        Nanomaggies per DN for each column (HDU1).
    sky : ndarray (H, W) float64
        Sky level in DN, ALLSKY bilinearly interpolated at (XINTERP, YINTERP).
    wcs : astropy.wcs.WCS
        Celestial WCS of ``image`` (shifted for cutouts).
    header : astropy.io.fits.Header
        HDU0 header of the file.
    x0, y0 : int
        Offset of ``image`` in the full frame.
    path : str
        The file read.
    """

    image: np.ndarray
    calibration: np.ndarray
    sky: np.ndarray
    wcs: object
    header: object
    x0: int = 0
    y0: int = 0
    path: str = ""


#: decompressed ``.bz2`` frames kept per process (bytes): the boxes of a field share them
_DECOMPRESSED = collections.OrderedDict()
_DECOMPRESSED_MAX = 10  # two fields of five bands, ~12.5 MB each
_DECOMPRESSED_LOCK = threading.Lock()


def _decompressed(path):
    """The decompressed bytes of a ``.bz2`` file, cached by (path, size, mtime); least recently used evicted.

    Decompressing a frame costs about 0.5 s; a rank processing several boxes of one field
    would otherwise pay it for every box.  Memory: at most ``_DECOMPRESSED_MAX`` frames.
    """
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    with _DECOMPRESSED_LOCK:
        raw = _DECOMPRESSED.get(key)
        if raw is not None:
            _DECOMPRESSED.move_to_end(key)
            return raw
    with open(path, "rb") as fh:
        raw = bz2.decompress(fh.read())
    with _DECOMPRESSED_LOCK:
        _DECOMPRESSED[key] = raw
        while len(_DECOMPRESSED) > _DECOMPRESSED_MAX:
            _DECOMPRESSED.popitem(last=False)
    return raw


def _open_fits(path):
    """HDU list of a FITS file, decompressing ``.bz2`` in memory (cached, see :func:`_decompressed`)."""
    from astropy.io import fits

    _require(path, "frame")
    try:
        if path.endswith(".bz2"):
            raw = _decompressed(path)
            if len(raw) < _FITS_BLOCK:
                raise DataError(f"{path}: decompressed file is too short to be FITS")
            return fits.open(io.BytesIO(raw), memmap=False)
        return fits.open(path, memmap=True)
    except DataError:
        raise
    except (OSError, EOFError, ValueError, TypeError, KeyError, IndexError, VerifyError) as exc:
        raise DataError(f"{path}: cannot read (truncated or corrupt?): {exc}") from exc


def read_frame_header(path):
    """Primary (HDU0) header of a frame, reading as little of the file as possible.

    For ``.bz2`` files only the first bzip2 blocks are decompressed, until the
    header's END card is seen.

    Parameters
    ----------
    path : str
        ``frame-*.fits`` or ``frame-*.fits.bz2``.

    Returns
    -------
    astropy.io.fits.Header

    Raises
    ------
    DataError
        If the file is missing, corrupt, or has no complete FITS header.
    """
    from astropy.io import fits

    path = os.fspath(path)
    _require(path, "frame")
    try:
        if not path.endswith(".bz2"):
            return fits.getheader(path, 0)
        dec = bz2.BZ2Decompressor()
        text = b""
        with open(path, "rb") as fh:
            while True:
                chunk = fh.read(1 << 16)
                if chunk:
                    text += dec.decompress(chunk)
                n_blocks = len(text) // _FITS_BLOCK
                cards = text[: n_blocks * _FITS_BLOCK]
                end = _find_end_card(cards)
                if end is not None:
                    return fits.Header.fromstring(cards[: end + 80].decode("ascii"))
                if not chunk or dec.eof:
                    raise DataError(f"{path}: no END card in the primary header (truncated?)")
    except DataError:
        raise
    except (OSError, EOFError, ValueError, UnicodeDecodeError, TypeError, KeyError, IndexError, VerifyError) as exc:
        raise DataError(f"{path}: cannot read header (truncated or corrupt?): {exc}") from exc


def _find_end_card(data):
    for i in range(0, len(data) - 79, 80):
        if data[i : i + 8] == b"END     ":
            return i
    return None


def _linear_index(coord, n):
    """Left grid index and weight of the right neighbour for linear interpolation.

    Coordinates outside [0, n - 1] take the nearest edge value (IDL INTERPOLATE,
    as used by the SDSS data model's sky recipe).
    """
    c = np.clip(np.asarray(coord, dtype=np.float64), 0.0, n - 1.0)
    if n == 1:
        return np.zeros(c.shape, dtype=np.int64), np.zeros(c.shape)
    i0 = np.minimum(np.floor(c).astype(np.int64), n - 2)
    return i0, c - i0


def interpolate_sky(allsky, xinterp, yinterp):
    """Full-resolution sky from the SDSS frame sky grid.

    Parameters
    ----------
    allsky : ndarray (NY, NX) float
        Sky grid in DN (frame HDU2 ALLSKY; NX = 256, NY = 192 for SDSS frames).
    xinterp : ndarray (W,) float
        Grid x coordinate of each image column (HDU2 XINTERP).
    yinterp : ndarray (H,) float
        Grid y coordinate of each image row (HDU2 YINTERP).

    Returns
    -------
    ndarray (H, W) float64
        Sky in DN: ALLSKY bilinearly interpolated at (XINTERP, YINTERP), with
        edge values held outside the grid (SDSS data model, frame page:
        ``interpolate(allsky, xinterp, yinterp, /grid)``).
    """
    allsky = np.asarray(allsky, dtype=np.float64)
    ny, nx = allsky.shape
    ix, fx = _linear_index(xinterp, nx)
    iy, fy = _linear_index(yinterp, ny)
    rows = allsky[:, ix] * (1.0 - fx) + allsky[:, np.minimum(ix + 1, nx - 1)] * fx  # (NY, W)
    return rows[iy] * (1.0 - fy)[:, None] + rows[np.minimum(iy + 1, ny - 1)] * fy[:, None]


def _check_box(box, shape):
    if box is None:
        return 0, shape[1], 0, shape[0]
    try:
        x0, x1, y0, y1 = (int(v) for v in box)
    except (TypeError, ValueError):
        raise ConfigError(f"box: expected (x0, x1, y0, y1) integers, got {box!r}") from None
    if not (0 <= x0 < x1 <= shape[1] and 0 <= y0 < y1 <= shape[0]):
        raise ConfigError(
            f"box: (x0, x1, y0, y1) = {box!r} is empty or outside the frame "
            f"(width {shape[1]}, height {shape[0]})"
        )
    return x0, x1, y0, y1


def _make_wcs(header, path):
    from astropy.wcs import WCS, FITSFixedWarning

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(header, naxis=2)
    except Exception as exc:  # astropy raises several types for bad WCS keywords
        raise DataError(f"{path}: unusable WCS in HDU0: {exc}") from exc
    if not wcs.has_celestial:
        raise DataError(f"{path}: HDU0 has no celestial WCS")
    return wcs


def read_frame(path, box=None):
    """Read an SDSS frame file (plain or bzip2-compressed).

    Parameters
    ----------
    path : str
        ``frame-<band>-<run>-<camcol>-<field>.fits`` or ``.fits.bz2``.
    box : (x0, x1, y0, y1) ints, optional
        Cutout in frame pixels (0-based, half-open).  For plain files only the
        cutout is read from disk; bz2 files are decompressed whole in memory.

    Returns
    -------
    Frame
        Image (nmgy), calibration (nmgy/DN per column), sky (DN), WCS (shifted
        to the cutout), header; see :class:`Frame`.

    Raises
    ------
    DataError
        If the file is missing, truncated, corrupt, its HDUs have
        inconsistent shapes, or the calibration or sky grid holds a
        non-positive or non-finite value (message names the file).
    ConfigError
        If ``box`` is empty or outside the frame.
    """
    path = os.fspath(path)
    hdul = _open_fits(path)
    try:
        try:
            if len(hdul) < 3:
                raise DataError(f"{path}: expected 3 HDUs (image, calibration, sky), found {len(hdul)}")
            header = hdul[0].header
            shape = (int(header.get("NAXIS2", 0)), int(header.get("NAXIS1", 0)))
            if header.get("NAXIS", 0) != 2 or min(shape) <= 0:
                raise DataError(f"{path}: HDU0 is not a 2-d image")
            x0, x1, y0, y1 = _check_box(box, shape)
            image = np.array(hdul[0].section[y0:y1, x0:x1], dtype=np.float64)
            calib = np.asarray(hdul[1].data, dtype=np.float64).ravel()
            if calib.shape != (shape[1],):
                raise DataError(f"{path}: HDU1 calibration has {calib.size} values for {shape[1]} columns")
            sky_tab = hdul[2].data
            allsky = np.asarray(sky_tab["ALLSKY"][0], dtype=np.float64)
            xinterp = np.asarray(sky_tab["XINTERP"][0], dtype=np.float64)
            yinterp = np.asarray(sky_tab["YINTERP"][0], dtype=np.float64)
        except DataError:
            raise
        except ConfigError:
            raise
        except (OSError, EOFError, ValueError, KeyError, IndexError, TypeError, AttributeError, OverflowError,
                VerifyError) as exc:
            raise DataError(f"{path}: cannot read frame content (truncated or corrupt?): {exc}") from exc
    finally:
        hdul.close()
    if allsky.ndim != 2 or xinterp.shape != (shape[1],) or yinterp.shape != (shape[0],):
        raise DataError(
            f"{path}: HDU2 sky grid shapes ALLSKY {allsky.shape}, XINTERP {xinterp.shape}, "
            f"YINTERP {yinterp.shape} do not match the image {shape}"
        )
    if not np.all(np.isfinite(calib)) or np.any(calib <= 0):
        raise DataError(f"{path}: HDU1 calibration has non-positive or non-finite values")
    if not np.all(np.isfinite(allsky)) or np.any(allsky <= 0):
        raise DataError(f"{path}: HDU2 sky grid ALLSKY has non-positive or non-finite values (sky must be > 0 DN)")
    sky = interpolate_sky(allsky, xinterp[x0:x1], yinterp[y0:y1])
    wcs = _make_wcs(header, path)
    if (x0, y0, x1, y1) != (0, 0, shape[1], shape[0]):
        wcs = wcs[y0:y1, x0:x1]
    return Frame(
        image=image, calibration=calib[x0:x1].copy(), sky=sky, wcs=wcs, header=header, x0=x0, y0=y0, path=path
    )


# --------------------------------------------------------------------------- photoField


def read_photofield(path, field):
    """Gain and dark variance of one field from a photoField file.

    Parameters
    ----------
    path : str
        ``photoField-<run>-<camcol>.fits``.
    field : int
        Field number (the row with FIELD == field is used).

    Returns
    -------
    dict
        ``"gain"``: ndarray (5,) float64, electrons per DN for u g r i z;
        ``"dark_variance"``: ndarray (5,) float64, DN^2 per pixel.

    Raises
    ------
    DataError
        If the file is missing or unreadable, lacks the columns, has no row for
        ``field``, or holds non-positive gains.
    """
    import fitsio

    path = os.fspath(path)
    _require(path, "photoField")
    try:
        tab = fitsio.read(path, ext=1, columns=["FIELD", "GAIN", "DARK_VARIANCE"])
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{path}: cannot read FIELD, GAIN, DARK_VARIANCE from HDU1: {exc}") from exc
    rows = np.flatnonzero(tab["FIELD"] == int(field))
    if rows.size == 0:
        raise DataError(f"{path}: no row for field {int(field)}")
    row = tab[rows[0]]
    gain = np.asarray(row["GAIN"], dtype=np.float64).ravel()
    dark = np.asarray(row["DARK_VARIANCE"], dtype=np.float64).ravel()
    if gain.shape != (5,) or dark.shape != (5,):
        raise DataError(f"{path}: GAIN/DARK_VARIANCE are not 5-band vectors")
    if not np.all(np.isfinite(gain)) or np.any(gain <= 0):
        raise DataError(f"{path}: non-positive GAIN for field {int(field)}: {gain}")
    return {"gain": gain, "dark_variance": dark}


# --------------------------------------------------------------------------- psField


class PsfModel:
    """SDSS Karhunen-Loeve PSF model of one band (psField HDU band + 1).

    The PSF at pixel (x, y) is (SDSS data model psField page; photo
    ``phPsfKLReconstruct`` in variablePsf.c)::

        w_k(x, y) = sum_{i < nrow_b} sum_{j < ncol_b} C_k[i, j] (s r)^i (s c)^j
        psf(x, y) = sum_k w_k(x, y) RROWS_k

    with r = y + 0.5 and c = x + 0.5 the row and column in SDSS photo's
    convention (pixel centres at half-integers) and s = 0.001.  nrow_b and
    ncol_b are numbers of polynomial terms (highest power + 1); entries of C
    beyond them are unused.

    Parameters
    ----------
    eigen : ndarray (K, N, N) float64
        Eigen-images RROWS (N odd; 51 for SDSS).
    coeffs : ndarray (K, R, C) float64
        Polynomial coefficients, already trimmed to nrow_b x ncol_b (zero padded
        if components differ).
    size : int
        Side of the returned stamp (odd, <= N).
    path : str
        File the model came from (for error messages).
    """

    def __init__(self, eigen, coeffs, size=25, path=""):
        self.eigen = np.ascontiguousarray(eigen, dtype=np.float64)
        self.coeffs = np.ascontiguousarray(coeffs, dtype=np.float64)
        self.path = path
        n = self.eigen.shape[1]
        if self.eigen.ndim != 3 or self.eigen.shape[2] != n or n % 2 == 0:
            raise DataError(f"{path}: PSF eigen-images must be K x N x N with N odd, got {self.eigen.shape}")
        size = int(size)
        if size % 2 == 0 or size < 1 or size > n:
            raise ConfigError(f"size: PSF stamp size must be odd and at most {n}, got {size}")
        self.size = size

    def weights(self, x, y):
        """KL weights w_k at pixel (x, y) of the frame, shape (K,) float64."""
        r = (float(y) + 0.5) * _PSF_RC_SCALE
        c = (float(x) + 0.5) * _PSF_RC_SCALE
        nr, nc = self.coeffs.shape[1:]
        rp = r ** np.arange(nr)
        cp = c ** np.arange(nc)
        return np.einsum("kij,i,j->k", self.coeffs, rp, cp)

    def raw_at(self, x, y):
        """Untrimmed, unnormalized reconstruction at (x, y), shape (N, N) float64."""
        return np.tensordot(self.weights(x, y), self.eigen, axes=1)

    def psf_at(self, x, y):
        """PSF image at frame pixel (x, y).

        Parameters
        ----------
        x, y : float
            0-based frame column and row.

        Returns
        -------
        ndarray (size, size) float64
            PSF stamp summing to 1, its peak at the centre pixel (size // 2,
            size // 2).  Includes the pixel response (an image of a point
            source, as SDSS PSF stamps are).

        Raises
        ------
        DataError
            If the reconstruction has a non-positive or non-finite total.
        """
        img = self.raw_at(x, y)
        n = img.shape[0]
        half = self.size // 2
        cy, cx = np.unravel_index(np.argmax(img), img.shape)
        # keep the stamp inside the eigen-image; recentre on the peak when it is off-centre
        cy = min(max(cy, half), n - 1 - half)
        cx = min(max(cx, half), n - 1 - half)
        stamp = img[cy - half : cy + half + 1, cx - half : cx + half + 1]
        total = stamp.sum()
        if not np.isfinite(total) or total <= 0:
            raise DataError(f"{self.path}: PSF reconstruction at ({x}, {y}) has total {total}")
        return stamp / total

    __call__ = psf_at


def read_psfield(path, band, size=25):
    """Read the PSF model of one band from a psField file.

    Parameters
    ----------
    path : str
        ``psField-<run>-<camcol>-<field>.fits``.
    band : int or str
        Band index 0..4 or letter; HDU ``band + 1`` is read.
    size : int
        Odd side of the stamps :meth:`PsfModel.psf_at` returns (default 25,
        i.e. +-12 pixels, +-4.8 arcsec; at most 51).

    Returns
    -------
    PsfModel

    Raises
    ------
    DataError
        If the file is missing or the HDU lacks RROWS, C, nrow_b, ncol_b,
        RNROW, RNCOL or has inconsistent sizes.
    """
    import fitsio

    path = os.fspath(path)
    b = band_index(band)
    _require(path, "psField")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fitsio warns about the variable-length RROWS column
            with fitsio.FITS(path) as fits:
                tab = fits[b + 1].read()
    except (OSError, ValueError, IndexError) as exc:
        raise DataError(f"{path}: cannot read PSF HDU {b + 1} (band {BANDS[b]}): {exc}") from exc
    names = {n.lower(): n for n in tab.dtype.names or ()}
    need = ("rrows", "c", "nrow_b", "ncol_b", "rnrow", "rncol")
    missing = [n for n in need if n not in names]
    if missing:
        raise DataError(f"{path}: HDU {b + 1} lacks PSF columns {missing}")
    col = lambda n: tab[names[n]]  # noqa: E731
    k = len(tab)
    if k == 0:
        raise DataError(f"{path}: HDU {b + 1} has no PSF components")
    nrow, ncol = int(col("rnrow")[0]), int(col("rncol")[0])
    if k == 0 or nrow != ncol:
        raise DataError(f"{path}: HDU {b + 1} has {k} PSF components of {nrow} x {ncol} pixels")
    nrb, ncb = col("nrow_b").astype(int), col("ncol_b").astype(int)
    cmat = np.asarray(col("c"), dtype=np.float64)
    if cmat.ndim != 3 or nrb.min() < 1 or ncb.min() < 1 or nrb.max() > cmat.shape[1] or ncb.max() > cmat.shape[2]:
        raise DataError(f"{path}: HDU {b + 1} polynomial orders nrow_b={nrb}, ncol_b={ncb} do not fit C")
    coeffs = np.zeros((k, nrb.max(), ncb.max()))
    eigen = np.empty((k, nrow, ncol))
    for i in range(k):
        coeffs[i, : nrb[i], : ncb[i]] = cmat[i, : nrb[i], : ncb[i]]
        pix = np.asarray(col("rrows")[i], dtype=np.float64)
        if pix.size < nrow * ncol:
            raise DataError(f"{path}: HDU {b + 1} eigen-image {i} has {pix.size} pixels, need {nrow * ncol}")
        eigen[i] = pix[: nrow * ncol].reshape(nrow, ncol)
    if not (np.all(np.isfinite(coeffs)) and np.all(np.isfinite(eigen))):
        raise DataError(f"{path}: HDU {b + 1} PSF model has non-finite values")
    return PsfModel(eigen, coeffs, size=size, path=path)


# --------------------------------------------------------------------------- fpM


def _fpm_plane_hdus(fits, path):
    """Map plane name (without ``S_MASK_``) -> HDU number, from the last HDU."""
    last = fits[len(fits) - 1]
    try:
        tab = last.read()
        names = {n.lower(): n for n in tab.dtype.names}
        attr, value = tab[names["attributename"]], tab[names["value"]]
    except (KeyError, ValueError, TypeError, OSError, AttributeError) as exc:
        raise DataError(f"{path}: last HDU does not name the mask planes: {exc}") from exc
    planes = {}
    for a, v in zip(attr, value):
        a = str(a).strip()
        if a.startswith("S_MASK_"):
            planes[a[len("S_MASK_") :]] = int(v) + 1  # plane value v is stored in HDU v + 1
    return planes


def read_fpm(path, shape=FRAME_SHAPE, planes=FPM_BAD_PLANES):
    """Boolean mask of bad pixels from an SDSS fpM file.

    Each mask plane is a table HDU; each of its rows is an object made of
    ``nspan`` spans (row, col_first, col_last), inclusive, stored as big-endian
    int16 triples in the variable-length column ``s`` (offset by the object's
    ``row0``, ``col0``).  The HDU of each plane is found from the file's last
    HDU, which lists S_MASK_<NAME> with its plane number (SDSS data model, fpM
    page).  Spans outside ``shape`` are clipped.

    Parameters
    ----------
    path : str
        ``fpM-<run>-<band><camcol>-<field>.fits``.
    shape : (int, int)
        (rows, columns) of the frame (1489, 2048 for SDSS).
    planes : sequence of str
        Plane names to include (default INTERP, SATUR, CR, GHOST).

    Returns
    -------
    ndarray shape bool
        True where a pixel is in any of the planes.

    Raises
    ------
    DataError
        If the file is missing or unreadable, or lacks a requested plane.
    """
    import fitsio

    path = os.fspath(path)
    _require(path, "fpM")
    nrow, ncol = int(shape[0]), int(shape[1])
    mask = np.zeros((nrow, ncol), dtype=bool)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fitsio warns about the variable-length span column
            with fitsio.FITS(path) as fits:
                hdus = _fpm_plane_hdus(fits, path)
                for name in planes:
                    if name not in hdus:
                        raise DataError(f"{path}: no mask plane {name} (planes: {sorted(hdus)})")
                    h = hdus[name]
                    if fits[h].get_nrows() == 0:
                        continue
                    # variable-length spans as objects: a file whose TFORM gives the true maximum length (1PB(n), not
                    # the 1PB(0) of SDSS's own files) would otherwise be read zero-padded to n bytes
                    tab = fits[h].read(columns=["nspan", "row0", "col0", "s"], vstorage="object")
                    for obj in tab:
                        _paint_spans(mask, obj, path, h)
    except DataError:
        raise
    except (OSError, ValueError, KeyError, IndexError) as exc:
        raise DataError(f"{path}: cannot read mask planes: {exc}") from exc
    return mask


def _paint_spans(mask, obj, path, hdu):
    nspan = int(obj["nspan"])
    if nspan == 0:
        return
    raw = np.asarray(obj["s"]).tobytes()
    width = len(raw) // (3 * nspan)
    if width not in (2, 4) or len(raw) != 3 * nspan * width:
        raise DataError(f"{path}: HDU {hdu} span data of {len(raw)} bytes for {nspan} spans")
    spans = np.frombuffer(raw, dtype=">i2" if width == 2 else ">i4").reshape(nspan, 3).astype(np.int64)
    rows = spans[:, 0] + int(obj["row0"])
    c0 = np.maximum(spans[:, 1] + int(obj["col0"]), 0)
    c1 = np.minimum(spans[:, 2] + int(obj["col0"]), mask.shape[1] - 1)
    ok = (rows >= 0) & (rows < mask.shape[0]) & (c0 <= c1)
    for r, a, b in zip(rows[ok], c0[ok], c1[ok]):
        mask[r, a : b + 1] = True


# --------------------------------------------------------------------------- field


def load_field(data_dir, run, camcol, field, bands=(0, 1, 2, 3, 4), box=None, psf_size=25):
    """Load bands of one SDSS field (or a cutout) as :class:`celeste.images.Image`.

    Pixel values are converted to electrons (SDSS data model, frame page)::

        DN     = image / calibration + sky_DN
        counts = DN * gain                     (electrons)
        sky    = sky_DN * calibration          (nanomaggies per pixel)

    so that ``counts ~ Poisson(iota * (sky + sources))`` with ``iota = gain /
    calibration`` electrons per nanomaggy (Regier et al. AoAS 2019, Sec. 2).

    The mask is the fpM planes INTERP, SATUR, CR, GHOST plus non-finite image
    pixels (whose counts are replaced by the sky counts).  If a band's fpM file
    is missing, a warning is logged and that band's mask holds only the
    non-finite pixels.

    Parameters
    ----------
    data_dir : str or path-like
        Root of the layout described in :func:`field_paths`.
    run, camcol, field : int
        SDSS identifiers.
    bands : sequence of int or str
        Bands to load (indices 0..4 or letters), in the order returned.
    box : (x0, x1, y0, y1) ints, optional
        Cutout in frame pixels (0-based, half-open).  The images' ``wcs`` is
        shifted, ``x0``/``y0`` hold the offset and ``psf_at(x, y)`` takes
        cutout coordinates.
    psf_size : int
        Odd side of the PSF stamps (see :func:`read_psfield`).

    Returns
    -------
    list of celeste.images.Image
        One per requested band.

    Raises
    ------
    DataError
        If a frame, the psField or the photoField file is missing or unusable
        (the message names the file).
    ConfigError
        If ``bands`` or ``box`` is invalid.
    """
    band_list = [band_index(b) for b in bands]
    if not band_list:
        raise ConfigError("bands: no band requested")
    paths = field_paths(data_dir, run, camcol, field)
    meta = read_photofield(paths["photofield"], field)
    _require(paths["psfield"], "psField")
    images = []
    for b in band_list:
        frame = read_frame(paths["frame"][b], box=box)
        psf = read_psfield(paths["psfield"], b, size=psf_size)
        h, w = frame.image.shape
        full_shape = (int(frame.header["NAXIS2"]), int(frame.header["NAXIS1"]))
        if os.path.isfile(paths["fpm"][b]):
            mask = read_fpm(paths["fpm"][b], full_shape)[frame.y0 : frame.y0 + h, frame.x0 : frame.x0 + w]
        else:
            log.warning("%s: missing fpM file; band %s has no pixel mask", paths["fpm"][b], BANDS[b])
            mask = np.zeros((h, w), dtype=bool)
        gain = float(meta["gain"][b])
        calib = frame.calibration
        bad = ~np.isfinite(frame.image)
        dn = np.where(bad, frame.sky, frame.image / calib[None, :] + frame.sky)
        images.append(
            Image(
                band=b,
                counts=dn * gain,
                sky=frame.sky * calib[None, :],
                calibration=calib,
                gain=gain,
                mask=np.ascontiguousarray(mask | bad),
                wcs=frame.wcs,
                psf_at=_shifted_psf(psf, frame.x0, frame.y0),
                dark_variance=float(meta["dark_variance"][b]),
                run=int(run),
                camcol=int(camcol),
                field=int(field),
                x0=frame.x0,
                y0=frame.y0,
                path=frame.path,
            )
        )
    return images


def _shifted_psf(psf, x0, y0):
    return ShiftedPsf(psf, x0, y0)


class ShiftedPsf:
    """``psf_at`` of a cutout: a picklable callable taking cutout coordinates.

    ``ShiftedPsf(model, x0, y0)(x, y) == model.psf_at(x + x0, y + y0)``.
    """

    def __init__(self, model, x0, y0):
        self.model, self.x0, self.y0 = model, int(x0), int(y0)

    def __call__(self, x, y):
        return self.model.psf_at(x + self.x0, y + self.y0)
