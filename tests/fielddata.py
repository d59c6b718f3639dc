"""Helpers shared by the tests that run on the sample field 2583-2-136 (not a test module).

The session fixtures built from these (``plain_data``, ``detected_init``) are in the
repository's ``conftest.py``.  Tests that break files clone the shared data with
:func:`clone` (symlinks) and replace the files they break, never editing in place.
"""
import bz2
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

ROOT = Path(__file__).resolve().parents[1]
DATA = os.path.join(ROOT, "data", "sdss")
RUN, CAMCOL, FIELD = 2583, 2, 136
REL_FIELD = os.path.join("2583", "2", "136")
REL_CAMCOL = os.path.join("2583", "2")
PSFIELD = f"psField-{RUN:06d}-{CAMCOL}-{FIELD:04d}.fits"
PHOTOFIELD = f"photoField-{RUN:06d}-{CAMCOL}.fits"

#: a 36 x 36 arcsec region in the ordinary-sky half of the field (about nine sources)
TINY = ["323.36", "323.37", "-0.70", "-0.69"]
#: three well separated sources of the tiny region (fitted positions, deg), in RA order
TINY_SOURCES = ([323.3603656, 323.3641696, 323.3678315], [-0.6989333, -0.6919402, -0.6928713])

#: 72 x 72 arcsec cut by 30" boxes with 10" overlap into a 3 x 3 grid (about thirty sources)
GRID_REGION = ("323.36", "323.38", "-0.70", "-0.68")
GRID_BOX_ARGS = ("--box-arcsec", "30", "--overlap-arcsec", "10")


def frame_name(band, bz=False):
    return f"frame-{band}-{RUN:06d}-{CAMCOL}-{FIELD:04d}.fits" + (".bz2" if bz else "")


def fpm_name(band):
    return f"fpM-{RUN:06d}-{band}{CAMCOL}-{FIELD:04d}.fits"


def fpath(root, name):
    return os.path.join(root, REL_FIELD, name)


def stage_data(dest):
    """Copy the sample field to ``dest`` with its frames decompressed (cutouts of plain FITS read fast)."""
    src_field = Path(DATA) / REL_FIELD
    dst_field = Path(dest) / REL_FIELD
    dst_field.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(DATA) / REL_CAMCOL / PHOTOFIELD, dst_field.parent)
    for f in src_field.iterdir():
        if f.name.endswith(".bz2"):
            with bz2.open(f, "rb") as fin, open(dst_field / f.name[:-4], "wb") as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
        elif not f.name.startswith("."):
            shutil.copy(f, dst_field)
    return Path(dest)


def clone(src_root, dst_root):
    """Copy a data tree as symlinks (cheap); files to break are replaced, never edited in place."""
    for dirpath, _, files in os.walk(src_root):
        rel = os.path.relpath(dirpath, src_root)
        os.makedirs(os.path.join(dst_root, rel), exist_ok=True)
        for f in files:
            if f.startswith("."):
                continue
            os.symlink(os.path.join(dirpath, f), os.path.join(dst_root, rel, f))
    return dst_root


def replace_bytes(path, raw):
    os.unlink(path)
    with open(path, "wb") as f:
        f.write(raw)


def rewrite_fits(path, edit):
    """Read ``path`` (a symlink into the shared copy), apply ``edit(hdul)``, write a real file there."""
    with fits.open(path, memmap=False) as hdul:
        hdul = fits.HDUList([h.copy() for h in hdul])
    edit(hdul)
    os.unlink(path)
    hdul.writeto(path)


def pixel_of(path, ra, dec):
    """Nearest pixel (x, y) of (ra, dec) in a frame file."""
    from astropy.wcs import WCS

    with fits.open(path) as h:
        x, y = WCS(h[0].header).all_world2pix([ra], [dec], 0)
    return int(round(float(x[0]))), int(round(float(y[0])))


def write_init(path, ra, dec, **cols):
    """An --init catalog with the given positions (deg) and columns."""
    t = Table({"ra": np.asarray(ra, float), "dec": np.asarray(dec, float), **cols})
    t.write(path, overwrite=True)
    return str(path)


def write_init_catalog(data_dir, path):
    """SEP detection on the field (celeste.initcat.detect_field) written as an --init FITS."""
    from celeste.initcat import detect_field
    from celeste.options import JobOptions

    opts = JobOptions(region=tuple(float(v) for v in GRID_REGION), data_dir=str(data_dir))
    cat = detect_field(opts, RUN, CAMCOL, FIELD)
    cat.write(path, overwrite=True)
    return path


def cli_command(data_dir, init, out, run_dir, ranks=None, threads=1, region=GRID_REGION, box_args=GRID_BOX_ARGS):
    """The celeste-infer command line as a subprocess (under mpiexec when ``ranks`` is given)."""
    cmd = [sys.executable, "-m", "celeste.cli", "--region", *region, *box_args, "--data-dir", str(data_dir),
           "--init", str(init), "--out", str(out), "--run-dir", str(run_dir), "--threads", str(threads),
           "--residual-rounds", "1", "--overwrite", "--no-progress"]
    if ranks is not None:
        cmd = [shutil.which("mpiexec"), "-n", str(ranks)] + cmd
    return cmd


def run_command(cmd, timeout=600):
    """Run a command from the repository root; assert it exits 0 (stderr in the message)."""
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc


def read_catalog(path):
    return Table.read(path, hdu=1)
