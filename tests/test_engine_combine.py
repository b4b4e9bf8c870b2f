"""Combined stacks: synthetic epochs of a known sky combine to the sky with the noise down
by sqrt(N) (mean), the RMS the inverse-variance weights predict (ivar), and a count of
the epochs behind every pixel."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

import vo_service
from tests import fits_factory, tile_factory
from vo_service.engine.combine import Stamp, combine

warnings.simplefilter("ignore", FITSFixedWarning)

SHAPE = (120, 120)
EPOCHS = 16


def shifted(header: fits.Header, dx: int, dy: int) -> fits.Header:
    """The same grid, the stamp starting dx, dy pixels further (a whole-pixel dither)."""
    moved = header.copy()
    moved["CRPIX1"] -= dx
    moved["CRPIX2"] -= dy
    return moved


@pytest.fixture(scope="module")
def sky():
    rng = np.random.default_rng(3)
    wcs = WCS(tile_factory.tile_header((150.0, 2.2), SHAPE))
    ra, dec = wcs.all_pix2world(rng.uniform(20, 100, 12), rng.uniform(20, 100, 12), 0)
    return tile_factory.PointSky(ra, dec, rng.uniform(200, 2000, 12))


def epoch_stamps(sky, sigmas, dithers) -> tuple[list[Stamp], WCS]:
    """Epochs of the sky on one grid, whole-pixel dithers, Gaussian noise of ``sigmas``."""
    base = tile_factory.tile_header((150.0, 2.2), SHAPE)
    stamps = []
    for number, (sigma, (dx, dy)) in enumerate(zip(sigmas, dithers, strict=True)):
        header = shifted(base, dx, dy)
        wcs = WCS(header)
        noise = np.random.default_rng(100 + number).normal(0.0, sigma, SHAPE)
        stamps.append(Stamp((sky.render(wcs, SHAPE) + noise).astype(np.float32), wcs,
                            f"epoch{number}", np.full(SHAPE, sigma, np.float32)))
    return stamps, WCS(base)


def residual_noise(result, sky, wcs) -> float:
    """Standard deviation of (combined - sky) where every epoch contributed."""
    full = result.count == result.count.max()
    return float(np.std((result.data - sky.render(wcs, SHAPE))[full]))


def test_the_mean_of_n_epochs_has_the_noise_down_by_sqrt_n(sky):
    dithers = [(number % 4 - 2, number // 4 - 2) for number in range(EPOCHS)]
    stamps, wcs = epoch_stamps(sky, [1.0] * EPOCHS, dithers)
    result = combine(stamps, method="mean", grid=(wcs, SHAPE))
    assert residual_noise(result, sky, wcs) == pytest.approx(1 / math.sqrt(EPOCHS), rel=0.05)
    # the dithers leave the edges with fewer epochs: the count says how many
    # (dithers -2..1 pixels: pixel 0 is in 3 of 4 positions per axis, pixel 119 in 2)
    assert result.count.max() == EPOCHS and result.count.min() == 4
    assert (result.count[0, 0], result.count[119, 119], result.count[60, 60]) == (9, 4, 16)
    np.testing.assert_allclose(result.rms[60, 60], 1 / math.sqrt(EPOCHS), rtol=1e-6)


def test_median_and_sum(sky):
    stamps, wcs = epoch_stamps(sky, [1.0] * EPOCHS, [(0, 0)] * EPOCHS)
    median = combine(stamps, method="median")
    expected = math.sqrt(math.pi / 2) / math.sqrt(EPOCHS)
    assert residual_noise(median, sky, wcs) == pytest.approx(expected, rel=0.08)
    assert median.rms[0, 0] == pytest.approx(expected, rel=1e-6)
    total = combine(stamps, method="sum")
    truth = sky.render(wcs, SHAPE) * EPOCHS
    assert np.std(total.data - truth) == pytest.approx(math.sqrt(EPOCHS), rel=0.05)


def test_inverse_variance_mean_weights_by_the_rms(sky):
    sigmas = [0.5, 1.0, 2.0, 4.0] * 4
    stamps, wcs = epoch_stamps(sky, sigmas, [(0, 0)] * len(sigmas))
    result = combine(stamps, method="ivar")
    predicted = 1 / math.sqrt(sum(1 / s**2 for s in sigmas))
    np.testing.assert_allclose(result.rms, predicted, rtol=1e-5)
    assert residual_noise(result, sky, wcs) == pytest.approx(predicted, rel=0.05)
    plain = combine(stamps, method="mean")
    assert residual_noise(plain, sky, wcs) > 1.5 * predicted  # the weights matter
    with pytest.raises(ValueError, match="RMS"):
        combine([Stamp(s.data, s.wcs, s.label) for s in stamps], method="ivar")


def test_stamps_on_other_grids_are_resampled_onto_the_first(sky):
    base = tile_factory.tile_header((150.0, 2.2), SHAPE)
    rotated = tile_factory.tile_header((150.0003, 2.2002), SHAPE, rotation_deg=5.0)
    stamps = [Stamp(sky.render(WCS(header), SHAPE).astype(np.float32), WCS(header), name)
              for name, header in (("base", base), ("rotated", rotated))]
    result = combine(stamps, method="mean")
    truth = sky.render(WCS(base), SHAPE)
    both = result.count == 2
    assert both.mean() > 0.8
    assert np.abs(result.data - truth)[both].max() < 0.05 * truth.max()


def test_the_python_api_combines_files_with_their_rms(sky, tmp_path):
    stamps, _ = epoch_stamps(sky, [1.0, 2.0, 1.0], [(0, 0), (3, 0), (0, 2)])
    files, rms_files = [], []
    for stamp in stamps:
        header = stamp.wcs.to_header()
        files.append(fits_factory.write_image(tmp_path / f"{stamp.label}.fits", header,
                                              stamp.data))
        rms_files.append(fits_factory.write_image(tmp_path / f"{stamp.label}_rms.fits",
                                                  header, stamp.rms))
    written = vo_service.combine(files, method="ivar", rms=rms_files,
                                 output=tmp_path / "out.fits")
    with fits.open(written) as hdus:
        assert [hdu.name for hdu in hdus] == ["PRIMARY", "COUNT", "RMS"]
        header = hdus[0].header
        assert (header["COMBINE"], header["NCOMBINE"]) == ("ivar", 3)
        assert [header[f"IMCMB00{n}"] for n in (1, 2, 3)] == [
            "epoch0.fits", "epoch1.fits", "epoch2.fits"]
        assert hdus["COUNT"].data[60, 60] == 3 and hdus["COUNT"].data[0, 0] == 1
        assert hdus["RMS"].data[60, 60] == pytest.approx(1 / math.sqrt(2.25), rel=1e-5)
    with pytest.raises(ValueError, match="mean, median, sum, ivar"):
        vo_service.combine(files, method="mode")


def test_the_command_line_combines_stamps(sky, tmp_path, capsys):
    from vo_service.cli import main

    stamps, _ = epoch_stamps(sky, [1.0, 1.0], [(0, 0), (0, 0)])
    files = [fits_factory.write_image(tmp_path / f"{s.label}.fits", s.wcs.to_header(), s.data)
             for s in stamps]
    out = tmp_path / "median.fits"
    assert main(["combine", *map(str, files), "--method", "median", "--out", str(out)]) == 0
    assert "2 stamps combined (median)" in capsys.readouterr().out
    with fits.open(out) as hdus:
        np.testing.assert_allclose(hdus[0].data, (stamps[0].data + stamps[1].data) / 2,
                                   rtol=1e-6)
        assert (hdus["COUNT"].data == 2).all()
    assert main(["combine", *map(str, files), "--method", "ivar", "--out", str(out)]) == 2
    assert "needs an RMS image" in capsys.readouterr().err
