"""What a PSF request means: the PSF records of the index that cover a target, the PSF at
the target from one of them (engine/psf.py), kept in the cutout cache.

Used by ``/sync`` (an ID of a PSF product and a region: the PSF at the region's centre),
catalog jobs (a ``CATALOG-PSF`` column beside the image stamps), the CLI and the Python
API.
"""

from __future__ import annotations

from collections.abc import Sequence

from vo_service.archive.records import ImageRecord
from vo_service.cache import CachedFile, CutoutCache, make_key, source_identity
from vo_service.engine.geometry import PixelBox
from vo_service.engine.psf import NEAREST, PsfError, PsfModel
from vo_service.engine.psf_fits import PsfFitsWriter
from vo_service.products.product_options import ProductError
from vo_service.products.product_results import ProductResult

KEY_VERSION = 1  # bump when the bytes of a PSF product change for the same request


def psf_key(record: ImageRecord, ra: float, dec: float, method: str) -> str:
    """Cache key of the PSF at (ra, dec) from one PSF file as it is on disk now."""
    return make_key({"product": "psf", "version": KEY_VERSION,
                     "source": source_identity(record.path, record.hdu),
                     "target": [ra, dec], "method": method})


def psf_results(record: ImageRecord, targets: Sequence[tuple[float, float]],
                method: str = NEAREST) -> list[ProductResult]:
    """The PSF at each target from one PSF file (opened once; one neighbour search)."""
    try:
        with PsfModel(record.path) as model:
            answers = model.at_many([t[0] for t in targets], [t[1] for t in targets], method)
            writer = PsfFitsWriter(model.layout, model.header, record.path.name,
                                   model.layout.image_hdu)
            results = []
            for index, answer in enumerate(answers):
                box = None
                if answer.box is not None:
                    (y0, y1), (x0, x1) = answer.box
                    box = PixelBox(((x0, x1), (y0, y1)))
                results.append(ProductResult(
                    index, "ok", answer.note, writer.fits_bytes(answer), answer.pixels, box))
            return results
    except PsfError as exc:
        return [ProductResult(i, "error", f"the PSF file cannot answer: {exc}")
                for i in range(len(targets))]


def psf_bytes(record: ImageRecord, ra: float, dec: float, method: str = NEAREST) -> bytes:
    """FITS bytes of the PSF at one target (ProductError when the file cannot answer)."""
    (result,) = psf_results(record, [(ra, dec)], method)
    if result.content is None:
        raise ProductError(f"{record.obs_publisher_did}: {result.message}")
    return result.content


def fetch_psf(cache: CutoutCache, record: ImageRecord, ra: float, dec: float,
              method: str = NEAREST) -> tuple[CachedFile, bool, str]:
    """The cached PSF product (computed on a miss): open file, hit flag, key."""
    key = psf_key(record, ra, dec, method)
    cached, hit = cache.open_or_compute(key, lambda: psf_bytes(record, ra, dec, method))
    return cached, hit, key


def psf_records(index: object, ra: float, dec: float, *, band: str | Sequence[str] | None = None,
                collection: str | Sequence[str] | None = None,
                instrument: str | Sequence[str] | None = None) -> list[ImageRecord]:
    """The PSF products whose coverage holds (ra, dec), sorted by ID."""
    pairs = index.lookup([ra], [dec], band=band, collection=collection,  # type: ignore[attr-defined]
                         instrument=instrument)
    return [record for _, record in pairs if record.product_kind == "psf"]
