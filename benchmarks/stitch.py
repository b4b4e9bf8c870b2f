"""Stitched stamps, side by side: vo-service's stitching against plain (clipped) stamps and
against a reproject-only mosaic per target, on a 2 x 2 tiling of each kind.

    .venv/bin/python benchmarks/stitch.py            # 2048^2 tiles, 10,000 targets
    .venv/bin/python benchmarks/stitch.py --quick    # 1024^2 tiles, 2,000 targets

Targets are 64 x 64 pixel stamps; 20 % of them cross an edge of the tile that holds their
centre (the rest lie inside it). Two tilings of the same sky:
  shared   four patches of one TAN-SIP pixel grid (tract/patch style), 40-pixel overlaps
  own      four tiles with their own tangent points, 40-pixel overlaps
Methods:
  plain            the engine's clipped stamps (iter_cutouts) on the tile holding the centre
  stitched-copy    engine.stitch on the shared tiling: exact copies from the other patches
  stitched-interp  engine.stitch on the own-grid tiling, bilinear resampling (reproject_interp)
  stitched-flux    the same, flux-conserving (reproject_exact)
  reproject-coadd  reproject.mosaicking.reproject_and_coadd of the overlapping tiles onto
                   each target's grid (reproject_interp, combine 'first'): what a user of
                   reproject alone would write; run on a subset of the crossing targets and
                   extrapolated to the whole set (inside targets: the plain stamp)
Every stamp is rendered to FITS bytes and dropped, so memory stays bounded; "peak MB" is
the largest increase of the process's anonymous memory (RssAnon, sampled every 50 ms; the
tiles are memory-mapped file pages and not counted). "/cpu-s" is stamps per CPU second of
this process, steadier than wall time on a shared machine.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vo_service.engine.batch import iter_cutouts  # noqa: E402
from vo_service.engine.grids import box_wcs  # noqa: E402
from vo_service.engine.mosaic import grid_choice  # noqa: E402
from vo_service.engine.reading import OpenImage  # noqa: E402
from vo_service.engine.stitch import Tile, iter_stitched  # noqa: E402
from vo_service.shapes import CenterSize  # noqa: E402

warnings.simplefilter("ignore")
DATA = REPO / "benchmarks" / "data" / "stitch"
STAMP = 64
SCALE_DEG = 0.2 / 3600
CROSSING_SHARE = 0.2
OVERLAP = 40  # pixels shared by neighbouring tiles (less than a stamp, as in MER tilings)


# ---- data ----------------------------------------------------------------------------

def sip_header(crval: tuple[float, float], crpix: tuple[float, float], side: int) -> fits.Header:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"]
    wcs.wcs.crval = list(crval)
    wcs.wcs.crpix = list(crpix)
    wcs.wcs.cd = np.array([[-SCALE_DEG, 0.0], [0.0, SCALE_DEG]])
    header = wcs.to_header()
    header["A_ORDER"] = header["B_ORDER"] = 2
    header["A_2_0"], header["B_0_2"] = 2e-8, -1.5e-8
    header["NAXIS"], header["NAXIS1"], header["NAXIS2"] = 2, side, side
    return header


def make_tilings(side: int) -> tuple[list[Path], list[Path], WCS]:
    """The shared-grid patches, the own-grid tiles (2 x 2 each) and the tract WCS."""
    folder = DATA / str(side)
    step = side - OVERLAP
    tract_side = step + side
    tract = sip_header((150.0, 2.2), ((tract_side + 1) / 2, (tract_side + 1) / 2), tract_side)
    tract_wcs = WCS(tract)
    shared, own = [], []
    rng = np.random.default_rng(1)
    for row in range(2):
        for column in range(2):
            x0, y0 = column * step, row * step
            patch = tract.copy()
            patch["CRPIX1"] -= x0
            patch["CRPIX2"] -= y0
            centre = tract_wcs.all_pix2world(x0 + (side - 1) / 2, y0 + (side - 1) / 2, 0)
            own_header = sip_header((float(centre[0]), float(centre[1])),
                                    ((side + 1) / 2, (side + 1) / 2), side)
            for kind, header, paths in (("shared", patch, shared), ("own", own_header, own)):
                path = folder / f"{kind}_{row}{column}.fits"
                if not path.exists():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    data = rng.normal(0.0, 1.0, (side, side)).astype(np.float32)
                    fits.PrimaryHDU(data, header).writeto(path)
                paths.append(path)
    return shared, own, tract_wcs


def make_targets(tract_wcs: WCS, side: int, count: int, seed: int = 7
                 ) -> tuple[list[CenterSize], np.ndarray]:
    """``count`` stamps, CROSSING_SHARE of them across an edge of their centre's patch."""
    step = side - OVERLAP
    tract_side = step + side
    rng = np.random.default_rng(seed)
    want_crossing = int(round(count * CROSSING_SHARE))
    xs, ys, crossing = [], [], []
    while len(xs) < count:
        x, y = rng.uniform(STAMP, tract_side - STAMP, 2)
        # the patch whose centre is nearest holds it (patch centres on a 2 x 2 grid)
        column = int(np.argmin([abs(x - (c * step + side / 2)) for c in range(2)]))
        row = int(np.argmin([abs(y - (r * step + side / 2)) for r in range(2)]))
        x0, y0 = column * step, row * step
        crosses = not (x0 + STAMP / 2 <= x < x0 + side - STAMP / 2
                       and y0 + STAMP / 2 <= y < y0 + side - STAMP / 2)
        if crosses and sum(crossing) >= want_crossing:
            continue
        if not crosses and len(xs) - sum(crossing) >= count - want_crossing:
            continue
        xs.append(x)
        ys.append(y)
        crossing.append(crosses)
    ra, dec = tract_wcs.all_pix2world(np.array(xs), np.array(ys), 0)
    regions = [CenterSize(float(r), float(d), STAMP, STAMP, "pix") for r, d in
               zip(ra, dec, strict=True)]
    return regions, np.array(crossing)


