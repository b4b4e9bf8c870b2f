"""Footprints from the WCS: real images of the shared data, the RA = 0 seam, the poles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from tests.archive_helpers import write_image
from vo_service.archive.footprint import CelestialImage, celestial_image, image_footprint
from vo_service.engine import sphere

ARCSEC = 1.0 / 3600.0


def served_entries(real_data: Path) -> list[dict]:
    """catalog.json entries of the HDUs a service over fits/ must serve."""
    entries = json.loads((real_data / "catalog.json").read_text())["entries"]
    return [e for e in entries if e.get("served") and e["file"].startswith("fits/")]


def open_image(path: Path, hdu: int) -> CelestialImage:
    with fits.open(path) as hdul:
        image = celestial_image(hdul[hdu], hdul)
    assert image is not None
    return image


def border_and_outside_pixels(image: CelestialImage) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres along the border (plus a few inside), and points 1 pixel beyond it."""
    xs = np.linspace(0, image.nx - 1, min(image.nx, 60))
    ys = np.linspace(0, image.ny - 1, min(image.ny, 60))
    inner = np.concatenate([
        np.stack([xs, np.zeros_like(xs)], 1), np.stack([xs, np.full_like(xs, image.ny - 1)], 1),
        np.stack([np.zeros_like(ys), ys], 1), np.stack([np.full_like(ys, image.nx - 1), ys], 1),
        [[(image.nx - 1) / 2, (image.ny - 1) / 2]],
    ])
    low, high_x, high_y = -1.5, image.nx + 0.5, image.ny + 0.5
    outer = np.concatenate([
        np.stack([xs, np.full_like(xs, low)], 1), np.stack([xs, np.full_like(xs, high_y)], 1),
        np.stack([np.full_like(ys, low), ys], 1), np.stack([np.full_like(ys, high_x), ys], 1),
    ])
    return inner, outer


def polygon_contains(vertices, ra, dec) -> np.ndarray:
    polygon = sphere.radec_to_xyz([v[0] for v in vertices], [v[1] for v in vertices])
    return sphere.points_in_polygon(sphere.radec_to_xyz(ra, dec), polygon)


def test_real_footprints_match_the_manifest_and_hold_their_pixels(real_data):
    entries = served_entries(real_data)
    assert len(entries) >= 20
    for entry in entries:
        image = open_image(real_data / entry["file"], entry["hdu"])
        footprint = image_footprint(image)
        label = f"{entry['file']}[{entry['hdu']}]"
        assert not footprint.wide, label
        centre = sphere.radec_to_xyz(footprint.centre_ra, footprint.centre_dec)
        expected = sphere.radec_to_xyz(*entry["center_icrs"])
        assert sphere.angle_deg(centre, expected) < 0.05 * ARCSEC, label
        assert footprint.radius_deg == pytest.approx(entry["radius_deg"], rel=0.01), label
        assert footprint.pixel_scale_arcsec == pytest.approx(
            np.mean(entry["pixscale_arcsec"]), rel=0.02), label
        inner, outer = border_and_outside_pixels(image)
        ra, dec = image.pixel_to_icrs(inner[:, 0], inner[:, 1])
        assert polygon_contains(footprint.vertices, ra, dec).all(), label
        ra, dec = image.pixel_to_icrs(outer[:, 0], outer[:, 1])
        assert not polygon_contains(footprint.vertices, ra, dec).any(), label


def test_polygons_are_counter_clockwise(real_data):
    for entry in served_entries(real_data)[:6]:
        footprint = image_footprint(open_image(real_data / entry["file"], entry["hdu"]))
        xyz = sphere.radec_to_xyz(*np.array(footprint.vertices).T)
        assert sphere.signed_area_sign(xyz) > 0


def test_distortion_is_followed_by_edge_samples(real_data):
    # A plain TAN image needs only its corners; curved edges keep more vertices.
    tan = image_footprint(open_image(real_data / "fits/images/gc_2mass_k.fits", 0))
    assert len(tan.vertices) == 4
    car = image_footprint(open_image(real_data / "fits/images/gc_bolocam_gps.fits", 0))
    assert len(car.vertices) > 4


def test_image_straddling_ra_zero(real_data):
    image = open_image(real_data / "fits/derived/ra0wrap_HorseHead.fits", 0)
    footprint = image_footprint(image)
    ras = np.array([v[0] for v in footprint.vertices])
    assert (ras > 359).any() and (ras < 1).any()
    inside = polygon_contains(footprint.vertices, [0.0, 359.9, 0.1], [-2.458, -2.5, -2.4])
    assert inside.all()
    assert not polygon_contains(footprint.vertices, [180.0, 0.3, 359.7],
                                [-2.458, -2.458, -2.458]).any()


@pytest.mark.parametrize(("dec", "holds_pole"), [(89.5, False), (90.0, True), (89.9, True)])
def test_images_near_and_over_the_pole(tmp_path, dec, holds_pole):
    path = write_image(tmp_path / "polar.fits", 30.0, dec, nx=120, ny=100, scale_arcsec=12.0,
                       rotation_deg=20.0)
    image = open_image(path, 0)
    footprint = image_footprint(image)
    assert not footprint.wide
    assert polygon_contains(footprint.vertices, [0.0], [90.0])[0] == holds_pole
    inner, outer = border_and_outside_pixels(image)
    ra, dec_in = image.pixel_to_icrs(inner[:, 0], inner[:, 1])
    assert polygon_contains(footprint.vertices, ra, dec_in).all()
    assert image.contains(ra, dec_in).all()
    ra, dec_out = image.pixel_to_icrs(outer[:, 0], outer[:, 1])
    assert not polygon_contains(footprint.vertices, ra, dec_out).any()
    assert not image.contains(ra, dec_out).any()


def test_all_sky_map_is_wide_and_checked_by_its_wcs(real_data):
    image = open_image(real_data / "allsky/allsky_rosat.fits", 0)
    footprint = image_footprint(image)
    assert footprint.wide and footprint.vertices is None
    rng = np.random.default_rng(1)
    ra = rng.uniform(0, 360, 500)
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, 500)))
    assert image.contains(ra, dec).all()
