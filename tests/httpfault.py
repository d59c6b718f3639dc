"""A loopback HTTP server for download tests: SAS-style paths, Range requests, faults.

:class:`FaultServer` serves in-memory files on 127.0.0.1 (ephemeral port) from
a background thread and can be told, per path, to fail the next requests in
chosen ways (see :data:`FAULTS`).  It answers ``Range: bytes=a-`` with 206
(416 past the end), sends an ETag and honours ``If-Range``.  Every GET is
recorded with its ``Range`` and ``If-Range`` headers and the status sent.  :func:`sample_field_files` maps the project's
sample field ``data/sdss/2583/2/136`` into the SAS DR17 URL tree, spelled out
here independently of ``celeste.fetch.LAYOUTS`` so that tests check the
layout rather than repeat it.

Use as a context manager (or call :meth:`FaultServer.stop`): stopping wakes
every stalled handler and closes the listening socket.
"""
import bz2
import gzip
import hashlib
import socket
import struct
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional

FAULTS = {
    "drop": "send headers and half the body, then reset the connection (TCP RST)",
    "truncate": "announce the full Content-Length, send half the body, close cleanly",
    "500": "answer HTTP 500 Internal Server Error",
    "503": "answer HTTP 503 Service Unavailable",
    "404": "answer HTTP 404 Not Found",
    "slow": "send nothing for `stall_seconds` (None: until the server stops), then close (timeout before headers)",
    "stall": "send headers and half the body, then stall for `stall_seconds` (None: until the server stops), "
             "then close",
    "corrupt": "send the right status and length, but bytes that are not the file",
}
"""Fault kinds understood by :meth:`FaultServer.inject`."""

SAS_PREFIX = "/sas"
"""Path of the mirror root on the server: mirror URL = base_url + SAS_PREFIX."""

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sdss"


@dataclass
class Served:
    """One file of the sample field: where it is served, where it goes, what it must hold."""

    url_path: str       # path on the server, below the host
    local_name: str     # path relative to the reader's data directory
    body: bytes         # bytes the server sends
    expected: bytes     # bytes the local file must hold (fpM: uncompressed)


def small_frame_stand_in(band):
    """A small bzip2-compressed FITS file (32 x 48 float32 image + one extension).

    Decompressing a real 2048 x 1489 frame takes about a second, so tests that
    are about transfer logic rather than the real bytes serve this instead.
    """
    import io

    import numpy as np
    from astropy.io import fits

    image = np.arange(32 * 48, dtype=np.float32).reshape(32, 48) + "ugriz".index(band)
    hdul = fits.HDUList([fits.PrimaryHDU(image), fits.ImageHDU(np.ones(48, np.float32))])
    buf = io.BytesIO()
    hdul.writeto(buf)
    return bz2.compress(buf.getvalue())


def sample_field_files(workdir, run=2583, camcol=2, field=136, bands="ugriz",
                       small_frames=False):
    """Map the sample field into the SAS DR17 tree, gzipping the fpM masks.

    Parameters
    ----------
    workdir : path
        Directory for the gzipped fpM copies.
    small_frames : bool
        Serve :func:`small_frame_stand_in` instead of the real frames.

    Returns
    -------
    served : dict str -> bytes
        URL path -> body, for :class:`FaultServer`.
    files : list of Served
    """
    workdir = Path(workdir)
    src = SAMPLE / str(run) / str(camcol) / str(field)
    tag = f"{run:06d}-{camcol}-{field:04d}"
    frames = f"{SAS_PREFIX}/dr17/eboss/photoObj/frames/301/{run}/{camcol}"
    objcs = f"{SAS_PREFIX}/dr17/eboss/photo/redux/301/{run}/objcs/{camcol}"
    local = f"{run}/{camcol}/{field}"
    files = []
    for band in bands:
        name = f"frame-{band}-{tag}.fits.bz2"
        body = small_frame_stand_in(band) if small_frames else (src / name).read_bytes()
        files.append(Served(f"{frames}/{name}", f"{local}/{name}", body, body))
        fpm = f"fpM-{run:06d}-{band}{camcol}-{field:04d}"
        plain = (src / f"{fpm}.fits").read_bytes()
        gz = workdir / f"{fpm}.fit.gz"
        gz.write_bytes(gzip.compress(plain, mtime=0))
        files.append(Served(f"{objcs}/{fpm}.fit.gz", f"{local}/{fpm}.fits", gz.read_bytes(),
                            plain))
    ps = (src / f"psField-{tag}.fits").read_bytes()
    files.append(Served(f"{objcs}/psField-{tag}.fit", f"{local}/psField-{tag}.fits", ps, ps))
    pf = f"photoField-{run:06d}-{camcol}.fits"
    body = (src.parent / pf).read_bytes()
    files.append(Served(f"{SAS_PREFIX}/dr17/eboss/photoObj/301/{run}/{pf}",
                        f"{run}/{camcol}/{pf}", body, body))
    return {f.url_path: f.body for f in files}, files


