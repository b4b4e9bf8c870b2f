"""Stitched stamps across tile edges: exact where tiles share a pixel grid (the stamp equals
the same cut from the one big image the tiles were made from), resampled within the
interpolation error where they do not, every pixel's source recorded."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

import vo_service
from tests import fits_factory, tile_factory
from vo_service.engine.batch import cut_many
from vo_service.engine.reading import OpenImage
from vo_service.engine.stitch import Tile, stitch_cutouts
from vo_service.shapes import CenterSize, Circle

warnings.simplefilter("ignore", FITSFixedWarning)

# A 300 x 200 SIP image cut into a 2 x 2 tract: columns 0-169 | 150-299, rows 0-109 | 90-199.
TRACT_BOXES = {"west_south": (0, 170, 0, 110), "east_south": (150, 300, 0, 110),
               "west_north": (0, 170, 90, 200), "east_north": (150, 300, 90, 200)}


@pytest.fixture(scope="module")
def tract(tmp_path_factory):
    """The big image (integer-valued floats: every pixel tells where it is) and its tiles."""
    directory = tmp_path_factory.mktemp("tract")
    header = fits_factory.celestial_header(crval=(150.0, 2.2), crpix=(150.5, 100.5), sip=True)
    rows, cols = np.mgrid[0:200, 0:300]
    data = (rows * 1000 + cols).astype(np.float32)
    big = fits_factory.write_image(directory / "big.fits", header, data)
    tiles = tile_factory.split_into_tiles(directory, header, data, TRACT_BOXES)
    return big, tiles, WCS(header)


def sky_of(wcs: WCS, x: float, y: float) -> tuple[float, float]:
    ra, dec = wcs.all_pix2world(x, y, 0)
    return float(ra), float(dec)


def stitch_on(grid, others, regions, **options):
    with OpenImage(grid) as grid_image:
        neighbours = [OpenImage(path) for path in others]
        try:
            return stitch_cutouts(Tile(grid_image, grid.name),
                                  [Tile(image, path.name) for image, path
                                   in zip(neighbours, others, strict=True)],
                                  regions, **options)
        finally:
            for image in neighbours:
                image.close()


def test_a_stamp_across_a_shared_grid_corner_equals_the_big_image(tract):
    big, tiles, wcs = tract
    centre = sky_of(wcs, 165.0, 105.0)  # in all four tiles' overlap, near every edge
    regions = [CenterSize(*centre, 61, 45, "pix"), Circle(*centre, 12 / 3600)]
    others = [tiles[name] for name in ("east_south", "west_north", "east_north")]
    stitched = stitch_on(tiles["west_south"], others, regions)
    truth = cut_many(big, 0, regions)
    for result, expected in zip(stitched, truth, strict=True):
        assert result.status == "stitched"
        assert expected.status == "ok"
        np.testing.assert_array_equal(result.data, expected.data)
        assert result.data.dtype == expected.data.dtype
        hdus = result.to_hdulist()
        header = hdus[0].header
        assert header["STITCHED"] is True and header["SRCIMG1"] == "west_south.fits"
        listed = {header[f"SRCIMG{n}"] for n in range(1, header["NSRCIMG"] + 1)}
        assert listed == {"west_south.fits", "east_south.fits", "west_north.fits",
                          "east_north.fits"}
        assert {header[f"SRCHOW{n}"] for n in range(1, header["NSRCIMG"] + 1)} == {"copy"}
        source_map = hdus["SRCMAP"].data
        assert source_map.shape == result.data.shape and source_map.min() > 0
        assert sum(header[f"SRCPIX{n}"] for n in range(1, header["NSRCIMG"] + 1)) \
            == source_map.size
        # the stamp's WCS is the big image's, shifted to the stamp's box
        stamp_wcs = WCS(header)
        x0, y0 = expected.pixel_box.x0, expected.pixel_box.y0
        np.testing.assert_allclose(stamp_wcs.all_pix2world([[0, 0], [20, 30]], 0),
                                   wcs.all_pix2world([[x0, y0], [x0 + 20, y0 + 30]], 0),
                                   rtol=0, atol=1e-10)


def test_overlap_pixels_come_from_the_grid_tile_then_the_nearest_tile_centre(tract):
    _, tiles, wcs = tract
    centre = sky_of(wcs, 160.0, 30.0)  # west_south tile, 10 px from its east edge
    (result,) = stitch_on(tiles["west_south"], [tiles["east_south"], tiles["west_north"]],
                          [CenterSize(*centre, 41, 21, "pix")])
    source_map = result.to_hdulist()["SRCMAP"].data
    x0 = result.pixel_box.x0
    columns = np.arange(source_map.shape[1]) + x0
    assert (source_map[:, columns < 170] == 1).all()  # everything the grid tile has
    assert (source_map[:, columns >= 170] == 2).all()  # the rest from east_south (copy)
    assert result.to_hdulist()[0].header["SRCIMG2"] == "east_south.fits"


def test_a_stamp_inside_one_tile_is_a_plain_cutout(tract):
    big, tiles, wcs = tract
    region = CenterSize(*sky_of(wcs, 60.0, 40.0), 21, 21, "pix")
    (result,) = stitch_on(tiles["west_south"], [tiles["east_south"]], [region])
    assert result.status == "ok" and "STITCHED" not in result.to_hdulist()[0].header
    np.testing.assert_array_equal(result.data, cut_many(big, 0, [region])[0].data)


def test_without_a_covering_neighbour_the_stamp_stays_partial(tract):
    _, tiles, wcs = tract
    region = CenterSize(*sky_of(wcs, 5.0, 40.0), 31, 21, "pix")  # off the tract's west edge
    (result,) = stitch_on(tiles["west_south"], [tiles["east_south"]], [region])
    assert result.status == "partial"


def test_the_python_api_stitches_files_into_one_stamp_per_target(tract):
    big, tiles, wcs = tract
    targets = [sky_of(wcs, 165.3, 105.4), sky_of(wcs, 40.2, 30.3)]  # no rounding ties
    stamps = vo_service.cutout(list(tiles.values()), targets, 40, stitch=True)
    assert len(stamps) == 2  # one per target, not one per tile
    truth = vo_service.cutout([big], targets, 40)
    for stamp, expected in zip(sorted(stamps, key=lambda h: h[0].header["CRPIX1"]),
                               sorted(truth, key=lambda h: h[0].header["CRPIX1"]),
                               strict=True):
        np.testing.assert_array_equal(stamp[0].data, expected[0].data)
    with pytest.raises(ValueError, match="interp, flux"):
        vo_service.cutout(list(tiles.values()), targets, 40, stitch="cubic")


@pytest.fixture(scope="module")
def rotated_pair(tmp_path_factory):
    """Two tiles with their own tangent points (the second rotated by 4 degrees), both
    rendered from one sky of isolated point sources, some right on the seam."""
    directory = tmp_path_factory.mktemp("rotated")
    west = tile_factory.tile_header((150.0, 2.2), (200, 200))
    west_wcs = WCS(west)
    east = tile_factory.tile_header(sky_of(west_wcs, 285.0, 110.0), (200, 200),
                                    rotation_deg=4.0)
    rng = np.random.default_rng(5)
    columns, rows = np.meshgrid([200.3, 226.7], np.arange(25.4, 180, 25.2))
    x = columns.ravel() + rng.uniform(-1, 1, columns.size)
    ra, dec = west_wcs.all_pix2world(x, rows.ravel(), 0)
    sky = tile_factory.PointSky(ra, dec, rng.uniform(500, 5000, x.size))
    paths = [tile_factory.write_rendered(directory / f"{name}.fits", sky, header, (200, 200))
             for name, header in (("west", west), ("east", east))]
    return paths, sky, west_wcs


@pytest.mark.parametrize("method", ["interp", "flux"])
def test_resampled_seam_keeps_point_source_flux_within_one_percent(rotated_pair, method):
    (west, east), sky, west_wcs = rotated_pair
    region = CenterSize(*sky_of(west_wcs, 195.0, 100.0), 90, 180, "pix")
    (result,) = stitch_on(west, [east], [region], method=method)
    assert result.status == "stitched"
    header = result.to_hdulist()[0].header
    assert (header["SRCHOW2"], header["STITCHMD"]) == ("resample", method)
    source_map = result.to_hdulist()["SRCMAP"].data
    seam = 200 - result.pixel_box.x0  # first stamp column beyond the west tile
    assert (source_map[:, :seam] == 1).all() and (source_map[:, seam:] == -2).all()
    stamp_wcs = WCS(header)
    data = result.data.astype(float)
    x, y = stamp_wcs.all_world2pix(sky.ra, sky.dec, 0)
    rows, columns = np.mgrid[0:data.shape[0], 0:data.shape[1]]
    errors = np.array([data[np.hypot(columns - xs, rows - ys) < 8].sum() / flux - 1
                       for xs, ys, flux in zip(x, y, sky.flux, strict=True)])
    on_seam = np.abs(x - seam) < 2
    assert on_seam.sum() == 7 and (~on_seam).sum() == 7
    assert np.abs(errors[on_seam]).max() < 0.01  # half copied, half resampled
    assert np.abs(errors[~on_seam]).max() < 0.002  # resampled only
    truth = sky.render(stamp_wcs, data.shape)
    assert np.abs(data - truth).max() < 0.08 * truth.max()  # interpolation error


def test_integer_masks_are_never_interpolated(tmp_path):
    west = tile_factory.tile_header((150.0, 2.2), (60, 60))
    east = tile_factory.tile_header(sky_of(WCS(west), 80.0, 30.0), (60, 60), rotation_deg=7)
    flags = np.where(np.arange(3600).reshape(60, 60) % 7 == 0, 4, 1).astype(np.int32)
    paths = [fits_factory.write_image(tmp_path / f"{name}.fits", header, flags)
             for name, header in (("west", west), ("east", east))]
    (result,) = stitch_on(paths[0], [paths[1]],
                          [CenterSize(*sky_of(WCS(west), 55.0, 30.0), 30, 20, "pix")],
                          method="flux")
    assert result.status == "stitched" and result.data.dtype.kind == "i"
    assert set(np.unique(result.data)) <= {1, 4}


def test_the_command_line_stitches_tiles(tract, tmp_path, capsys):
    from vo_service.cli import main

    big, tiles, wcs = tract
    ra, dec = sky_of(wcs, 165.3, 105.4)
    out = tmp_path / "out"
    status = main(["cutout", *map(str, tiles.values()), "--ra", str(ra), "--dec", str(dec),
                   "--id", "seam", "--size", "40", "--stitch", "--format", "both",
                   "--out", str(out), "--quiet"])
    assert status == 0
    assert "1 cutouts made, 0 partial, 1 stitched, 0 no overlap, 0 errors" in (
        capsys.readouterr().out)
    (written,) = out.glob("*.fits")
    assert len(list(out.glob("*.png"))) == 1
    (truth,) = vo_service.cutout([big], [(ra, dec)], 40)
    with fits.open(written) as hdus:
        np.testing.assert_array_equal(hdus[0].data, truth[0].data)
        assert hdus["SRCMAP"].data.min() > 0
    refused = main(["cutout", *map(str, tiles.values()), "--ra", str(ra), "--dec", str(dec),
                    "--stitch", "--single-file", "--out", str(out)])
    assert refused == 2
