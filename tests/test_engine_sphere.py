"""Spherical geometry shared by the archive and the engine: containment, orientation, crossings,
RANGE wrap-around."""

from __future__ import annotations

import numpy as np
import pytest

from vo_service.engine import sphere
from vo_service.shapes import Range


def square(ra: float, dec: float, half: float) -> np.ndarray:
    """Small box polygon (unit vectors) around (ra, dec), corners half deg away in each axis."""
    ras = [ra - half, ra + half, ra + half, ra - half]
    decs = [dec - half, dec - half, dec + half, dec + half]
    return sphere.radec_to_xyz(ras, decs)


def test_round_trip_of_coordinates():
    ra = np.array([0.0, 359.999, 123.4, 10.0])
    dec = np.array([0.0, -89.9, 45.0, 90.0])
    back_ra, back_dec = sphere.xyz_to_radec(sphere.radec_to_xyz(ra, dec))
    assert np.allclose(back_dec, dec)
    assert np.allclose(back_ra[:3], ra[:3])


def test_polygon_across_ra_zero_contains_both_sides():
    polygon = square(0.0, 10.0, 0.5)
    points = sphere.radec_to_xyz([0.0, 359.7, 0.3, 180.0, 1.0, 0.0],
                                 [10.0, 10.2, 9.7, 10.0, 10.0, 10.6])
    assert sphere.points_in_polygon(points, polygon).tolist() == [
        True, True, True, False, False, False]


def test_polygon_around_the_pole_contains_it_at_every_ra():
    ring = sphere.radec_to_xyz(np.arange(0, 360, 30.0), np.full(12, 89.0))
    ras = np.arange(0, 360, 7.0)
    inside = sphere.radec_to_xyz(ras, np.full(ras.size, 89.5))
    outside = sphere.radec_to_xyz(ras, np.full(ras.size, 88.9))
    assert sphere.points_in_polygon(sphere.radec_to_xyz(0, 90), ring)[0]
    assert sphere.points_in_polygon(inside, ring).all()
    assert not sphere.points_in_polygon(outside, ring).any()


def test_antipodes_are_never_inside():
    polygon = square(50.0, -20.0, 1.0)
    assert not sphere.points_in_polygon(sphere.radec_to_xyz(230.0, 20.0), polygon)[0]


def test_counter_clockwise_follows_dali_orientation():
    # DALI's example polygon 10 -10.5 20 20.5 30 30.5 is counter-clockwise seen from inside.
    dali = sphere.radec_to_xyz([10.0, 20.0, 30.0], [-10.5, 20.5, 30.5])
    assert sphere.signed_area_sign(dali) > 0
    assert np.allclose(sphere.counter_clockwise(dali), dali)
    assert np.allclose(sphere.counter_clockwise(dali[::-1]), dali[::-1][::-1])


def test_arc_crossings_and_polygon_intersection():
    a, b = sphere.radec_to_xyz([10, 12], [0, 0])
    c, d = sphere.radec_to_xyz([11, 11], [-1, 1])
    e, f = sphere.radec_to_xyz([13, 13], [-1, 1])
    assert sphere.arcs_cross(a, b, c, d)
    assert not sphere.arcs_cross(a, b, e, f)
    # A cross shape: neither polygon has a vertex inside the other, the edges cross.
    wide = sphere.radec_to_xyz([9, 13, 13, 9], [-0.2, -0.2, 0.2, 0.2])
    tall = sphere.radec_to_xyz([10.8, 11.2, 11.2, 10.8], [-3, -3, 3, 3])
    assert sphere.polygons_intersect(wide, tall)
    assert not sphere.polygons_intersect(wide, square(20.0, 0.0, 1.0))


@pytest.mark.parametrize(("ra", "dec", "expected"), [(11.0, 2.0, 1.0), (11.0, 0.0, 1.0),
                                                     (15.0, 0.0, 3.0), (14.0, 3.0, 2.0 ** 1.5)])
def test_distance_to_edges(ra, dec, expected):
    polygon = square(11.0, 0.0, 1.0)  # RA 10..12, Dec -1..1
    distance = sphere.arc_distances(sphere.radec_to_xyz(ra, dec), polygon,
                                    np.roll(polygon, -1, axis=0)).min()
    assert distance == pytest.approx(expected, abs=0.02)


@pytest.mark.parametrize(("box", "inside", "outside"), [
    (Range(350.0, 10.0, -5.0, 5.0), [(355.0, 0.0), (5.0, 4.0), (0.0, -5.0)],
     [(180.0, 0.0), (11.0, 0.0), (349.0, 0.0), (0.0, 6.0)]),
    (Range(10.0, 20.0, -90.0, -80.0), [(15.0, -85.0), (20.0, -80.0)], [(25.0, -85.0)]),
    (Range(0.0, 360.0, 0.0, 1.0), [(0.0, 0.5), (180.0, 0.5), (359.9, 1.0)], [(90.0, -0.1)]),
    (Range(360.0, 0.0, 0.0, 1.0), [(0.0, 0.5), (180.0, 0.5)], [(90.0, 2.0)]),
    (Range(-np.inf, np.inf, 0.0, np.inf), [(123.0, 89.0), (0.0, 0.0)], [(5.0, -0.1)]),
])
def test_range_wraps_through_ra_zero_and_opens_to_all_ra(box, inside, outside):
    ra, dec = np.array(inside + outside, dtype=float).T
    expected = [True] * len(inside) + [False] * len(outside)
    assert sphere.in_range(box, ra, dec).tolist() == expected


def test_range_limits_resolve_wrap_and_open_ends():
    assert sphere.range_limits(Range(350.0, 10.0, -1.0, 1.0)) == (350.0, 20.0, -1.0, 1.0, False)
    assert sphere.range_limits(Range(360.0, 0.0, -1.0, 1.0))[1:] == (360.0, -1.0, 1.0, True)
    assert sphere.range_limits(Range(5.0, 5.0, -np.inf, np.inf)) == (5.0, 0.0, -90.0, 90.0,
                                                                      False)


def test_points_in_polygon_keeps_the_shape_of_a_grid():
    polygon = square(0.0, 0.0, 1.0)
    ra, dec = np.meshgrid([359.5, 0.5, 2.0], [0.0, 3.0])
    inside = sphere.points_in_polygon(sphere.radec_to_xyz(ra, dec), polygon)
    assert inside.tolist() == [[True, True, False], [False, False, False]]


def test_angular_distance_across_ra_zero_and_near_zero():
    assert sphere.angular_distance(359.5, 0.0, 0.5, 0.0) == pytest.approx(1.0)
    assert sphere.angular_distance(10.0, 20.0, 10.0, 20.0 + 1e-9) == pytest.approx(1e-9, rel=1e-4)
