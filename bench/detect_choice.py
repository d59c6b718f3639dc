"""Combined (g+r+i) detection image vs per-band detection and merging, on the real field.

Usage (from the repository root)::

    python bench/detect_choice.py [--data-dir data/sdss] [--n-inject 300] [--seed 1]

Loads g, r, i of SDSS 2583-2-136 (the M2 field) and, for both methods of
:func:`celeste.detect.detect_sources`, each with SEP's cleaning on and off:

1. counts the detections on the whole field and on the east half (x >= 1024,
   away from M2) and times them; counts the detections on the negated images
   (an estimate of false detections);
2. injects ``--n-inject`` point sources (the field's own PSF at each place,
   Poisson noise, r-band flux log-uniform in 0.6-6 nmgy i.e. r 20.5-23,
   g = 0.7 r, i = 1.15 r as for a typical star) into the east half, at least
   5 arcsec from every real detection, and reports the fraction recovered
   within 1 arcsec, overall and by r magnitude.

Results are printed as a table; the run recorded in ``celeste/detect.py``
(module docstring, "Measured choice") printed::

    combined       : whole field  3731 detections, east half  1534, 6.8 s; on the negated image: whole 0, east 0
    per_band       : whole field  5290 detections, east half  1410, 7.1 s; on the negated image: whole 0, east 0
    combined+clean : whole field  2255 detections, east half  1057, 6.1 s; on the negated image: whole 0, east 0
    per_band+clean : whole field  2934 detections, east half  1029, 6.2 s; on the negated image: whole 0, east 0
      east half: combined detections without a per_band one within 1 arcsec: 190 (12.4 %)
      east half: per_band detections without a combined one within 1 arcsec: 63 (4.5 %)

    injected 300 point sources, r 20.5-23, east half
    method           all    r<22   20.5-21.5  21.5-22.0  22.0-22.5  22.5-23.0   detections
    combined         91.0   99.5     99.2    100.0     98.2     64.8   4005
    per_band         79.0  100.0    100.0    100.0     80.0     16.7   5526
    combined+clean   67.0   87.0     99.2     63.5     41.8     33.3   2427
    per_band+clean   66.7   89.1     95.0     77.8     54.5     11.1   3106

Takes about 75 s (loading the three bz2 frames is 10-20 s of it).
"""
import argparse
import copy
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from celeste.detect import detect_sources  # noqa: E402
from celeste.sdss import load_field  # noqa: E402

CONFIGS = {
    "combined": dict(method="combined", clean=False),
    "per_band": dict(method="per_band", clean=False),
    "combined+clean": dict(method="combined", clean=True),
    "per_band+clean": dict(method="per_band", clean=True),
}
METHODS = tuple(CONFIGS)


def tangent_arcsec(ra, dec, ra0, dec0):
    e = ((np.asarray(ra) - ra0 + 180) % 360 - 180) * math.cos(math.radians(dec0)) * 3600
    n = (np.asarray(dec) - dec0) * 3600
    return np.column_stack([e, n])


def inject(images, ra, dec, r_flux, rng):
    """Copies of ``images`` with point sources added (Poisson electrons of the band's PSF)."""
    colour = {1: 0.7, 2: 1.0, 3: 1.15}
    out = []
    for im in images:
        im2 = copy.copy(im)
        counts = im.counts.copy()
        H, W = counts.shape
        x, y = im.wcs.all_world2pix(ra, dec, 0)
        iota = im.iota
        for k in range(len(ra)):
            xi, yi = int(round(x[k])), int(round(y[k]))
            psf = im.psf_at(x[k], y[k])
            P = psf.shape[0]
            h = P // 2
            # shift the stamp by the sub-pixel offset (bilinear is enough for a bench)
            from scipy.ndimage import shift

            stamp = shift(psf, (y[k] - yi, x[k] - xi), order=1, mode="constant")
            stamp = np.clip(stamp, 0, None)
            stamp /= stamp.sum()
            y0, y1 = max(yi - h, 0), min(yi + h + 1, H)
            x0, x1 = max(xi - h, 0), min(xi + h + 1, W)
            sub = stamp[y0 - (yi - h): P - ((yi + h + 1) - y1), x0 - (xi - h): P - ((xi + h + 1) - x1)]
            mean_e = r_flux[k] * colour[im.band] * sub * iota[None, x0:x1]
            counts[y0:y1, x0:x1] += rng.poisson(mean_e)
        im2.counts = counts
        out.append(im2)
    return out


