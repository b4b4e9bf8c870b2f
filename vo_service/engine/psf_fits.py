"""FITS files of PSF answers (``engine/psf.py``), written as card images.

A job makes tens of thousands of PSF products: each header is rendered from card images
(``engine/writing.card``) instead of through astropy's ``Header`` (4 ms each), the cards a
file's PSFs share once per file. The keywords are listed in ``docs/products.md``.
"""

from __future__ import annotations

import numpy as np
from astropy.io import fits
from numpy.typing import NDArray

from vo_service.engine.psf import INTERPOLATED, PsfAnswer, PsfLayout
from vo_service.engine.writing import DTYPE_BITPIX, card

COPIED_KEYWORDS = ("TELESCOP", "INSTRUME", "FILTER", "TILEID", "BUNIT", "PIXSCALE")


class PsfFitsWriter:
    """Writes the PSF answers of one PSF file; the cards they share are rendered once."""

    def __init__(self, layout: PsfLayout, source_header: fits.Header, origfile: str,
                 orig_ext: int) -> None:
        self.layout = layout
        self.shared = _source_cards(source_header, origfile, orig_ext)

    def fits_bytes(self, answer: PsfAnswer) -> bytes:
        """One answer as a FITS file: the PSF in the primary HDU, how it was chosen in the
        header (deterministic: no dates of writing)."""
        return _psf_header(answer, self.layout, self.shared) + _data_bytes(answer.pixels)


def _source_cards(source_header: fits.Header, origfile: str, orig_ext: int) -> str:
    """The cards every PSF of one file shares (copied keywords, origin)."""
    cards = [card(key, source_header[key], source_header.comments[key])
             for key in COPIED_KEYWORDS if key in source_header]
    cards.append(card("ORIGFILE", origfile))
    cards.append(card("ORIG_EXT", orig_ext, "HDU of the PSF image in ORIGFILE"))
    return "".join(cards)


def _psf_header(answer: PsfAnswer, layout: PsfLayout, shared: str) -> bytes:
    """Header bytes of one PSF: structure, how it was chosen (card images written
    directly: tens of thousands of PSFs in a job)."""
    pixels = answer.pixels
    cards = [card("SIMPLE", True, "conforms to FITS standard"),
             card("BITPIX", DTYPE_BITPIX[f"{pixels.dtype.kind}{pixels.dtype.itemsize}"]),
             card("NAXIS", 2), card("NAXIS1", int(pixels.shape[1])),
             card("NAXIS2", int(pixels.shape[0])), shared,
             card("PSFMETH", answer.method, "how the PSF was chosen (nearest, interpolated)"),
             card("PSFNORM", layout.normalisation, "SUM: unit sum, PEAK: unit peak, NONE"),
             card("PSFNSRC", layout.normalisation_source[:60], "where PSFNORM comes from"),
             card("RA_TARG", answer.target[0], "[deg] target right ascension (ICRS)"),
             card("DEC_TARG", answer.target[1], "[deg] target declination (ICRS)")]
    if answer.rows:
        first = answer.rows[0]
        cards += [
            card("PSF_RA", answer.grid_positions[0][0], "[deg] RA of the nearest grid PSF used"),
            card("PSF_DEC", answer.grid_positions[0][1], "[deg] Dec of that grid PSF"),
            card("PSFDIST", round(answer.distances_arcsec[0], 6),
                 "[arcsec] target to that grid PSF"),
            card("PSFROW", first + 1, "its row in the PSF table (1-based)")]
        if layout.tile_xy is not None:
            cards += [card("PSF_X", float(layout.tile_xy[first, 0]), "its x on the tile"),
                      card("PSF_Y", float(layout.tile_xy[first, 1]), "its y on the tile")]
        cards.append(card("NPSF", len(answer.rows), "grid PSFs combined"))
        if answer.method == INTERPOLATED:
            for k, (row, weight, distance) in enumerate(zip(
                    answer.rows, answer.weights, answer.distances_arcsec, strict=True), start=1):
                cards += [card(f"PSFROW{k}", row + 1, f"grid PSF {k}: table row (1-based)"),
                          card(f"PSFWGT{k}", round(weight, 9),
                               f"grid PSF {k}: barycentric weight"),
                          card(f"PSFDIS{k}", round(distance, 6),
                               f"[arcsec] grid PSF {k}: distance")]
    cards.append(card("STMPSIZE", layout.stamp_size[1], "[pix] PSF stamp side"))
    if answer.box is not None:
        (y0, y1), (x0, x1) = answer.box
        cards += [card("CUTX0", x0 + 1, "first grid-image pixel, axis 1"),
                  card("CUTX1", x1, "last grid-image pixel, axis 1"),
                  card("CUTY0", y0 + 1, "first grid-image pixel, axis 2"),
                  card("CUTY1", y1, "last grid-image pixel, axis 2")]
    if answer.note:
        cards.append(f"{'COMMENT ' + answer.note:<80}"[:80])
    text = "".join(cards) + f"{'END':<80}"
    return (text + " " * (-len(text) % 2880)).encode("ascii")


def _data_bytes(pixels: NDArray[np.floating]) -> bytes:
    """Big-endian data of one HDU with its padding."""
    raw = np.ascontiguousarray(pixels, dtype=pixels.dtype.newbyteorder(">")).tobytes()
    return raw + b"\0" * (-len(raw) % 2880)
