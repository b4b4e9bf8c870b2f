"""What the web page offers to choose: instruments with their bands and product types,
bands in wavelength order, and positions typed by people (degrees or sexagesimal).

All of it comes from the archive index (``ArchiveIndex.combinations``, one grouped query),
so the page lists exactly what the archive holds.
"""

from __future__ import annotations

import math
import re

import astropy.units as u
from astropy.coordinates import SkyCoord

from vo_service.archive.records import Combination

# Product types in the order a survey scientist asks for them; others follow by name.
PRODUCT_ORDER = ("BGSUB", "RMS", "FLAG", "BGMOD", "CATALOG-PSF")
# Ticked on the page when the archive has them: the science image and, as the Euclid
# cutout service does, the PSF at the target (docs/products.md).
DEFAULT_PRODUCTS = ("BGSUB", "CATALOG-PSF")
_SEXAGESIMAL = re.compile(r"[:hms°d']|\d\s+\d+\s+\d", re.IGNORECASE)


def product_rank(name: str) -> tuple[int, str]:
    """Sort key: the usual products first, in their usual order."""
    return (PRODUCT_ORDER.index(name) if name in PRODUCT_ORDER else len(PRODUCT_ORDER), name)


def band_order(found: list[Combination]) -> dict[str, float]:
    """Band name -> its shortest wavelength (unknown last): sort bands blue to red."""
    order: dict[str, float] = {}
    for item in found:
        wavelength = item.wavelength if item.wavelength is not None else math.inf
        order[item.band] = min(order.get(item.band, math.inf), wavelength)
    return order


def page_choices(index) -> dict:  # noqa: ANN001 - ArchiveIndex
    """JSON-ready choices: collections, instruments (each with its bands and products)."""
    found = index.combinations()
    order = band_order(found)
    instruments: dict[tuple[str, str], dict] = {}
    for item in found:
        entry = instruments.setdefault((item.collection, item.instrument), {
            "collection": item.collection, "name": item.instrument, "bands": {},
            "product_types": set(), "images": 0})
        entry["bands"].setdefault(item.band, set()).add(item.product_type)
        entry["product_types"].add(item.product_type)
        entry["images"] += item.images
    listed = []
    for entry in sorted(instruments.values(), key=lambda e: (e["collection"], e["name"])):
        bands = sorted(entry["bands"], key=lambda band: (order[band], band))
        listed.append({
            "collection": entry["collection"], "name": entry["name"], "images": entry["images"],
            "bands": [{"name": band, "product_types": sorted(entry["bands"][band],
                                                             key=product_rank)}
                      for band in bands],
            "product_types": sorted(entry["product_types"], key=product_rank),
        })
    catalogs = sorted({record.product_type for record in index.records(product_kind="catalog")
                       if record.product_type})
    psfs = sorted({record.product_type for record in index.records(product_kind="psf")
                   if record.product_type})
    return {
        "collections": sorted({item.collection for item in found}),
        "instruments": listed,
        "default_product_types": list(DEFAULT_PRODUCTS),
        # source catalogs of whole tiles (no band): offered beside every instrument
        "catalog_product_types": catalogs,
        "psf_product_types": psfs,  # PSF models: no PNG cutouts on the single-target form
    }


def parse_position(text: str) -> tuple[float, float]:
    """ICRS (ra, dec) in degrees from '52.93 -28.09', '52.93, -28.09', '03:31:43.2 -28:05:24'
    or '3h31m43.2s -28d05m24s' (sexagesimal RA is in hours). ValueError says what to fix."""
    cleaned = text.strip().replace(",", " ")
    if not cleaned:
        raise ValueError("give a position: 'ra dec' in degrees or sexagesimal")
    unit = (u.hourangle, u.deg) if _SEXAGESIMAL.search(cleaned) else (u.deg, u.deg)
    try:
        coord = SkyCoord(cleaned, unit=unit, frame="icrs")
    except (ValueError, TypeError) as exc:
        raise ValueError(f"cannot read {text.strip()!r} as a position; write 'ra dec' in "
                         "degrees (52.93 -28.09) or sexagesimal (03:31:43.2 -28:05:24)"
                         ) from exc
    ra, dec = float(coord.ra.deg), float(coord.dec.deg)
    if not (math.isfinite(ra) and math.isfinite(dec)):
        raise ValueError(f"{text.strip()!r} is not a finite position")
    return ra, dec


def pixel_scale_arcsec(record) -> float | None:  # noqa: ANN001 - ImageRecord
    """Approximate pixel side of an image in arcsec (footprint diagonal / pixel diagonal)."""
    if record.s_fov and record.s_xel1 and record.s_xel2:
        return float(record.s_fov) * 3600.0 / math.hypot(record.s_xel1, record.s_xel2)
    return float(record.s_resolution) if record.s_resolution else None