# ---- measuring -----------------------------------------------------------------------

def anonymous_memory() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


def measure(run: Callable[[], int]) -> tuple[int, float, float, float]:
    """(stamps, wall s, cpu s, peak MB above the start) of one run."""
    start_memory, peak, stop = anonymous_memory(), [0], threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            peak[0] = max(peak[0], anonymous_memory() - start_memory)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    wall, cpu = time.perf_counter(), time.process_time()
    stamps = run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    stop.set()
    sampler.join()
    peak[0] = max(peak[0], anonymous_memory() - start_memory)
    return stamps, wall, cpu, peak[0] / 1e6


def by_grid(paths: list[Path], regions: list[CenterSize]) -> dict[int, list[int]]:
    """Target indices per tile holding their centre."""
    images = [OpenImage(path) for path in paths]
    try:
        choice = grid_choice(images, np.array([r.ra for r in regions]),
                             np.array([r.dec for r in regions]))
    finally:
        for image in images:
            image.close()
    return {tile: np.flatnonzero(choice == tile).tolist() for tile in range(len(paths))}


def run_plain(paths: list[Path], regions: list[CenterSize], groups: dict[int, list[int]]) -> int:
    made = 0
    for tile, members in groups.items():
        with OpenImage(paths[tile]) as image:
            for result in iter_cutouts(image, [regions[i] for i in members]):
                made += len(result.fits_bytes()) > 0
    return made


def run_stitched(paths: list[Path], regions: list[CenterSize], groups: dict[int, list[int]],
                 method: str) -> int:
    images = [OpenImage(path) for path in paths]
    tiles = [Tile(image, path.name) for image, path in zip(images, paths, strict=True)]
    made = 0
    try:
        for tile, members in groups.items():
            for result in iter_stitched(tiles[tile], tiles[:tile] + tiles[tile + 1:],
                                        [regions[i] for i in members], method=method):
                made += len(result.fits_bytes()) > 0
    finally:
        for image in images:
            image.close()
    return made


