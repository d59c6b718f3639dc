"""Download one SDSS field from a Science Archive Server (SAS) mirror.

``celeste-fetch --run 2583 --camcol 2 --field 136 --data-dir data/sdss`` writes
the files the SDSS reader needs, in the reader's layout::

    <data-dir>/<run>/<camcol>/<field>/frame-<band>-<run:06d>-<camcol>-<field:04d>.fits.bz2
    <data-dir>/<run>/<camcol>/<field>/psField-<run:06d>-<camcol>-<field:04d>.fits
    <data-dir>/<run>/<camcol>/<field>/fpM-<run:06d>-<band><camcol>-<field:04d>.fits
    <data-dir>/<run>/<camcol>/photoField-<run:06d>-<camcol>.fits

Frames are kept bzip2-compressed, as SDSS distributes them; the fpM masks,
which the SAS serves gzipped (``.fit.gz``), are stored uncompressed.

Where the files come from is a *layout*: a dict of URL templates relative to
the mirror root, one per file kind (see :data:`LAYOUTS`).  The default,
``sas-dr17``, follows the SAS tree of DR8 and later releases (rerun 301), as
described by the SDSS data model pages for ``BOSS_PHOTOOBJ/frames`` (frame),
``PHOTO_REDUX/RERUN/RUN/objcs/CAMCOL`` (psField, fpM) and ``BOSS_PHOTOOBJ``
(photoField), e.g.
``https://data.sdss.org/sas/dr17/eboss/photoObj/frames/301/2583/2/frame-r-002583-2-0136.fits.bz2``.
Another tree can be described by a JSON file holding the same four keys
(``--layout my_layout.json``) or, from Python, by a dict.

Robustness, per file:

* retries with exponential backoff (``backoff * 2**k`` seconds, capped at
  ``max_backoff``) after connection errors, timeouts, HTTP 5xx, 408 and 429;
  other HTTP errors (404, 403, ...) fail at once;
* bytes arrive in ``<file>.part``; a later attempt (or a later run) resumes it
  with an HTTP ``Range`` request, appending when the server answers 206 and
  starting over when it answers 200 (within one run, resumes also send
  ``If-Range`` with the server's ETag so a changed file is not spliced);
* before a file is moved into place its size must equal the announced length
  (Content-Length, or the total of Content-Range), and its content (after
  bzip2/gzip decompression) must be a complete FITS file that astropy opens;
  content that fails is deleted and downloaded again, and after the last
  attempt a :class:`~celeste.errors.DataError` names the URL and the file;
* the move into place is an atomic :func:`os.replace`, so a reader never sees
  a half-written file;
* a file already present and valid is not downloaded again;
* ``--jobs`` files (default 2) are handled at once; one process per data
  directory and field, please: two processes writing the same ``.part``
  file are not coordinated.

What verification can and cannot see: the FITS walk catches truncation and
non-FITS content; bzip2 (frames) and gzip (fpM) carry CRCs, so damaged bytes
anywhere in those files are caught too.  The plain psField and photoField
files have no CHECKSUM/DATASUM keywords, so wrong bytes *inside a data unit*
of the right length would pass; the size check and If-Range make that
unlikely in practice.

Only the standard library (:mod:`urllib`) speaks HTTP; the usual proxy
environment variables are honoured.
"""
import argparse
import bz2
import gzip
import io
import json
import logging
import os
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Mapping, Optional, Union
from urllib.error import HTTPError, URLError
from urllib.request import Request, build_opener

from celeste import BANDS, __version__
from celeste.errors import CelesteError, ConfigError, DataError

log = logging.getLogger(__name__)

DEFAULT_MIRROR = "https://data.sdss.org/sas"
"""Root of the SDSS Science Archive Server; layouts are relative to it."""

_PHOTO_KINDS = ("frame", "psField", "fpM", "photoField")

