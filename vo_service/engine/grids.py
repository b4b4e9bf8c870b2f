"""Do two images share one pixel grid? Tract/patch tilings (HSC, Rubin, Euclid MER) cut one
projection into tiles: the same projection, tangent point, pixel scale, axes and
distortion, each tile with its own CRPIX. Pixels of such tiles can be copied into each
other exactly, shifted by a whole number of pixels; anything else has to be resampled.

The decision is read from the WCS parameters (never from file names or survey keywords)
and then checked numerically on the area where it is used (`offset_holds`), so a
parameter this module does not compare cannot make a copy wrong.
"""

from __future__ import annotations

import math

import numpy as np
from astropy.wcs import WCS

CRVAL_TOLERANCE_DEG = 1e-9  # 3.6 micro-arcsec: header rounding, not a different tangent point
RELATIVE_TOLERANCE = 1e-9  # CD/PC matrix, SIP coefficients
CRPIX_TOLERANCE = 1e-6  # pixels: how close to a whole number the CRPIX difference must be
CHECK_TOLERANCE_PIX = 1e-3  # the numeric check of an offset over a stamp


def shared_grid_offset(base: WCS, other: WCS) -> tuple[int, int] | None:
    """(dx, dy) such that pixel (x, y) of ``base`` is pixel (x + dx, y + dy) of ``other``
    when both WCSs describe one pixel grid; None when they do not.

    One grid means: the same axis types and units, reference sky position (CRVAL), linear
    transformation (CD, or PC x CDELT), native pole (LONPOLE/LATPOLE), projection
    parameters, celestial frame and SIP polynomials, no lookup-table distortion, and
    reference pixels (CRPIX) that differ by whole pixels.
    """
    a, b = base.wcs, other.wcs
    if base.naxis != other.naxis or list(a.ctype) != list(b.ctype):
        return None
    if [str(u) for u in a.cunit] != [str(u) for u in b.cunit]:
        return None
    if not np.allclose(a.crval, b.crval, rtol=0, atol=CRVAL_TOLERANCE_DEG):
        return None
    if not np.allclose(base.pixel_scale_matrix, other.pixel_scale_matrix,
                       rtol=RELATIVE_TOLERANCE, atol=0):
        return None
    if not (_same_number(a.lonpole, b.lonpole) and _same_number(a.latpole, b.latpole)):
        return None
    if (a.radesys or "") != (b.radesys or "") or not _same_number(a.equinox, b.equinox):
        return None
    if sorted(a.get_pv()) != sorted(b.get_pv()) or not _same_sip(base.sip, other.sip):
        return None
    if any(getattr(w, name) is not None for w in (base, other)
           for name in ("cpdis1", "cpdis2", "det2im1", "det2im2")):
        return None  # lookup tables live in each file's own pixel frame
    shift = np.asarray(b.crpix, dtype=float) - np.asarray(a.crpix, dtype=float)
    whole = np.round(shift)
    if not np.allclose(shift, whole, rtol=0, atol=CRPIX_TOLERANCE):
        return None
    if base.naxis > 2 and np.any(whole[2:] != 0):
        return None
    return int(whole[0]), int(whole[1])


def offset_holds(base: WCS, other: WCS, offset: tuple[int, int],
                 box: tuple[tuple[int, int], tuple[int, int]]) -> bool:
    """Whether ``offset`` maps the corners and centre of ``box`` (base pixels, 0-based,
    half-open (x0, x1), (y0, y1)) onto the same sky positions in ``other``, to a
    thousandth of a pixel."""
    (x0, x1), (y0, y1) = box
    xs = np.array([x0, x1 - 1, x0, x1 - 1, (x0 + x1 - 1) / 2], dtype=float)
    ys = np.array([y0, y0, y1 - 1, y1 - 1, (y0 + y1 - 1) / 2], dtype=float)
    first, second = (w if w.naxis == 2 else w.celestial for w in (base, other))
    world = first.all_pix2world(np.column_stack([xs, ys]), 0)
    with np.errstate(invalid="ignore"):
        back = second.all_world2pix(world, 0, quiet=True)
    expected = np.column_stack([xs + offset[0], ys + offset[1]])
    return bool(np.all(np.abs(back - expected) < CHECK_TOLERANCE_PIX))


def _same_number(first: float, second: float) -> bool:
    if math.isnan(first) or math.isnan(second):
        return math.isnan(first) and math.isnan(second)
    return math.isclose(first, second, rel_tol=RELATIVE_TOLERANCE, abs_tol=1e-12)


def _same_sip(first, second) -> bool:
    """Both without SIP, or with the same orders and coefficients (pixel units about CRPIX,
    so tiles of one grid share them although their CRPIX differ)."""
    if first is None or second is None:
        return first is None and second is None
    for name in ("a", "b", "ap", "bp"):
        mine, theirs = getattr(first, name), getattr(second, name)
        if mine is None or theirs is None:
            if mine is not theirs:
                return False
            continue
        if mine.shape != theirs.shape or not np.allclose(
                mine, theirs, rtol=RELATIVE_TOLERANCE, atol=1e-15):
            return False
    return True


def box_wcs(wcs: WCS, x0: int, y0: int, shape: tuple[int, int]) -> WCS:
    """The WCS of a box of ``shape`` (numpy order) pixels starting at pixel (x0, y0) of a
    2-D ``wcs``, which may start outside the image (negative x0, y0): CRPIX, the SIP
    reference and the lookup-table positions shifted, as ``WCS.slice`` does for boxes
    inside the image."""
    from astropy.wcs import Sip

    shifted = wcs.deepcopy()
    shifted.wcs.crpix = np.asarray(wcs.wcs.crpix, dtype=float) - (x0, y0)
    if wcs.sip is not None:
        crpix = np.asarray(wcs.sip.crpix, dtype=float) - (x0, y0)
        shifted.sip = Sip(wcs.sip.a, wcs.sip.b, wcs.sip.ap, wcs.sip.bp, crpix)
    for table in (shifted.cpdis1, shifted.cpdis2, shifted.det2im1, shifted.det2im2):
        if table is not None:  # positions in image pixels, both axes
            table.crval = (table.crval[0] - x0, table.crval[1] - y0)
    shifted.pixel_shape = (shape[1], shape[0])
    return shifted
