"""One pixel grid or not, read from the WCS: tiles of a tract share it (CRPIX shifted by
whole pixels); a different tangent point, scale, rotation, SIP or a fractional shift does
not. A box's WCS may start outside the image."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.wcs import WCS

from tests import fits_factory
from vo_service.engine.grids import box_wcs, offset_holds, shared_grid_offset

BASE = dict(crval=(150.0, 2.2), crpix=(100.5, 80.5), scale_deg=1 / 3600, rotation_deg=20.0,
            sip=True)


def wcs_with(**changes) -> WCS:
    return WCS(fits_factory.celestial_header(**{**BASE, **changes}))


def test_tiles_of_one_grid_differ_by_whole_pixels():
    base = wcs_with()
    other = wcs_with(crpix=(100.5 - 150, 80.5 + 40))
    assert shared_grid_offset(base, other) == (-150, 40)
    assert offset_holds(base, other, (-150, 40), ((0, 200), (0, 160)))
    x, y = base.all_world2pix(*base.all_pix2world(17.0, 33.0, 0), 0)
    assert other.all_world2pix(*base.all_pix2world(17.0, 33.0, 0), 0) == pytest.approx(
        (x - 150, y + 40), abs=1e-6)


@pytest.mark.parametrize("changes", [
    {"crval": (150.001, 2.2)},  # another tangent point
    {"crpix": (100.0, 80.5)},  # half a pixel off
    {"scale_deg": 1.01 / 3600},
    {"rotation_deg": 20.5},
    {"sip": False},
    {"projection": "SIN"},
])
def test_anything_else_is_another_grid(changes):
    assert shared_grid_offset(wcs_with(), wcs_with(**changes)) is None


def test_a_box_wcs_may_start_outside_the_image():
    base = wcs_with()
    box = box_wcs(base, -30, -12, (50, 70))
    assert box.pixel_shape == (70, 50)
    points = np.array([[0.0, 0.0], [69.0, 49.0], [12.5, 3.25]])
    np.testing.assert_allclose(box.all_pix2world(points, 0),
                               base.all_pix2world(points + [-30, -12], 0), rtol=0, atol=1e-10)