LAYOUTS = {
    "sas-dr17": {
        "frame": "dr17/eboss/photoObj/frames/301/{run}/{camcol}/"
                 "frame-{band}-{run:06d}-{camcol}-{field:04d}.fits.bz2",
        "psField": "dr17/eboss/photo/redux/301/{run}/objcs/{camcol}/"
                   "psField-{run:06d}-{camcol}-{field:04d}.fit",
        "fpM": "dr17/eboss/photo/redux/301/{run}/objcs/{camcol}/"
               "fpM-{run:06d}-{band}{camcol}-{field:04d}.fit.gz",
        "photoField": "dr17/eboss/photoObj/301/{run}/"
                      "photoField-{run:06d}-{camcol}.fits",
    },
    "sas-dr12": {
        "frame": "dr12/boss/photoObj/frames/301/{run}/{camcol}/"
                 "frame-{band}-{run:06d}-{camcol}-{field:04d}.fits.bz2",
        "psField": "dr12/boss/photo/redux/301/{run}/objcs/{camcol}/"
                   "psField-{run:06d}-{camcol}-{field:04d}.fit",
        "fpM": "dr12/boss/photo/redux/301/{run}/objcs/{camcol}/"
               "fpM-{run:06d}-{band}{camcol}-{field:04d}.fit.gz",
        "photoField": "dr12/boss/photoObj/301/{run}/"
                      "photoField-{run:06d}-{camcol}.fits",
    },
}
"""URL templates per layout name, relative to the mirror root.

Each layout maps the kinds ``frame``, ``psField``, ``fpM`` and ``photoField``
to a :meth:`str.format` template with the fields ``run``, ``camcol``,
``field`` (ints) and ``band`` (one letter of ``ugriz``; frame and fpM only).
The SAS paths follow the SDSS data model (DR8+ tree, rerun 301):
https://data.sdss.org/datamodel/files/BOSS_PHOTOOBJ/frames/RERUN/RUN/CAMCOL/frame.html,
https://data.sdss.org/datamodel/files/PHOTO_REDUX/RERUN/RUN/objcs/CAMCOL/psField.html,
https://data.sdss.org/datamodel/files/PHOTO_REDUX/RERUN/RUN/objcs/CAMCOL/fpM.html,
https://data.sdss.org/datamodel/files/BOSS_PHOTOOBJ/RERUN/RUN/photoField.html.
"""

LOCAL_NAMES = {
    "frame": "{run}/{camcol}/{field}/frame-{band}-{run:06d}-{camcol}-{field:04d}.fits.bz2",
    "psField": "{run}/{camcol}/{field}/psField-{run:06d}-{camcol}-{field:04d}.fits",
    "fpM": "{run}/{camcol}/{field}/fpM-{run:06d}-{band}{camcol}-{field:04d}.fits",
    "photoField": "{run}/{camcol}/photoField-{run:06d}-{camcol}.fits",
}
"""Where each kind is stored, relative to the data directory (the reader's layout)."""

_CHUNK = 1 << 16
_FITS_BLOCK = 2880
_CARD = 80


@dataclass(frozen=True)
class FieldFile:
    """One file of a field: where it comes from and where it goes.

    Attributes
    ----------
    kind : str
        ``frame``, ``psField``, ``fpM`` or ``photoField``.
    band : str or None
        Band letter for frame and fpM, else None.
    url : str
        Full URL on the mirror.
    path : pathlib.Path
        Destination in the reader's layout.
    """

    kind: str
    band: Optional[str]
    url: str
    path: Path


class _Retry(Exception):
    """A transfer failed in a way another attempt may fix."""


class _Invalid(Exception):
    """The received bytes are not a complete FITS file."""


# --------------------------------------------------------------------------
# layouts and file lists


def load_layout(layout: Union[str, Mapping[str, str]]) -> dict:
    """Resolve a layout name, JSON file or dict to a dict of URL templates.

    Parameters
    ----------
    layout : str or Mapping[str, str]
        A key of :data:`LAYOUTS`, the path of a JSON file holding an object
        with the keys ``frame``, ``psField``, ``fpM``, ``photoField``, or such
        a mapping itself.

    Returns
    -------
    dict
        kind -> URL template relative to the mirror root.

    Raises
    ------
    ConfigError
        Unknown name, unreadable file, missing kinds or a template that does
        not format (the message names ``--layout``).
    """
    if isinstance(layout, Mapping):
        templates = dict(layout)
        where = "the layout mapping"
    elif layout in LAYOUTS:
        return dict(LAYOUTS[layout])
    elif isinstance(layout, (str, os.PathLike)) and Path(layout).is_file():
        where = str(layout)
        try:
            templates = json.loads(Path(layout).read_text())
        except (OSError, ValueError) as err:
            raise ConfigError(f"--layout: cannot read layout file {layout}: {err}") from None
        if not isinstance(templates, dict):
            raise ConfigError(f"--layout: {layout} must hold a JSON object of URL templates")
    else:
        names = ", ".join(sorted(LAYOUTS))
        raise ConfigError(f"--layout: {layout!r} is neither a known layout ({names}) "
                          "nor an existing JSON file")
    missing = [k for k in _PHOTO_KINDS if k not in templates]
    if missing:
        raise ConfigError(f"--layout: {where} lacks templates for {', '.join(missing)}")
    for kind in _PHOTO_KINDS:
        try:
            str(templates[kind]).format(run=1, camcol=1, field=1, band="r")
        except (KeyError, IndexError, ValueError) as err:
            raise ConfigError(f"--layout: template for {kind} in {where} does not format: "
                              f"{err!r}") from None
    return {k: str(templates[k]) for k in _PHOTO_KINDS}


