"""Sky coverage of PSF and catalog products: their tile's footprint.

A product of a tile covers what the tile's images cover, whatever the positions in its own
table (a PSF grid stops half a grid step inside the tile, a catalog at its last source).
After each indexing run, every product record with a tile takes the footprint of an
indexed image of the same collection and tile (the same band first). A product left with
no coverage at all (a single PSF image whose tile has no indexed image) is dropped from
the index and reported; it is read again at the next run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

FOOTPRINT_COLUMNS = ("s_region", "s_ra", "s_dec", "s_fov", "wide")


def adopt_tile_footprints(db: Any, failed: list[tuple[Path, str]]) -> int:
    """Give product rows their tile's footprint (``db``: the index's sqlite-utils
    database, inside its transaction); drop products without coverage, appending them to
    ``failed``. Returns the number of rows changed."""
    products = db.execute(
        "SELECT obs_publisher_did, obs_collection, tile, band, path, "
        + ", ".join(FOOTPRINT_COLUMNS)
        + " FROM images WHERE product_kind IS NOT NULL").fetchall()
    changed = 0
    for did, collection, tile, band, path, *footprint in products:
        image = None
        if tile is not None:
            image = db.execute(
                "SELECT " + ", ".join(FOOTPRINT_COLUMNS) + " FROM images WHERE product_kind "
                "IS NULL AND dataproduct_type = 'image' AND obs_collection = ? AND tile = ? "
                "AND s_region IS NOT NULL ORDER BY band IS ? DESC, obs_publisher_did LIMIT 1",
                [collection, tile, band]).fetchone()
        if image is not None:
            if list(image) != footprint:
                db.execute("UPDATE images SET " + ", ".join(f"{c} = ?" for c in FOOTPRINT_COLUMNS)
                           + " WHERE obs_publisher_did = ?", [*image, did])
                changed += 1
        elif footprint[0] is None:
            db.execute("DELETE FROM images WHERE obs_publisher_did = ?", [did])
            db.execute("DELETE FROM files WHERE path = ?", [path])
            failed.append((Path(path), "no sky coverage: a single PSF image applies to its "
                                       "tile, and no image of its collection and tile "
                                       f"({collection}, {tile}) is indexed"))
            changed += 1
    return changed
