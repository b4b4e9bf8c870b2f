"""Angular stamp sizes on non-square and distorted pixels, through every path that takes one.

A stamp of SIZE=20.8 arcsec must span 20.8" on the sky along each pixel axis (as astrocut
does), with the pixel scales at the target: on 0.260" x 0.288" pixels that is 80 x 72
pixels, not 76 x 76 from the square root of the pixel area; on a TPV-distorted image the
pixels near an edge are larger or smaller than at the reference pixel. Checked through a
catalog job on the real server, the `vo-service cutout` command and `vo_service.cutout`.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import astropy.units as u
import httpx
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from fits_factory import rectangular_pixel_image
from server import assert_valid_votable
from uws_client import UWS, results_of, wait_final

import vo_service
from vo_service.cli import main

SIZE_ARCSEC = 20.8
# name -> (file, options of rectangular_pixel_image, 0-based target pixel)
IMAGES = {
    "rect": ("rectangular.fits", {}, (200.0, 150.0)),
    # xi += 6 x^2: pixels along xi shrink by ~10 % towards the right edge, so a stamp near
    # it needs ~4 more columns than the reference-pixel scale says
    "tpv": ("tpv.fits", {"crval": (150.5, 2.2), "tpv_x2": 6.0}, (345.0, 200.0)),
}


def _wcs(header: fits.Header) -> WCS:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(header)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("nonsquare") / "synthetic"
    root.mkdir()
    for file_name, options, _ in IMAGES.values():
        rectangular_pixel_image(root / file_name, **options)
    return root


def target_of(archive: Path, name: str) -> tuple[Path, SkyCoord]:
    file_name, _, (x, y) = IMAGES[name]
    path = archive / file_name
    return path, _wcs(fits.getheader(path)).pixel_to_world(x, y).icrs


def local_scales_arcsec(path: Path, target: SkyCoord) -> tuple[float, float]:
    """Sky length of one pixel step along axes 1 and 2 at the target, measured on the
    source image's own WCS (an independent check of the service's Jacobian)."""
    wcs = _wcs(fits.getheader(path))
    x, y = wcs.world_to_pixel(target)
    along_x = wcs.pixel_to_world([x - 0.5, x + 0.5], [y, y])
    along_y = wcs.pixel_to_world([x, x], [y - 0.5, y + 0.5])
    return along_x[0].separation(along_x[1]).arcsec, along_y[0].separation(along_y[1]).arcsec


def assert_spans_requested_angle(stamp: fits.ImageHDU | fits.PrimaryHDU, source: Path,
                                 target: SkyCoord) -> tuple[int, int]:
    """The stamp has about SIZE / local scale pixels per axis and its own WCS says it
    spans SIZE_ARCSEC along each axis, both within one pixel; returns (nx, ny)."""
    ny, nx = stamp.data.shape
    scale_x, scale_y = local_scales_arcsec(source, target)
    assert abs(nx - SIZE_ARCSEC / scale_x) <= 1, (nx, SIZE_ARCSEC / scale_x)
    assert abs(ny - SIZE_ARCSEC / scale_y) <= 1, (ny, SIZE_ARCSEC / scale_y)
    wcs = _wcs(stamp.header)
    middle_x, middle_y = (nx - 1) / 2, (ny - 1) / 2
    left, right = wcs.pixel_to_world([-0.5, nx - 0.5], [middle_y, middle_y])
    bottom, top = wcs.pixel_to_world([middle_x, middle_x], [-0.5, ny - 0.5])
    assert abs(left.separation(right).arcsec - SIZE_ARCSEC) <= scale_x
    assert abs(bottom.separation(top).arcsec - SIZE_ARCSEC) <= scale_y
    return nx, ny


def assert_expected_shapes(shapes: dict[str, tuple[int, int]]) -> None:
    """80 x 72 on 0.260" x 0.288" pixels (the issue's case; 76 x 76 was the bug)."""
    assert shapes["rect"] == (80, 72)
    assert shapes["tpv"][0] >= 82  # 80 at the reference pixel, more where pixels shrink


def test_python_api_stamps_span_the_angle_along_each_axis(archive: Path) -> None:
    shapes = {}
    for name in IMAGES:
        path, target = target_of(archive, name)
        (stamp,) = vo_service.cutout([path], [(target.ra.deg, target.dec.deg)],
                                     SIZE_ARCSEC * u.arcsec)
        shapes[name] = assert_spans_requested_angle(stamp[0], path, target)
    assert_expected_shapes(shapes)


def test_command_line_stamps_span_the_angle_along_each_axis(archive: Path,
                                                           tmp_path: Path) -> None:
    shapes = {}
    for name in IMAGES:
        path, target = target_of(archive, name)
        out = tmp_path / name
        assert main(["cutout", str(path), "--ra", f"{target.ra.deg:.9f}",
                     "--dec", f"{target.dec.deg:.9f}", "--size", str(SIZE_ARCSEC),
                     "--unit", "arcsec", "--id", name, "--out", str(out), "--quiet"]) == 0
        (written,) = out.glob("*.fits")
        with fits.open(written) as hdul:
            shapes[name] = assert_spans_requested_angle(hdul[0], path, target)
    assert_expected_shapes(shapes)


def test_catalog_job_stamps_span_the_angle_along_each_axis(archive: Path,
                                                          live_server_factory) -> None:
    server = live_server_factory(archive)
    targets = {name: target_of(archive, name) for name in IMAGES}
    catalog = "id,ra,dec\n" + "".join(
        f"{name},{target.ra.deg:.9f},{target.dec.deg:.9f}\n"
        for name, (_, target) in targets.items())
    with httpx.Client(timeout=120) as client:
        response = client.post(
            server.url("async"), follow_redirects=True,
            data={"UPLOAD": "cat,param:cat", "SIZE": str(SIZE_ARCSEC), "SIZE_UNIT": "arcsec",
                  "PHASE": "RUN"},
            files={"cat": ("targets.csv", catalog.encode(), "text/csv")})
        assert response.status_code == 200, response.text
        root = wait_final(client, str(response.url))
        assert root.findtext("uws:phase", namespaces=UWS) == "COMPLETED"
        manifest = assert_valid_votable(client.get(results_of(root)["manifest"][0]).content)
        rows = manifest.get_first_table().to_table()
        shapes = {}
        for row in rows:
            name = str(row["target_id"])
            path, target = targets[name]
            if not str(row["image_id"]).endswith(path.name):
                continue  # the target also falls on the other image: checked there
            assert row["status"] == "ok", row["message"]
            stamp = fits.open(io.BytesIO(client.get(str(row["access_url"])).content))
            shapes[name] = assert_spans_requested_angle(stamp[0], path, target)
    assert_expected_shapes(shapes)