def _check_ids(run, camcol, field, bands):
    for name, value, low in (("--run", run, 1), ("--camcol", camcol, 1), ("--field", field, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{name}: expected an integer >= {low}, got {value!r}")
    if camcol > 6:
        raise ConfigError(f"--camcol: SDSS camera columns are 1..6, got {camcol}")
    if not isinstance(bands, str) or not bands:
        raise ConfigError(f"--bands: expected letters from 'ugriz', got {bands!r}")
    bad = sorted(set(bands) - set(BANDS))
    if bad:
        raise ConfigError(f"--bands: {''.join(bad)!r} not among 'ugriz' (got {bands!r})")
    if len(set(bands)) != len(bands):
        raise ConfigError(f"--bands: repeated band in {bands!r}")


def field_files(run: int, camcol: int, field: int, data_dir=".", *,
                mirror: str = DEFAULT_MIRROR, bands: str = "ugriz",
                layout: Union[str, Mapping[str, str]] = "sas-dr17") -> list:
    """List the files of one field: URL on the mirror and local destination.

    Parameters
    ----------
    run, camcol, field : int
        SDSS identifiers (camcol 1..6).
    data_dir : str or path
        Root of the reader's layout (see :data:`LOCAL_NAMES`).
    mirror : str
        Mirror root URL; the layout templates are appended after a ``/``.
    bands : str
        Band letters for frames and fpM masks, in any order.
    layout : str or Mapping
        See :func:`load_layout`.

    Returns
    -------
    list of FieldFile
        Per band a frame and an fpM (in ``bands`` order), then the psField and
        the camcol's photoField.

    Raises
    ------
    ConfigError
        Bad identifiers, bands or layout.
    """
    _check_ids(run, camcol, field, bands)
    templates = load_layout(layout)
    root = Path(data_dir)
    base = mirror.rstrip("/")
    ids = dict(run=run, camcol=camcol, field=field)
    out = []

    def add(kind, band=None):
        url = base + "/" + templates[kind].format(band=band, **ids).lstrip("/")
        path = root / LOCAL_NAMES[kind].format(band=band, **ids)
        out.append(FieldFile(kind, band, url, path))

    for band in bands:
        add("frame", band)
        add("fpM", band)
    add("psField")
    add("photoField")
    return out


# --------------------------------------------------------------------------
# content checks


def _card_value(card: str):
    """The value of a fixed-format FITS header card as int, bool or str."""
    text = card[10:].split("/", 1)[0].strip()
    if text == "T":
        return True
    if text == "F":
        return False
    try:
        return int(text)
    except ValueError:
        return text


def _check_fits_structure(data) -> int:
    """Walk the HDUs of an uncompressed FITS byte string; return their count.

    Each HDU is a header of 2880-byte blocks of 80-character cards ending with
    ``END``, then a data unit of ``|BITPIX| / 8 * GCOUNT * (PCOUNT + NAXIS1 *
    ... * NAXISn)`` bytes padded to a multiple of 2880 (FITS Standard 4.0,
    sections 3.3-3.4 and equation 2; random groups skip NAXIS1 = 0, section 6).
    The file must end at an HDU boundary (trailing all-zero blocks allowed).

    Raises
    ------
    _Invalid
        Not FITS, or truncated.
    """
    view = memoryview(data)
    size = len(view)
    pos = 0
    n_hdu = 0
    while pos < size:
        first = bytes(view[pos:pos + 9])
        if n_hdu and first != b"XTENSION=":
            rest = view[pos:]
            if len(rest) % _FITS_BLOCK == 0 and not any(bytes(rest)):
                break  # zero padding after the last HDU
            raise _Invalid(f"unexpected bytes at offset {pos} after HDU {n_hdu - 1}")
        if not n_hdu and first != b"SIMPLE  =":
            raise _Invalid("does not start with a FITS primary header (SIMPLE =)")
        keys = {}
        end_found = False
        while not end_found:
            if pos + _FITS_BLOCK > size:
                raise _Invalid(f"header of HDU {n_hdu} truncated at offset {size}")
            block = bytes(view[pos:pos + _FITS_BLOCK])
            pos += _FITS_BLOCK
            for i in range(0, _FITS_BLOCK, _CARD):
                card = block[i:i + _CARD].decode("ascii", errors="replace")
                key = card[:8].rstrip()
                if key == "END":
                    end_found = True
                    break
                if card[8:10] == "= " and key not in keys:
                    keys[key] = _card_value(card)
        try:
            bitpix = keys["BITPIX"]
            naxis = keys["NAXIS"]
            if bitpix not in (8, 16, 32, 64, -32, -64) or not 0 <= naxis <= 999:
                raise _Invalid(f"HDU {n_hdu}: bad BITPIX {bitpix} or NAXIS {naxis}")
            axes = [keys[f"NAXIS{k}"] for k in range(1, naxis + 1)]
        except (KeyError, TypeError):
            raise _Invalid(f"HDU {n_hdu}: header lacks BITPIX/NAXIS keywords") from None
        if any(not isinstance(a, int) or isinstance(a, bool) or a < 0 for a in axes):
            raise _Invalid(f"HDU {n_hdu}: bad NAXISn values {axes}")
        if n_hdu == 0 and keys.get("GROUPS") is True and axes and axes[0] == 0:
            axes = axes[1:]
        pcount = keys.get("PCOUNT", 0)
        gcount = keys.get("GCOUNT", 1)
        if not isinstance(pcount, int) or not isinstance(gcount, int):
            raise _Invalid(f"HDU {n_hdu}: bad PCOUNT/GCOUNT")
        n_elem = 1
        for a in axes:
            n_elem *= a
        nbytes = 0 if naxis == 0 else abs(bitpix) // 8 * gcount * (pcount + n_elem)
        padded = -(-nbytes // _FITS_BLOCK) * _FITS_BLOCK
        if pos + padded > size:
            raise _Invalid(f"data of HDU {n_hdu} truncated: needs {pos + padded} bytes, "
                           f"has {size}")
        pos += padded
        n_hdu += 1
    if n_hdu == 0:
        raise _Invalid("empty file")
    return n_hdu


def _decompress(data: bytes) -> bytes:
    """Undo bzip2 or gzip compression recognized by the magic bytes."""
    try:
        if data[:3] == b"BZh":
            return bz2.decompress(data)
        if data[:2] == b"\x1f\x8b":
            return gzip.decompress(data)
    except (OSError, EOFError, ValueError, zlib.error) as err:
        raise _Invalid(f"damaged compressed stream: {err}") from None
    return data


def _fits_content(data: bytes) -> bytes:
    """Check that ``data`` (possibly bz2/gzip) is complete FITS; return it uncompressed."""
    raw = _decompress(data)
    _check_fits_structure(raw)
    import warnings

    from astropy.io import fits

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(io.BytesIO(raw), lazy_load_hdus=False) as hdul:
                for hdu in hdul:
                    hdu.header  # noqa: B018 - parse every header
    except Exception as err:  # astropy raises a variety of types on bad input
        raise _Invalid(f"astropy cannot open it: {err}") from None
    return raw


def verify_fits(path) -> int:
    """Check that a file is a complete FITS file (bzip2/gzip allowed).

    Parameters
    ----------
    path : str or path
        File to check; ``.bz2``/``.gz`` content is recognized by magic bytes.

    Returns
    -------
    int
        Number of HDUs.

    Raises
    ------
    DataError
        Unreadable, damaged compression, not FITS, or truncated; the message
        names the file.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read: {err}") from None
    try:
        raw = _fits_content(data)
    except _Invalid as err:
        raise DataError(f"{path}: not a valid FITS file: {err}") from None
    return _check_fits_structure(raw)


# --------------------------------------------------------------------------
# transfer


def _progress_bar(enabled, total, initial, name):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, unit="B", unit_scale=True,
                unit_divisor=1024, desc=name, leave=False, file=sys.stderr)


def _parse_content_range(value):
    """``bytes a-b/total`` -> (a, total or None)."""
    try:
        unit, spec = value.strip().split(" ", 1)
        span, total = spec.split("/", 1)
        start = int(span.split("-", 1)[0])
        return start, (None if total.strip() == "*" else int(total))
    except (AttributeError, ValueError):
        raise _Retry(f"unreadable Content-Range {value!r}") from None


def _transfer(url, part, path, timeout, opener, progress, state):
    """One attempt: fetch ``url`` into ``part``, resuming what is there.

    ``state["validator"]`` carries the entity tag (or Last-Modified date) seen
    in an earlier attempt; a resume sends it as ``If-Range`` so that a server
    whose file changed in between answers 200 with the new file instead of
    appending its tail to the old head (RFC 9110, section 13.1.5).

    Raises _Retry for transient failures, DataError for permanent ones.
    """
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": f"celeste-fetch/{__version__}", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if state.get("validator"):
            headers["If-Range"] = state["validator"]
    try:
        resp = opener.open(Request(url, headers=headers), timeout=timeout)
    except HTTPError as err:
        err.close()
        if err.code == 416:
            part.unlink(missing_ok=True)
            raise _Retry("HTTP 416 for the resume range; starting over") from None
        if err.code >= 500 or err.code in (408, 429):
            raise _Retry(f"HTTP {err.code} {err.reason}") from None
        raise DataError(f"{url}: HTTP {err.code} {err.reason}; {path} not written") from None
    except (URLError, HTTPException, OSError) as err:  # OSError covers timeouts and resets
        raise _Retry(f"{type(err).__name__}: {getattr(err, 'reason', err)}") from None

    with resp:
        status = resp.status
        etag = resp.headers.get("ETag")
        if etag and not etag.startswith("W/"):
            state["validator"] = etag
        elif resp.headers.get("Last-Modified"):
            state["validator"] = resp.headers["Last-Modified"]
        if status == 206:
            start, total = _parse_content_range(resp.headers.get("Content-Range"))
            if start != offset:
                part.unlink(missing_ok=True)
                raise _Retry(f"server resumed at byte {start}, not {offset}; starting over")
            mode = "ab"
            log.debug("resuming %s at byte %d", url, offset)
        elif status in (200, None):  # None: file:// URLs carry no status
            if offset:
                log.debug("server ignored the range for %s; starting over", url)
            offset = 0
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.strip().isdigit() else None
            mode = "wb"
        else:
            raise _Retry(f"unexpected HTTP status {status}")
        bar = _progress_bar(progress, total, offset, path.name)
        received = offset
        try:
            with open(part, mode) as out:
                while True:
                    try:
                        chunk = resp.read(_CHUNK)
                    except (HTTPException, OSError) as err:
                        raise _Retry(f"{type(err).__name__} after {received} bytes: "
                                     f"{err}") from None
                    if not chunk:
                        break
                    out.write(chunk)
                    received += len(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
                out.flush()
                os.fsync(out.fileno())
        except OSError as err:
            raise DataError(f"{part}: cannot write: {err}") from None
        finally:
            if bar is not None:
                bar.close()
    if total is not None:
        if received < total:
            raise _Retry(f"body ended after {received} of {total} bytes")
        if received > total:
            part.unlink(missing_ok=True)
            raise _Retry(f"received {received} bytes, more than the announced {total}")
    return received


def _stored_bytes(path: Path, data: bytes, raw: bytes) -> Optional[bytes]:
    """What to write at ``path``: None to keep the downloaded bytes as they are."""
    name = path.name
    if name.endswith(".bz2"):
        return None if data[:3] == b"BZh" else bz2.compress(raw)
    if name.endswith(".gz"):
        return None if data[:2] == b"\x1f\x8b" else gzip.compress(raw)
    return None if raw is data else raw


def _finalize(part: Path, path: Path):
    """Verify ``part`` and move it (or its decompressed content) atomically to ``path``."""
    data = part.read_bytes()
    raw = _fits_content(data)
    stored = _stored_bytes(path, data, raw)
    try:
        if stored is None:
            os.replace(part, path)
        else:
            tmp = path.with_name(path.name + ".tmp")
            with open(tmp, "wb") as out:
                out.write(stored)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
            part.unlink(missing_ok=True)
    except OSError as err:
        raise DataError(f"{path}: cannot move into place: {err}") from None


def _check_settings(retries, timeout, backoff, max_backoff):
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ConfigError(f"--retries: expected an integer >= 0, got {retries!r}")
    if not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ConfigError(f"--timeout: expected seconds > 0, got {timeout!r}")
    for value in (backoff, max_backoff):
        if not isinstance(value, (int, float)) or not value >= 0:
            raise ConfigError(f"--backoff: expected seconds >= 0, got {value!r}")


def download(url: str, path, *, retries: int = 5, timeout: float = 60.0,
             backoff: float = 1.0, max_backoff: float = 60.0,
             progress: Optional[bool] = None, opener=None) -> Path:
    """Download one FITS file with retries, resume and verification.

    Bytes go to ``<path>.part``; when complete and valid they are moved to
    ``path`` with :func:`os.replace`.  Compression is matched to the name of
    ``path``: a ``.bz2``/``.gz`` name keeps (or gets) that compression, any
    other name stores plain FITS (gzip or bzip2 content is decompressed).

    Parameters
    ----------
    url : str
        Source URL (http, https or file).
    path : str or path
        Destination; parent directories are created.
    retries : int
        Further attempts after the first (so ``retries + 1`` in all).  Every
        attempt counts, including ones that resumed and made progress.
    timeout : float
        Seconds for connecting and for each socket read.
    backoff, max_backoff : float
        Wait ``min(max_backoff, backoff * 2**k)`` seconds before retry k+1.
    progress : bool or None
        Show a tqdm byte counter; None shows it when stderr is a terminal.
    opener : urllib.request.OpenerDirector, optional
        Defaults to :func:`urllib.request.build_opener` (honours proxies).

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    DataError
        A permanent HTTP error (e.g. 404), or failure after the last attempt
        (network, short body, content not FITS); names the URL and the file.
        Content that is not FITS is never moved to ``path``.
    ConfigError
        Negative ``retries``, non-positive ``timeout``, negative backoff.
    """
    _check_settings(retries, timeout, backoff, max_backoff)
    path = Path(path)
    part = path.with_name(path.name + ".part")
    if progress is None:
        progress = sys.stderr.isatty()
    if opener is None:
        opener = build_opener()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"{path}: cannot create directory: {err}") from None
    attempts = retries + 1
    problem = "no attempt made"
    state = {}
    for attempt in range(attempts):
        if attempt:
            delay = min(max_backoff, backoff * 2 ** (attempt - 1))
            log.warning("%s: attempt %d/%d failed (%s); retrying in %.3g s",
                        url, attempt, attempts, problem, delay)
            time.sleep(delay)
        started = time.monotonic()
        try:
            nbytes = _transfer(url, part, path, timeout, opener, progress, state)
            _finalize(part, path)
        except _Retry as err:
            problem = str(err)
            continue
        except _Invalid as err:
            problem = f"content is not valid FITS: {err}"
            part.unlink(missing_ok=True)
            continue
        seconds = time.monotonic() - started
        log.info("fetched %s (%d bytes, %.1f s)", path.name, nbytes, seconds)
        return path
    raise DataError(f"{url}: failed after {attempts} attempt(s) ({problem}); "
                    f"{path} not written")


# --------------------------------------------------------------------------
# one field


def fetch_field(run: int, camcol: int, field: int, data_dir=".", *,
                mirror: str = DEFAULT_MIRROR, bands: str = "ugriz",
                layout: Union[str, Mapping[str, str]] = "sas-dr17",
                retries: int = 5, timeout: float = 60.0, backoff: float = 1.0,
                max_backoff: float = 60.0, progress: Optional[bool] = None,
                opener=None, jobs: int = 2) -> list:
    """Download every file of one field that is not already present and valid.

    Files already at their destination are checked with :func:`verify_fits`
    and skipped when valid (an invalid one is downloaded again and replaced).
    A file that cannot be fetched does not stop the others; the error is
    raised after all were tried, so a rerun fetches only what is missing.
    ``jobs`` files are handled at once (threads: transfers wait on the
    network and bzip2 checks release the GIL).

    Parameters
    ----------
    run, camcol, field : int
        SDSS identifiers.
    data_dir : str or path
        Root of the reader's layout (see :data:`LOCAL_NAMES`).
    mirror, bands, layout
        See :func:`field_files`.
    retries, timeout, backoff, max_backoff, progress, opener
        See :func:`download`.  A given ``opener`` is shared by the threads.
    jobs : int
        Files handled concurrently (>= 1).

    Returns
    -------
    list of pathlib.Path
        Local paths of all the field's files, in :func:`field_files` order.

    Raises
    ------
    ConfigError
        Bad identifiers, bands, layout, retry settings or ``jobs``.
    DataError
        At least one file could not be fetched; the message names the first
        failing URL and file and how many failed.
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"--jobs: expected an integer >= 1, got {jobs!r}")
    files = field_files(run, camcol, field, data_dir, mirror=mirror, bands=bands, layout=layout)
    _check_settings(retries, timeout, backoff, max_backoff)

    def one(f):
        if f.path.exists():
            try:
                verify_fits(f.path)
            except DataError as err:
                log.warning("%s; downloading it again", err)
            else:
                log.info("%s already present and valid", f.path)
                return None
        try:
            download(f.url, f.path, retries=retries, timeout=timeout, backoff=backoff,
                     max_backoff=max_backoff, progress=progress, opener=opener)
        except DataError as err:
            log.error("%s", err)
            return err
        return None

    if jobs == 1:
        outcomes = [one(f) for f in files]
    else:
        with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="celeste-fetch") as pool:
            outcomes = list(pool.map(one, files))
    failures = [err for err in outcomes if err is not None]
    if failures:
        more = f" (and {len(failures) - 1} more of {len(files)} files)" if len(failures) > 1 else ""
        raise DataError(f"{failures[0]}{more}")
    return [f.path for f in files]


# --------------------------------------------------------------------------
# command line


def _parser():
    p = argparse.ArgumentParser(
        prog="celeste-fetch",
        description="Download one SDSS field (frames, psField, fpM, photoField) from a "
                    "Science Archive Server mirror into <data-dir>/<run>/<camcol>/<field>/.")
    p.add_argument("--run", type=int, required=True, help="SDSS run number")
    p.add_argument("--camcol", type=int, required=True, help="camera column, 1..6")
    p.add_argument("--field", type=int, required=True, help="field number")
    p.add_argument("--data-dir", default=".", help="root of the local layout (default: .)")
    p.add_argument("--mirror", default=DEFAULT_MIRROR,
                   help=f"mirror root URL (default: {DEFAULT_MIRROR})")
    p.add_argument("--layout", default="sas-dr17",
                   help="URL layout: " + ", ".join(sorted(LAYOUTS)) +
                        ", or a JSON file of templates (default: sas-dr17)")
    p.add_argument("--bands", default="ugriz", help="bands to fetch (default: ugriz)")
    p.add_argument("--retries", type=int, default=5,
                   help="further attempts per file after the first (default: 5)")
    p.add_argument("--timeout", type=float, default=60.0,
                   help="seconds to connect and per read (default: 60)")
    p.add_argument("--backoff", type=float, default=1.0,
                   help="first retry delay in seconds, doubled each retry (default: 1)")
    p.add_argument("--jobs", type=int, default=2,
                   help="files fetched at the same time (default: 2)")
    p.add_argument("--quiet", action="store_true", help="log warnings and errors only")
    return p


def main(argv=None) -> int:
    """Entry point of ``celeste-fetch``; returns the exit status.

    Returns
    -------
    int
        0 on success; 2 after printing a one-line message when a
        :class:`~celeste.errors.CelesteError` occurs (argparse also exits
        with 2 on malformed arguments).
    """
    args = _parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                            format="%(levelname)s %(name)s: %(message)s")
    try:
        paths = fetch_field(args.run, args.camcol, args.field, args.data_dir,
                            mirror=args.mirror, bands=args.bands, layout=args.layout,
                            retries=args.retries, timeout=args.timeout, backoff=args.backoff,
                            jobs=args.jobs)
    except CelesteError as err:
        message = " ".join(str(err).split())
        print(f"celeste-fetch: error: {message}", file=sys.stderr)
        return 2
    log.info("field %d-%d-%d complete: %d files under %s", args.run, args.camcol,
             args.field, len(paths), args.data_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
