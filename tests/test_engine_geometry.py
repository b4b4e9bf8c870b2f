"""Every SODA shape becomes the right pixel box, in any frame and projection."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from tests import fits_factory
from vo_service.engine.api import cut
from vo_service.engine.cutout import describe_region
from vo_service.engine.geometry import PixelBox, SkyToPixel, region_boxes
from vo_service.shapes import CenterSize, Circle, Polygon, Range

warnings.simplefilter("ignore", FITSFixedWarning)


def mapper_for(path, hdu=0) -> SkyToPixel:
    with fits.open(path) as hdus:
        header = hdus[hdu].header
        shape = tuple(header[f"NAXIS{i}"] for i in range(1, header["NAXIS"] + 1))
        return SkyToPixel(WCS(header, fobj=hdus), shape)


def test_positions_in_other_frames_land_on_the_same_sky(real_data):
    for name, hdu in (("fits/images/comp.fits", 1),  # FK4 B1950, SIN
                      ("fits/images/gc_bolocam_gps.fits", 0),  # Galactic CAR
                      ("fits/images/ukidss_wfcam_M1.fits", 1),  # ZPN
                      ("fits/images/M6707HH.fits", 0)):  # DSS plate solution, FK5
        mapper = mapper_for(real_data / name, hdu)
        xs, ys = np.array([3.0, 40.0, 100.5]), np.array([7.0, 20.0, 60.25])
        icrs = mapper.celestial.pixel_to_world(xs, ys).icrs
        x, y = mapper.pixels(icrs.ra.deg, icrs.dec.deg)
        assert np.allclose(x, xs, atol=1e-6) and np.allclose(y, ys, atol=1e-6), name


def test_circle_box_covers_the_circle_only(tmp_path):
    path = fits_factory.sip_image(tmp_path / "sip.fits")
    mapper = mapper_for(path)
    centre = mapper.celestial.pixel_to_world(100, 80)
    radius_deg = 10 / 3600  # 10 pixels of 1 arcsec
    (box,) = region_boxes(mapper, [Circle(centre.ra.deg, centre.dec.deg, radius_deg)])
    assert abs((box.x1 - box.x0) - 21) <= 2 and abs((box.y1 - box.y0) - 21) <= 2
    assert box.x0 <= 100 < box.x1 and box.y0 <= 80 < box.y1


def test_polygon_and_range_boxes(tmp_path):
    path = fits_factory.sip_image(tmp_path / "sip.fits", rotation_deg=0.0)
    mapper = mapper_for(path)
    corners = mapper.celestial.pixel_to_world(np.array([20, 60, 60]), np.array([30, 30, 70]))
    polygon = Polygon(tuple(zip(corners.ra.deg, corners.dec.deg, strict=True)))
    (box,) = region_boxes(mapper, [polygon])
    assert abs(box.x0 - 20) <= 1 and abs(box.x1 - 61) <= 1
    assert abs(box.y0 - 30) <= 1 and abs(box.y1 - 71) <= 1
    ra = np.sort(corners.ra.deg)
    dec = np.sort(corners.dec.deg)
    (range_box,) = region_boxes(mapper, [Range(ra[0], ra[-1], dec[0], dec[-1])])
    assert abs(range_box.x0 - 20) <= 2 and abs(range_box.y1 - 71) <= 2


def test_range_through_ra_zero_and_open_limits(real_data):
    path = real_data / "fits/derived/ra0wrap_HorseHead.fits"
    mapper = mapper_for(path)
    wrapped, narrow_east, everything, wrong_side = region_boxes(mapper, [
        Range(359.95, 0.05, -2.5, -2.4),
        Range(0.0, 0.05, -2.5, -2.4),
        Range(-math.inf, math.inf, -math.inf, math.inf),
        Range(0.05, 359.95, -2.5, -2.4),  # all RA but a strip: both image edges inside
    ])
    assert wrapped.clip((891, 893)) is not None
    assert narrow_east.x1 - narrow_east.x0 < wrapped.x1 - wrapped.x0
    assert everything.clip((891, 893)) == PixelBox(((0, 891), (0, 893)))
    both_edges = wrong_side.clip((891, 893))
    assert (both_edges.x0, both_edges.x1) == (0, 891)
    assert both_edges.y1 - both_edges.y0 < 893


def test_region_containing_the_pole_or_the_whole_image(tmp_path):
    mapper = mapper_for(fits_factory.pole_image(tmp_path / "pole.fits"))
    whole, polar_cap, off = region_boxes(mapper, [
        Circle(10.0, 89.0, 5.0),  # contains the image entirely
        Range(-math.inf, math.inf, 89.99, 90.0),  # a cap around the pole
        Circle(10.0, -89.0, 1.0),
    ])
    assert whole.clip((200, 200)) == PixelBox(((0, 200), (0, 200)))
    assert polar_cap.x0 < 100 < polar_cap.x1 and polar_cap.y0 < 100 < polar_cap.y1
    assert 6 <= polar_cap.x1 - polar_cap.x0 <= 9  # radius 0.01 deg = 3.6 pixels of 10"
    assert off is None


def test_center_size_in_pixels_and_angles_vectorized(real_data):
    mapper = mapper_for(real_data / "fits/images/gc_bolocam_gps.fits")  # 7.2" Galactic CAR
    centre = SkyCoord(266.40271, -28.94363, unit="deg")
    boxes = region_boxes(mapper, [
        CenterSize(centre.ra.deg, centre.dec.deg, 10, 20),
        CenterSize(centre.ra.deg, centre.dec.deg, 72, 144, "arcsec"),
        CenterSize(centre.ra.deg, centre.dec.deg, 1.2, 2.4, "arcmin"),
        CenterSize(centre.ra.deg, centre.dec.deg, 0.02, 0.04, "deg"),
    ])
    for box in boxes:
        assert (box.x1 - box.x0, box.y1 - box.y0) == (10, 20)
    (far,) = region_boxes(mapper, [CenterSize(86.4, 28.9, 10, 10)])  # the antipode
    assert far is None


def brute_force_box(path, hdu: int, region) -> tuple[int, int, int, int] | None:
    """(x0, x1, y0, y1), half-open, of the pixels whose centres lie inside the region."""
    from vo_service.engine.sky_regions import inside

    mapper = mapper_for(path, hdu)
    nx, ny = mapper.fits_shape[:2]
    ys, xs = np.mgrid[0:ny, 0:nx]
    icrs = mapper.celestial.pixel_to_world(xs.ravel(), ys.ravel()).icrs
    hit = inside(region, icrs.ra.deg, icrs.dec.deg)
    if not hit.any():
        return None
    x, y = xs.ravel()[hit], ys.ravel()[hit]
    return int(x.min()), int(x.max()) + 1, int(y.min()), int(y.max()) + 1


HORSEHEAD_REGIONS = [  # 891 x 893 DSS plate, RA 85.15..85.40, Dec -2.58..-2.33
    Range(-math.inf, math.inf, -2.47, -2.45),  # all RA, a Dec strip (was 478 rows tall)
    Range(85.2, 85.3, -math.inf, math.inf),  # an RA strip, all Dec
    Range(85.0, 86.0, -2.4, -2.3),  # wider than the image, across its top
    Range(85.25, 85.3, -2.5, -2.45),  # inside
    Circle(85.0, -2.46, 0.3),  # partly outside
    Circle(85.3, -2.45, 0.02),  # inside
    Polygon(((85.2, -2.6), (85.4, -2.5), (85.3, -2.3))),  # two vertices off the image
    Polygon(((84.0, -3.5), (86.0, -3.5), (85.0, -1.0))),  # contains the image
]


@pytest.mark.parametrize("region", HORSEHEAD_REGIONS, ids=describe_region)
def test_box_is_the_bounding_box_of_the_part_inside_the_image(real_data, region):
    path = real_data / "fits/images/HorseHead.fits"
    expected = brute_force_box(path, 0, region)
    result = cut(path, 0, region)
    box = result.pixel_box
    got = (box.x0, box.x1, box.y0, box.y1)
    assert got[0] <= expected[0] and got[2] <= expected[2], (got, expected)
    assert got[1] >= expected[1] and got[3] >= expected[3], (got, expected)
    assert max(expected[0] - got[0], got[1] - expected[1],
               expected[2] - got[2], got[3] - expected[3]) <= 2, (got, expected)


@pytest.mark.parametrize("name, region", [
    ("pole", Range(-math.inf, math.inf, 89.95, 89.97)),  # an annulus round the pole
    ("pole", Range(30.0, 120.0, 89.9, 89.98)),  # a curved sector
    ("pole", Polygon(((0.0, 89.5), (120.0, 89.5), (240.0, 89.5)))),  # contains the image
    ("sip", Range(-math.inf, math.inf, 2.19, 2.2)),  # rotated 20 degrees, SIP
    ("sip", Circle(150.02, 2.2, 0.01)),
    ("allsky", Circle(86.40499, 28.93618, 30.0)),  # Galactic anticentre: across the seam
    ("allsky", Circle(86.40499, 28.93618, 89.0)),
    ("allsky", Range(-math.inf, math.inf, 4.0, 32.1)),
])
def test_boxes_on_curved_and_rotated_images_match_a_pixel_by_pixel_check(
        real_data, tmp_path, name, region):
    path = {"pole": lambda: fits_factory.pole_image(tmp_path / "pole.fits"),
            "sip": lambda: fits_factory.sip_image(tmp_path / "sip.fits"),
            "allsky": lambda: real_data / "allsky/allsky_rosat.fits"}[name]()  # Aitoff
    expected = brute_force_box(path, 0, region)
    box = cut(path, 0, region).pixel_box
    got = (box.x0, box.x1, box.y0, box.y1)
    assert got[0] <= expected[0] and got[2] <= expected[2], (got, expected)
    assert got[1] >= expected[1] and got[3] >= expected[3], (got, expected)
    assert max(expected[0] - got[0], got[1] - expected[1],
               expected[2] - got[2], got[3] - expected[3]) <= 2, (got, expected)


def test_partial_regions_are_partial_and_pad_to_the_whole_region(tmp_path):
    path = fits_factory.sip_image(tmp_path / "sip.fits", rotation_deg=0.0)
    mapper = mapper_for(path)
    edge = mapper.celestial.pixel_to_world(2, 80)  # 10-pixel circle over the left edge
    circle = Circle(edge.ra.deg, edge.dec.deg, 10 / 3600)
    clipped = cut(path, 0, circle)
    assert clipped.status == "partial" and clipped.pixel_box.x0 == 0
    padded = cut(path, 0, circle, pad=True)
    assert padded.pixel_box.x0 < -5 and abs(padded.data.shape[1] - 21) <= 2
    inside = mapper.celestial.pixel_to_world(100, 80)
    assert cut(path, 0, Circle(inside.ra.deg, inside.dec.deg, 10 / 3600)).status == "ok"


def test_a_targets_box_does_not_depend_on_the_targets_converted_with_it(tmp_path):
    """Distortions are inverted to rounding, not to astropy's default 1e-4 px, which stops
    when the slowest position of a call has converged: a target whose box edge falls on a
    pixel boundary got boxes one pixel apart alone and among others (a catalog job cuts
    it in one unit, a job with part of its stamps evicted in another)."""
    path = fits_factory.sip_image(tmp_path / "sip.fits")
    mapper = mapper_for(path)
    rng = np.random.default_rng(3)
    pixels = [(50.0, 50.0), (120.0, 80.0), (30.0, 100.0)] + [
        (float(x), float(y)) for x, y in rng.uniform(-20, 220, (200, 2))]
    sky = mapper.celestial.pixel_to_world([x for x, _ in pixels], [y for _, y in pixels])
    regions = [CenterSize(float(ra), float(dec), 24, 24) for ra, dec in
               zip(sky.icrs.ra.deg, sky.icrs.dec.deg, strict=True)]
    together = region_boxes(mapper, regions)
    for k, region in enumerate(regions[:3]):  # box edges at 38.0, 108.0, 18.0, 88.0 ...
        assert region_boxes(mapper, [region]) == [together[k]]
        assert region_boxes(mapper, [region, regions[k + 50]]) == [together[k],
                                                                   together[k + 50]]
