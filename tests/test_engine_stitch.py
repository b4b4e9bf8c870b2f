"""Stitched stamps across tile edges: exact where tiles share a pixel grid (the stamp equals
the same cut from the one big image the tiles were made from), resampled within the
interpolation error where they do not, every pixel's source recorded."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
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