def negated(images):
    """Copies with the sky-subtracted signal negated (counts -> 2 sky iota - counts).

    Detections on these are noise peaks and artefacts: an estimate of the false
    detections at the same threshold.
    """
    out = []
    for im in images:
        im2 = copy.copy(im)
        im2.counts = 2.0 * im.sky * im.iota[None, :] - im.counts
        out.append(im2)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default="data/sdss")
    p.add_argument("--n-inject", type=int, default=300)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    ims = load_field(args.data_dir, 2583, 2, 136, bands=(1, 2, 3))
    print(f"loaded g r i in {time.perf_counter() - t0:.1f} s")
    r_im = [im for im in ims if im.band == 2][0]
    H, W = r_im.shape

    real = {}
    for m in METHODS:
        t0 = time.perf_counter()
        t = detect_sources(ims, **CONFIGS[m])
        dt = time.perf_counter() - t0
        east = np.asarray(t["x"]) >= W // 2
        real[m] = t
        tn = detect_sources(negated(ims), **CONFIGS[m])
        neg_east = (np.asarray(tn["x"]) >= W // 2).sum()
        print(f"{m:15s}: whole field {len(t):5d} detections, east half {east.sum():5d}, {dt:.1f} s; "
              f"on the negated image: whole {len(tn)}, east {neg_east}")
    # detections unique to one method, east half
    for m, o in (METHODS[:2], METHODS[1::-1]):
        a, b = real[m], real[o]
        ea = np.asarray(a["x"]) >= W // 2
        eb = np.asarray(b["x"]) >= W // 2
        ra0, dec0 = float(np.median(a["ra"])), float(np.median(a["dec"]))
        from scipy.spatial import cKDTree

        tree = cKDTree(tangent_arcsec(b["ra"][eb], b["dec"][eb], ra0, dec0))
        d, _ = tree.query(tangent_arcsec(a["ra"][ea], a["dec"][ea], ra0, dec0))
        print(f"  east half: {m} detections without a {o} one within 1 arcsec: {(d > 1).sum()} "
              f"({100 * (d > 1).mean():.1f} %)")

    # injection positions: east half, 40 px from edges, >= 5 arcsec from any real detection
    rng = np.random.default_rng(args.seed)
    allreal = np.concatenate([np.column_stack([np.asarray(real[m]["ra"]), np.asarray(real[m]["dec"])])
                              for m in METHODS])
    ra0, dec0 = float(np.median(allreal[:, 0])), float(np.median(allreal[:, 1]))
    from scipy.spatial import cKDTree

    tree = cKDTree(tangent_arcsec(allreal[:, 0], allreal[:, 1], ra0, dec0))
    chosen = []
    while len(chosen) < args.n_inject:
        x = rng.uniform(W // 2 + 40, W - 40)
        y = rng.uniform(40, H - 40)
        ra, dec = r_im.wcs.all_pix2world(x, y, 0)
        pt = tangent_arcsec(ra, dec, ra0, dec0)[0]
        if tree.query(pt)[0] < 5.0:
            continue
        if any(np.hypot(*(pt - q)) < 5.0 for q in (c[2] for c in chosen)):
            continue
        chosen.append((float(ra), float(dec), pt))
    ra_i = np.array([c[0] for c in chosen])
    dec_i = np.array([c[1] for c in chosen])
    r_flux = 10 ** rng.uniform(math.log10(0.6), math.log10(6.0), size=len(ra_i))
    r_mag = 22.5 - 2.5 * np.log10(r_flux)
    ims_inj = inject(ims, ra_i, dec_i, r_flux, rng)
    pts_i = tangent_arcsec(ra_i, dec_i, ra0, dec0)
    bins = [(20.5, 21.5), (21.5, 22.0), (22.0, 22.5), (22.5, 23.0)]
    print(f"\ninjected {len(ra_i)} point sources, r 20.5-23, east half")
    print("method           all    r<22   " + "  ".join(f"{lo}-{hi}" for lo, hi in bins) + "   detections")
    for m in METHODS:
        t = detect_sources(ims_inj, **CONFIGS[m])
        tr = cKDTree(tangent_arcsec(t["ra"], t["dec"], ra0, dec0))
        d, _ = tr.query(pts_i)
        rec = d < 1.0
        cols = [f"{100 * rec.mean():5.1f}", f"{100 * rec[r_mag < 22].mean():5.1f}"]
        for lo, hi in bins:
            s = (r_mag >= lo) & (r_mag < hi)
            cols.append(f"{100 * rec[s].mean():7.1f}")
        print(f"{m:15s} " + "  ".join(cols) + f"   {len(t)}")


if __name__ == "__main__":
    main()
