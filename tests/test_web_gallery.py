"""The gallery's typed records, and the JSON the page's JavaScript reads from them."""

from __future__ import annotations

import json
from pathlib import Path

from starlette.responses import JSONResponse

from vo_service.engine.cutout import StampStatus
from vo_service.products.manifest import ManifestRow, read_manifest, write_manifest
from vo_service.web.gallery import (
    GalleryColumn,
    GalleryNote,
    GalleryStamp,
    build_gallery,
    load_gallery,
)

GOLDEN = Path(__file__).parent / "data" / "gallery_page_v1.json"
WAVELENGTHS = {"VIS": 7e-7, "NIR-Y": 1.0e-6, "NIR-J": 1.2e-6, "NIR-H": 1.6e-6}
URL = "http://127.0.0.1:8000/async/abc123/results/"


def _stamp(row: int, target_id: str, band: str, product: str, status: StampStatus, n: int, *,
           fits: bool = True, png: bool = False, message: str | None = None) -> ManifestRow:
    stem = f"{band}/r{row:06d}_t{row}__img{n}"
    made = fits or png
    file = stem + (".fits" if fits else ".png") if made else None
    return ManifestRow(
        target_id, row, 52.91, -28.1, status, message, collection="Euclid Q1",
        instrument="VIS" if band == "VIS" else "NISP", band=band, product_type=product,
        image_id=f"ivo://example/euclid?img{n}&x=<1>",
        access_url=URL + file.replace("/", "_") if made else None,
        content_type=("application/fits" if fits else "image/png") if made else None,
        preview_url=URL + stem.replace("/", "_") + ".png" if png else None, file=file,
        pixel_box="[1:64,10:73]" if made else None, bytes=20160 if made else None)


def gallery_rows() -> list[ManifestRow]:
    """A job's manifest: a bad row, two stamps in one cell (partial listed first), a PNG-only
    cell, an image that failed, a target in no image, non-ASCII and empty target IDs."""
    return [
        ManifestRow("bad0", 1, None, None, StampStatus.ERROR, "RA is not a number"),
        _stamp(2, "Ω Cen", "VIS", "BGSUB", StampStatus.PARTIAL, 1, message="clipped"),
        _stamp(2, "Ω Cen", "VIS", "BGSUB", StampStatus.OK, 2, png=True),
        _stamp(2, "Ω Cen", "NIR-J", "RMS", StampStatus.OK, 3),
        _stamp(2, "Ω Cen", "NIR-H", "BGSUB", StampStatus.OK, 4, fits=False, png=True),
        _stamp(2, "Ω Cen", "NIR-J", "BGSUB", StampStatus.ERROR, 5, fits=False,
               message="OSError: truncated & <bad>"),
        ManifestRow("far", 3, 10.0, -0.5, StampStatus.NO_OVERLAP,
                    "the position is inside no image matching the selection"),
        _stamp(4, "", "NIR-Y", "FLAG", StampStatus.OK, 6),
    ]


def test_gallery_json_is_what_the_page_read_before(tmp_path: Path) -> None:
    """Byte for byte the JSON of /api/jobs/<id>/gallery that the previous (dict-based)
    gallery gave for the same manifest: the page's JavaScript keeps working."""
    write_manifest(tmp_path / "manifest.xml", gallery_rows())
    gallery = load_gallery(tmp_path / "manifest.xml", WAVELENGTHS)
    assert JSONResponse(gallery.page(0, 200)).body == GOLDEN.read_bytes()
    page = json.loads(JSONResponse(gallery.page(1, 1)).body)
    assert [t["row"] for t in page["targets"]] == [2] and page["total_targets"] == 4
    assert list(page["targets"][0]["cells"]) == ["VIS|BGSUB", "NIR-J|RMS", "NIR-H|BGSUB",
                                                 "NIR-J|BGSUB"]


def test_cells_are_typed_and_show_the_best_stamp_first(tmp_path: Path) -> None:
    gallery = build_gallery(gallery_rows(), WAVELENGTHS)
    assert [c.key for c in gallery.columns] == ["VIS|BGSUB", "NIR-Y|FLAG", "NIR-J|BGSUB",
                                                "NIR-J|RMS", "NIR-H|BGSUB"]
    assert gallery.bands == ["VIS", "NIR-Y", "NIR-J", "NIR-H"]
    target = gallery.target(2)
    vis = target.stamps(GalleryColumn("VIS", "BGSUB"))
    assert [s.status for s in vis] == [StampStatus.OK, StampStatus.PARTIAL]
    assert isinstance(vis[0], GalleryStamp) and vis[0].is_fits
    assert vis[0].result_id == "VIS_r000002_t2__img2.fits"
    assert target.stamps(GalleryColumn("NIR-Y", "FLAG")) == []
    failed = target.stamps(GalleryColumn("NIR-J", "BGSUB"))[0]
    assert failed.result_id is None and failed.message == "OSError: truncated & <bad>"
    assert gallery.target(3).notes == [GalleryNote(
        StampStatus.NO_OVERLAP, "the position is inside no image matching the selection")]
    assert gallery.target(4).target_id == "4"  # an empty ID shows the row number
    assert gallery.composite_bands == ["NIR-H", "NIR-J", "VIS"]
    red, green, blue = gallery.composite_stamps(target)
    assert [s.is_fits for s in red] == [False] and green == [failed] and blue == vis


def test_manifest_rows_read_back_as_written(tmp_path: Path) -> None:
    rows = gallery_rows()
    write_manifest(tmp_path / "manifest.xml", rows)
    read = read_manifest(tmp_path / "manifest.xml")
    assert read[:7] == rows[:7]
    assert read[7].target_id is None and read[7].band == "NIR-Y"  # '' is an empty cell
    assert all(type(row.status) is StampStatus for row in read)