def run_reproject_coadd(paths: list[Path], regions: list[CenterSize],
                        groups: dict[int, list[int]], subset: set[int]) -> int:
    """reproject_and_coadd of the overlapping tiles onto each target's grid (the grid of the
    tile holding its centre), for the targets in ``subset``."""
    from reproject import reproject_interp
    from reproject.mosaicking import reproject_and_coadd

    hdus = [fits.open(path, memmap=True)[0] for path in paths]
    wcss = [WCS(hdu.header) for hdu in hdus]
    made = 0
    for tile, members in groups.items():
        for index in members:
            if index not in subset:
                continue
            region = regions[index]
            x, y = wcss[tile].all_world2pix(region.ra, region.dec, 0)
            x0, y0 = int(np.ceil(x - STAMP / 2)), int(np.ceil(y - STAMP / 2))
            target = box_wcs(wcss[tile], x0, y0, (STAMP, STAMP))
            corners = target.all_pix2world([[0, 0], [STAMP - 1, 0], [0, STAMP - 1],
                                            [STAMP - 1, STAMP - 1]], 0)
            inputs = []
            for hdu, wcs in zip(hdus, wcss, strict=True):
                px, py = wcs.all_world2pix(corners[:, 0], corners[:, 1], 0)
                n = hdu.header["NAXIS1"]
                if px.max() >= -0.5 and px.min() < n - 0.5 and py.max() >= -0.5 \
                        and py.min() < n - 0.5:
                    inputs.append((hdu.data, wcs))
            image, _ = reproject_and_coadd(inputs, target, shape_out=(STAMP, STAMP),
                                           reproject_function=reproject_interp,
                                           combine_function="first")
            made += len(fits.PrimaryHDU(image.astype(np.float32),
                                        target.to_header(relax=True)).data.tobytes()) > 0
    for hdu in hdus:
        hdu._file.close()
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1024^2 tiles, 2,000 targets")
    parser.add_argument("--targets", type=int, help="number of targets")
    parser.add_argument("--baseline", type=int, help="crossing targets for reproject-coadd")
    args = parser.parse_args()
    side = 1024 if args.quick else 2048
    count = args.targets or (2000 if args.quick else 10_000)
    baseline = args.baseline or (50 if args.quick else 200)
    shared, own, tract_wcs = make_tilings(side)
    regions, crossing = make_targets(tract_wcs, side, count)
    shared_groups, own_groups = by_grid(shared, regions), by_grid(own, regions)
    crossing_indices = np.flatnonzero(crossing)
    subset = set(crossing_indices[:baseline].tolist())
    print(f"{count} targets, {crossing.sum()} ({crossing.mean():.0%}) crossing a tile edge; "
          f"2 x 2 tiles of {side}^2 float32 pixels; {STAMP} x {STAMP} stamps")
    runs = [
        ("plain", lambda: run_plain(shared, regions, shared_groups), 1.0),
        ("stitched-copy", lambda: run_stitched(shared, regions, shared_groups, "interp"), 1.0),
        ("stitched-interp", lambda: run_stitched(own, regions, own_groups, "interp"), 1.0),
        ("stitched-flux", lambda: run_stitched(own, regions, own_groups, "flux"), 1.0),
    ]
    # warm up imports and first-use allocations (reproject, scipy, astropy coordinates:
    # about 24 MB once) outside the timed runs
    for method in ("interp", "flux"):
        run_stitched(own, regions[:50], by_grid(own, regions[:50]), method)
    rows = []
    for name, run, _ in runs:
        stamps, wall, cpu, peak = measure(run)
        rows.append((name, stamps, wall, cpu, peak))
    stamps, wall, cpu, peak = measure(
        lambda: run_reproject_coadd(own, regions, own_groups, subset))
    # extrapolate: the crossing targets at the measured rate, the others as plain stamps
    plain_rate_wall = rows[0][2] / rows[0][1]
    plain_rate_cpu = rows[0][3] / rows[0][1]
    inside = count - crossing.sum()
    scale = crossing.sum() / max(stamps, 1)
    rows.append(("reproject-coadd*", count, wall * scale + inside * plain_rate_wall,
                 cpu * scale + inside * plain_rate_cpu, peak))
    reference = rows[2][1] / rows[2][3]
    print(f"{'method':<18}{'stamps':>8}{'wall s':>9}{'stamps/s':>10}{'/cpu-s':>9}"
          f"{'x interp':>10}{'peak MB':>9}")
    for name, stamps, wall, cpu, peak in rows:
        per_cpu = stamps / cpu
        print(f"{name:<18}{stamps:>8}{wall:>9.2f}{stamps / wall:>10.0f}{per_cpu:>9.0f}"
              f"{per_cpu / reference:>10.2f}{peak:>9.1f}")
    print(f"* measured on {len(subset)} crossing targets and extrapolated "
          f"({len(subset)} stamps took {rows[-1][4]:.1f} MB at peak)")


if __name__ == "__main__":
    main()
