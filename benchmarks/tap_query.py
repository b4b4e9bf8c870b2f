"""Benchmark: TAP on a 1,000,000-row ObsCore index, beside SIA 2 and a plain SQLite scan.

Generates (once, under ``benchmarks/data/``, git-ignored) an index of N ObsCore rows: 0.02 deg
stamps scattered over a 20 x 18 deg patch straddling RA = 0 (2,800 per square degree, so a
0.1 deg cone holds ~90 image centres and a target lies in ~1 image), four instruments, eight
bands.
Then, on one server (uvicorn on 127.0.0.1, in this process), times the same three questions
asked three ways:

- a 0.1 deg cone (image centres inside it, ~100 rows): TAP ``CONTAINS(POINT, CIRCLE)``, and
  footprints meeting it: TAP ``INTERSECTS(s_region, CIRCLE)`` vs SIA 2 ``POS=CIRCLE`` vs a
  plain SQLite scan computing the distance of every row;
- ``COUNT(*)`` grouped by instrument and band: TAP vs the same SQL on the index;
- a 10,000-target upload join (``CONTAINS(POINT(t.ra, t.dec), o.s_region)``): TAP vs the
  vectorized in-memory lookup catalog jobs use (``ArchiveIndex.lookup``).

"server" is the time inside the service (translate + execute + write, no HTTP); "http" the
whole request on loopback. Medians of ``--repeat`` runs after one warm-up.

Run: ``.venv/bin/python benchmarks/tap_query.py [--rows 1000000] [--targets 10000]``
(``--quick``: 100,000 rows, 2,000 targets).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
from astropy.io.votable import from_table
from astropy.table import Table

from vo_service.archive.index import ArchiveIndex
from vo_service.archive.records import column_types
from vo_service.products.tap_request import OUTPUT_FORMATS, TapRequest
from vo_service.products.tap_results import run, write

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from server import start_server  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
TILE = 0.02  # side of an image, deg
INSTRUMENTS = ("VIS", "NISP", "WFC", "HSC")
BANDS = ("u", "g", "r", "i", "z", "Y", "J", "H")
CONE = (0.3, -1.2, 0.1)


def generate(path: Path, rows: int, seed: int = 7) -> None:
    """``rows`` ObsCore rows written straight into a new index (triggers fill the R*Tree)."""
    rng = np.random.default_rng(seed)
    index = ArchiveIndex(path)
    names = list(column_types())
    ra = rng.uniform(-10.0, 10.0, rows) % 360.0
    dec = rng.uniform(-10.0, 8.0, rows)
    angle = rng.uniform(0, np.pi / 2, rows)
    half = TILE / 2 * np.sqrt(2)
    corners = np.stack([angle + k * np.pi / 2 for k in range(4)], axis=1)
    cos_dec = np.cos(np.radians(dec))[:, None]
    vertex_ra = (ra[:, None] + half * np.cos(corners) / cos_dec) % 360.0
    vertex_dec = dec[:, None] + half * np.sin(corners)
    instrument = rng.integers(0, len(INSTRUMENTS), rows)
    band = rng.integers(0, len(BANDS), rows)
    start = time.perf_counter()
    batch = 20_000
    with index.db.conn:
        for first in range(0, rows, batch):
            values = []
            for k in range(first, min(rows, first + batch)):
                region = json.dumps([[round(float(a), 7), round(float(d), 7)] for a, d in
                                     zip(vertex_ra[k], vertex_dec[k], strict=True)])
                row = {name: None for name in names}
                row.update(
                    obs_publisher_did=f"ivo://bench/SYN?img{k:07d}", obs_collection="SYN",
                    obs_id=f"img{k:07d}", path=f"/nonexistent/img{k:07d}.fits", hdu=0,
                    dataproduct_type="image", calib_level=2,
                    instrument_name=INSTRUMENTS[instrument[k]], facility_name="SYN",
                    s_ra=float(ra[k]), s_dec=float(dec[k]), s_fov=TILE * math.sqrt(2),
                    s_region=region, band=BANDS[band[k]], product_type="BGSUB",
                    access_format="application/fits", file_size=0, mtime=0.0, shape="[]",
                    wide=0)
                values.append([row[name] for name in names])
            index.db.conn.executemany(
                f"INSERT INTO images ({', '.join(names)}) VALUES "
                f"({', '.join('?' * len(names))})", values)
        index.db.conn.execute("INSERT OR REPLACE INTO meta VALUES ('generation', '1')")
    index.close()
    print(f"generated {rows:,} rows in {time.perf_counter() - start:.0f} s: {path}")


def median_time(function: Callable[[], object], repeat: int) -> tuple[float, object]:
    function()  # warm-up (caches, the SIA in-memory index)
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def tap_server_time(index_path: Path, query: str, uploads: tuple = ()) -> int:
    request = TapRequest(query, "ADQL", 1_000_000, OUTPUT_FORMATS[0], uploads)
    result = run(request, index_path, "http://127.0.0.1", seconds=600)
    write(result, "tabledata")
    return len(result.rows)


def tap_http(base: str, query: str, files: dict | None = None) -> int:
    data = {"LANG": "ADQL", "QUERY": query, "MAXREC": "1000000"}
    if files:
        data["UPLOAD"] = "t1,param:t1"
    response = httpx.post(f"{base}/tap/sync", data=data, files=files, timeout=600)
    response.raise_for_status()
    return response.content.count(b"<TR>")  # not parsed: the client's time is not measured


def sia_http(base: str) -> int:
    ra, dec, radius = CONE
    response = httpx.get(f"{base}/query", params={"POS": f"CIRCLE {ra} {dec} {radius}",
                                                  "MAXREC": "1000000"}, timeout=600)
    response.raise_for_status()
    return response.content.count(b"<TR>")


def sqlite_scan(index_path: Path) -> int:
    """Every row's distance to the cone centre in SQL (SQLite math functions), no index."""
    ra, dec, radius = CONE
    connection = sqlite3.connect(f"file:{index_path}?mode=ro", uri=True)
    sql = ("SELECT obs_publisher_did FROM images WHERE degrees(acos(min(1.0, "
           "sin(radians(s_dec)) * sin(radians(?)) + cos(radians(s_dec)) * cos(radians(?)) "
           "* cos(radians(s_ra - ?))))) <= ?")
    rows = connection.execute(sql, [dec, dec, ra, radius]).fetchall()
    connection.close()
    return len(rows)


