"""The footprint grid finds exactly what a polygon-by-polygon check finds, poles and RA 0 too."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vo_service.archive import regions
from vo_service.archive.index import ArchiveIndex
from vo_service.archive.lookup import SpatialIndex
from vo_service.archive.records import ImageRecord
from vo_service.engine import sphere
from vo_service.shapes import Circle


def random_polygon(rng: np.random.Generator, ra: float, dec: float, size: float,
                   ) -> tuple[tuple[float, float], ...]:
    """A convex-ish polygon of 4-12 vertices around (ra, dec), radius ``size`` deg."""
    count = int(rng.integers(4, 13))
    angles = np.sort(rng.uniform(0, 2 * np.pi, count))
    centre = sphere.radec_to_xyz(ra, dec)
    east, north = sphere.tangent_basis(centre)
    radius = np.radians(size * rng.uniform(0.6, 1.0, count))
    xyz = (np.cos(radius)[:, None] * centre
           + np.sin(radius)[:, None] * (np.cos(angles)[:, None] * east
                                        + np.sin(angles)[:, None] * north))
    v_ra, v_dec = sphere.xyz_to_radec(sphere.counter_clockwise(xyz))
    return tuple((float(a), float(b)) for a, b in zip(v_ra, v_dec, strict=True))


def make_records(rng: np.random.Generator, count: int) -> list[ImageRecord]:
    centres_ra = rng.uniform(0, 360, count)
    centres_dec = np.degrees(np.arcsin(rng.uniform(-1, 1, count)))
    # Put some on the trouble spots: the RA = 0 seam and both poles.
    centres_ra[:20] = rng.uniform(-1, 1, 20) % 360
    centres_dec[20:30] = rng.uniform(88, 90, 10)
    centres_dec[30:40] = rng.uniform(-90, -88, 10)
    sizes = np.exp(rng.uniform(np.log(0.01), np.log(8.0), count))
    sizes[40:43] = (30.0, 45.0, 60.0)  # much larger than a grid cell: checked everywhere
    records = []
    for k in range(count):
        records.append(ImageRecord(
            obs_publisher_did=f"ivo://test/R?{k:04d}", obs_collection="R", obs_id=str(k),
            path=Path(f"/none/{k}.fits"), hdu=0, s_ra=float(centres_ra[k]),
            s_dec=float(centres_dec[k]),
            s_region=random_polygon(rng, centres_ra[k], centres_dec[k], sizes[k]),
            band=("A", "B")[k % 2]))
    return records


def brute(records: list[ImageRecord], ra: np.ndarray, dec: np.ndarray,
          ) -> set[tuple[int, int]]:
    points = sphere.radec_to_xyz(ra, dec)
    pairs = set()
    for k, record in enumerate(records):
        polygon = sphere.radec_to_xyz(*np.array(record.s_region).T)
        for p in np.flatnonzero(sphere.points_in_polygon(points, polygon)):
            pairs.add((int(p), k))
    return pairs


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_grid_lookup_equals_polygon_by_polygon(seed):
    rng = np.random.default_rng(seed)
    records = make_records(rng, 400)
    near = rng.integers(0, len(records), 3000)
    ra = np.array([records[k].s_ra for k in near]) + rng.normal(0, 1.0, near.size)
    dec = np.clip(np.array([records[k].s_dec for k in near]) + rng.normal(0, 1.0, near.size),
                  -90, 90)
    ra = np.concatenate([ra % 360, rng.uniform(0, 360, 1000), [0.0, 123.0]])
    dec = np.concatenate([dec, np.degrees(np.arcsin(rng.uniform(-1, 1, 1000))), [90.0, -90.0]])
    index = SpatialIndex(records)
    points, found = index.contains(ra, dec)
    expected = brute(records, ra, dec)
    assert len(expected) > 1000
    assert set(zip(points.tolist(), found.tolist(), strict=True)) == expected
    selected = np.array([r.band == "A" for r in records])
    points, found = index.contains(ra, dec, selected)
    assert set(zip(points.tolist(), found.tolist(), strict=True)) == {
        (p, k) for p, k in expected if records[k].band == "A"}


@pytest.mark.parametrize("seed", [4, 5])
def test_circle_search_equals_footprint_by_footprint(seed):
    """SIA's CIRCLE meets every footprint at once; the answer is the per-footprint one
    (centre inside, or an edge within the radius), at the poles and the RA = 0 seam too."""
    rng = np.random.default_rng(seed)
    records = make_records(rng, 400)
    index = SpatialIndex(records)
    found_any = 0
    for k in rng.integers(0, len(records), 50):
        ra = float((records[k].s_ra + rng.normal(0, 1.0)) % 360)
        dec = float(np.clip(records[k].s_dec + rng.normal(0, 1.0), -90, 90))
        radius = float(rng.choice([1e-4, 0.05, 0.5, 5.0]))
        probe = regions.probe_of(Circle(ra, dec, radius))
        centre = sphere.radec_to_xyz(ra, dec)
        expected = np.zeros(len(records), dtype=bool)
        for number, record in enumerate(records):  # centre inside, or an edge near enough
            polygon = sphere.radec_to_xyz(*np.array(record.s_region).T)
            expected[number] = sphere.points_in_polygon(centre, polygon)[0] or (
                sphere.arc_distances(centre, polygon, np.roll(polygon, -1, axis=0)).min()
                <= radius)
        met = index.meeting([probe])
        assert np.array_equal(met, expected)
        found_any += int(met.sum())
    assert found_any > 20  # circles that meet something, not only empty answers


def test_bad_positions_are_ignored_and_empty_index_answers(tmp_path):
    index = ArchiveIndex(tmp_path / "index.sqlite")
    assert index.lookup([10.0], [0.0]) == []
    index.add_records(make_records(np.random.default_rng(5), 50))
    record = index.records()[0]
    hits = index.lookup([np.nan, record.s_ra, 10.0], [0.0, record.s_dec, 95.0])
    assert [(i, r.obs_publisher_did) for i, r in hits if r == record] == [
        (1, record.obs_publisher_did)]
    assert all(i == 1 for i, _ in hits)
    with pytest.raises(ValueError, match="equal length"):
        index.lookup([1.0, 2.0], [1.0])
