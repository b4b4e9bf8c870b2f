"""OpenImagePool: open images kept between requests, one borrower at a time, bounded,
reopened when the file changes (shared by SODA sync, batch jobs and the CLI)."""

from __future__ import annotations

import os
import shutil

import pytest

from vo_service.engine.reading import OpenImage, OpenImagePool


@pytest.fixture
def images(real_data, tmp_path):
    names = ["HorseHead.fits", "M6707HH.fits", "sip-wcs.fits"]
    for name in names:
        shutil.copy(real_data / "fits/images" / name, tmp_path / name)
    return [tmp_path / name for name in names]


def test_pool_reuses_and_bounds_open_images(images):
    pool = OpenImagePool(size=2)
    seen = []
    for path in [images[0], images[0], images[1], images[2], images[2]]:
        with pool.image(path, 0) as image:
            assert isinstance(image, OpenImage) and image.path == path
            seen.append(image)
    assert seen[0] is seen[1] and seen[3] is seen[4]
    assert len({id(image) for image in seen}) == 3
    assert pool.idle_count() == 2
    assert seen[0].hdulist._file.closed  # least recently used, closed on eviction


def test_pool_lends_an_image_to_one_borrower_at_a_time(images):
    pool = OpenImagePool(size=4)
    with pool.image(images[0], 0) as first, pool.image(images[0], 0) as second:
        assert first is not second
    assert pool.idle_count() == 2


def test_pool_reopens_a_changed_file_and_closes_an_image_after_an_error(images):
    pool = OpenImagePool(size=4)
    with pool.image(images[0], 0) as before:
        pass
    stat = images[0].stat()
    os.utime(images[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pool.image(images[0], 0) as after:
        assert after is not before
    with pytest.raises(RuntimeError), pool.image(images[1], 0) as failed:
        raise RuntimeError("cutout failed")
    assert failed.hdulist._file.closed and pool.idle_count() == 2


def test_pool_evicts_past_an_image_that_is_lent_out(images):
    pool = OpenImagePool(size=1)
    with pool.image(images[0], 0):
        pass
    with pool.image(images[0], 0):  # the only idle image of this file is lent out
        for path in images[1:]:
            with pool.image(path, 0):
                pass
    assert pool.idle_count() == 1


def _mapped_rss(path) -> int:  # noqa: ANN001
    """Resident bytes of this process's memory maps of ``path`` (Linux smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            if "-" in line.split(" ", 1)[0]:  # a mapping's first line: address range ... path
                inside = line.rstrip().endswith(str(path))
            elif inside and line.startswith("Rss:"):
                total += int(line.split()[1]) * 1024
    return total


def test_a_large_read_leaves_no_file_pages_mapped(tmp_path):
    """The pixels are right, and RSS does not keep the pages a large read touched (each
    open copy of an image would count them again); a small read keeps its pages."""
    import numpy as np
    from astropy.io import fits

    from vo_service.engine.geometry import PixelBox
    from vo_service.engine.reading import FORGET_PAGES_BYTES

    pixels = np.arange(2200 * 1800, dtype=">f4").reshape(1800, 2200)
    path = tmp_path / "large.fits"
    fits.PrimaryHDU(pixels).writeto(path)
    box = PixelBox(((10, 2100), (5, 1700)))  # x then y, half-open: 2090 x 1695 float32
    assert box.size * 4 >= FORGET_PAGES_BYTES
    with OpenImage(path) as image:
        read = image.read(box)
        assert np.array_equal(read, pixels[5:1700, 10:2100])
        assert _mapped_rss(path) < 1024 * 1024
        small = image.read(PixelBox(((0, 100), (0, 100))))
        assert np.array_equal(small, pixels[:100, :100])
        assert _mapped_rss(path) > 0