@dataclass
class RequestRecord:
    path: str
    range: Optional[str]
    status: int
    fault: Optional[str]
    if_range: Optional[str] = None


def _junk(n):
    pattern = b"this is not a FITS file; "
    return (pattern * (n // len(pattern) + 1))[:n]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "httpfault/1"

    def log_message(self, format, *args):  # keep test output quiet
        pass

    def do_GET(self):
        srv = self.server.owner
        self.close_connection = True
        path = self.path.split("?", 1)[0]
        rng = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        fault = srv._next_fault(path)
        body = srv.files.get(path)
        if fault in ("500", "503", "404") or body is None:
            code = int(fault) if fault else 404
            srv._record(path, rng, code, fault, if_range)
            self.send_error(code)
            return
        if fault == "slow":
            srv._record(path, rng, 0, fault, if_range)
            srv.stopping.wait(srv.stall_seconds)
            return
        etag = '"' + hashlib.sha1(body).hexdigest()[:16] + '"'
        status, start, end = 200, 0, len(body)
        if rng and srv.honour_range and (if_range is None or if_range == etag):
            parsed = _parse_range(rng, len(body))
            if parsed is None:
                srv._record(path, rng, 416, fault, if_range)
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.send_header("Connection", "close")
                self.end_headers()
                return
            status, (start, end) = 206, parsed
        srv._record(path, rng, status, fault, if_range)
        payload = body[start:end]
        if fault == "corrupt":
            payload = _junk(len(payload))
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", etag)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(body)}")
        self.send_header("Connection", "close")
        self.end_headers()
        if fault in ("drop", "truncate", "stall"):
            payload = payload[: len(payload) // 2]
        try:
            for i in range(0, len(payload), 1 << 16):
                self.wfile.write(payload[i:i + (1 << 16)])
            self.wfile.flush()
            if fault == "stall":
                srv.stopping.wait(srv.stall_seconds)
            elif fault == "drop":
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
                self.connection.close()
        except OSError:
            pass  # the client went away first


def _parse_range(value, size):
    """``bytes=a-`` or ``bytes=a-b`` -> (start, end exclusive); None if unsatisfiable."""
    try:
        unit, spec = value.split("=", 1)
        first, last = spec.split(",")[0].strip().split("-", 1)
        start = int(first)
        end = int(last) + 1 if last.strip() else size
    except ValueError:
        return None
    if unit.strip() != "bytes" or start >= size or end <= start:
        return None
    return start, min(end, size)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        pass  # resets and broken pipes are what these tests provoke


class FaultServer:
    """Threaded HTTP server on 127.0.0.1 with per-path fault schedules.

    Parameters
    ----------
    files : dict str -> bytes
        URL path -> body.
    stall_seconds : float or None
        How long ``slow`` and ``stall`` faults hold the connection; None holds it until
        :meth:`stop`, so that only the client's timeout ends it (no race between the two).

    Attributes
    ----------
    base_url : str
        ``http://127.0.0.1:<port>``.
    mirror : str
        ``base_url + SAS_PREFIX``.
    requests : list of RequestRecord
        Every GET, in arrival order.
    honour_range : bool
        False makes the server ignore Range headers (always 200, whole body).
    """

    def __init__(self, files, stall_seconds=2.0):
        self.files = dict(files)
        self.stall_seconds = stall_seconds
        self.honour_range = True
        self.requests = []
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._faults = {}
        self._always = {}
        self._swaps = {}
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self.port = self._httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.mirror = self.base_url + SAS_PREFIX
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def inject(self, path, *faults):
        """Make the next ``len(faults)`` GETs of ``path`` fail as listed, in order."""
        for f in faults:
            if f not in FAULTS:
                raise ValueError(f"unknown fault {f!r}; known: {sorted(FAULTS)}")
        with self._lock:
            self._faults.setdefault(path, []).extend(faults)

    def fail_always(self, path, fault):
        """Make every GET of ``path`` fail with ``fault``."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}")
        with self._lock:
            self._always[path] = fault

    def gets(self, path):
        """Records of the GETs of ``path``."""
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def _next_fault(self, path):
        with self._lock:
            if path in self._always:
                return self._always[path]
            queue = self._faults.get(path)
            return queue.pop(0) if queue else None

    def swap_after(self, path, n_gets, body):
        """Serve ``body`` at ``path`` once ``n_gets`` GETs of it were answered.

        Models a file changed on the mirror between two attempts.
        """
        with self._lock:
            self._swaps[path] = (n_gets, body)

    def _record(self, path, rng, status, fault, if_range=None):
        with self._lock:
            self.requests.append(RequestRecord(path, rng, status, fault, if_range))
            if path in self._swaps:
                n_gets, body = self._swaps[path]
                if sum(r.path == path for r in self.requests) >= n_gets:
                    self.files[path] = body
                    del self._swaps[path]

    def stop(self):
        """Wake stalled handlers, stop serving and close the socket."""
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