def sqlite_group(index_path: Path) -> int:
    connection = sqlite3.connect(f"file:{index_path}?mode=ro", uri=True)
    rows = connection.execute("SELECT instrument_name, band, COUNT(*) FROM images "
                              "GROUP BY instrument_name, band").fetchall()
    connection.close()
    return len(rows)


def targets_table(index: ArchiveIndex, count: int, seed: int = 3) -> Table:
    rng = np.random.default_rng(seed)
    return Table({"id": np.arange(count), "ra": rng.uniform(-9.0, 9.0, count) % 360.0,
                  "dec": rng.uniform(-9.0, 7.0, count)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--targets", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="100,000 rows, 2,000 targets")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.targets, args.repeat = 100_000, 2_000, 3
    state = DATA / f"tap-{args.rows}-{TILE}"
    index_path = state / "index.sqlite"
    if not index_path.exists():
        generate(index_path, args.rows)
    from dataclasses import replace

    from vo_service.config import Limits, Settings

    settings = replace(Settings(), state_dir=state, data_roots=(),
                       limits=Limits(maxrec_default=1_000_000,
                                     max_upload_rows=max(10_000, args.targets)))
    with tempfile.TemporaryDirectory():
        server = start_server(settings)
    base = server.base_url
    index = ArchiveIndex(index_path)
    ra, dec, radius = CONE
    centre_query = ("SELECT obs_publisher_did, s_ra, s_dec, access_url FROM ivoa.obscore WHERE "
                    f"CONTAINS(POINT('ICRS', s_ra, s_dec), CIRCLE('ICRS', {ra}, {dec}, "
                    f"{radius})) = 1")
    region_query = ("SELECT obs_publisher_did, s_ra, s_dec, access_url FROM ivoa.obscore WHERE "
                    f"INTERSECTS(s_region, CIRCLE('ICRS', {ra}, {dec}, {radius})) = 1")
    group_query = ("SELECT instrument_name, band, COUNT(*) AS n FROM ivoa.obscore "
                   "GROUP BY instrument_name, band")
    join_query = ("SELECT t.id, o.obs_publisher_did, o.access_url FROM tap_upload.t1 AS t "
                  "JOIN ivoa.obscore AS o ON CONTAINS(POINT('ICRS', t.ra, t.dec), "
                  "o.s_region) = 1")
    targets = targets_table(index, args.targets)
    buffer = io.BytesIO()
    from_table(targets).to_xml(buffer)
    upload = {"t1": ("t1.xml", buffer.getvalue(), "application/x-votable+xml")}
    from vo_service.products.tap_request import UploadSpec
    from vo_service.products.tap_upload import read_upload

    upload_table = read_upload(UploadSpec("t1", "param:t1"), buffer.getvalue(),
                               max_rows=args.targets, max_columns=10)
    print(f"{args.rows:,} ObsCore rows; cone r={radius} deg at ({ra}, {dec}); "
          f"{args.targets:,} uploaded targets; medians of {args.repeat}")
    rows = []

    def measure(label: str, function: Callable[[], object]) -> float:
        seconds, count = median_time(function, args.repeat)
        rows.append((label, seconds, count))
        print(f"  {label:58s} {seconds * 1000:10.1f} ms  {count:>8} rows", flush=True)
        return seconds

    print("cone, image centres:")
    tap_centre = measure("TAP CONTAINS(POINT(s_ra,s_dec), CIRCLE) server",
                         lambda: tap_server_time(index_path, centre_query))
    measure("TAP CONTAINS(POINT(s_ra,s_dec), CIRCLE) http",
            lambda: tap_http(base, centre_query))
    scan = measure("plain SQLite scan (distance of every row)",
                   lambda: sqlite_scan(index_path))
    print("cone, footprints meeting it:")
    tap_region = measure("TAP INTERSECTS(s_region, CIRCLE) server",
                         lambda: tap_server_time(index_path, region_query))
    tap_region_http = measure("TAP INTERSECTS(s_region, CIRCLE) http",
                              lambda: tap_http(base, region_query))
    sia = measure("SIA 2 POS=CIRCLE http", lambda: sia_http(base))
    print("census:")
    tap_group = measure("TAP COUNT(*) GROUP BY instrument, band server",
                        lambda: tap_server_time(index_path, group_query))
    plain_group = measure("plain SQLite GROUP BY", lambda: sqlite_group(index_path))
    print(f"upload join, {args.targets:,} targets:")
    tap_join = measure("TAP join server", lambda: tap_server_time(
        index_path, join_query, (upload_table,)))
    measure("TAP join http (multipart upload)", lambda: tap_http(base, join_query, upload))
    lookup = measure("ArchiveIndex.lookup (in-memory, vectorized)", lambda: len(
        index.lookup(np.asarray(targets["ra"]), np.asarray(targets["dec"]))))
    print("ratios:")
    print(f"  plain scan / TAP cone (centres):          {scan / tap_centre:8.1f}x")
    print(f"  SIA 2 / TAP cone (footprints, http):      {sia / tap_region_http:8.2f}x")
    print(f"  TAP region (server) vs scan:              {scan / tap_region:8.1f}x")
    print(f"  TAP GROUP BY / plain SQLite GROUP BY:     {tap_group / plain_group:8.2f}x")
    print(f"  TAP join / in-memory lookup:              {tap_join / lookup:8.2f}x")
    server.stop()
    index.close()


if __name__ == "__main__":
    main()
