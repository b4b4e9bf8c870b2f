"""The time-series engine: the quick path through epoch files gives the same bytes as the
general cutout path; statuses of epochs off, partly on or empty; header cards."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from tests import fits_factory
from vo_service.engine.batch import iter_cutouts
from vo_service.engine.reading import OpenImage
from vo_service.engine.stack import Epoch, cut_epochs, epochs_from_files, stack_bytes
from vo_service.engine.stack_fast import quick_cut, quick_wcs, scan_hdu
from vo_service.shapes import CenterSize


def general_cut(path: Path, hdu: int, region: CenterSize, pad: bool = False) -> bytes:
    with OpenImage(path, hdu) as image:
        (result,) = iter_cutouts(image, [region], pad=pad, origfile=path.name)
    return result.fits_bytes() if result.has_stamp else result.status.encode()


def quick_bytes(path: Path, hdu: int, region: CenterSize, pad: bool = False) -> bytes | None:
    found = quick_cut(path, hdu, region, pad=pad, origfile=path.name)
    if found is None:
        return None
    result, _ = found
    return result.fits_bytes() if result.has_stamp else result.status.encode()


def test_quick_path_gives_the_general_path_bytes(demo_archive, tmp_path) -> None:
    files = sorted(demo_archive.glob("euclid/EPOCHS/*/*.fits"))[:6]
    files += [fits_factory.sip_image(tmp_path / "sip.fits"),
              fits_factory.scaled_int_image(tmp_path / "int.fits"),
              fits_factory.pole_image(tmp_path / "pole.fits"), legacy_pc_image(tmp_path)]
    checked = 0
    for path in files:
        header = fits.getheader(path)
        from astropy.wcs import WCS

        centre = WCS(header).pixel_to_world(header["NAXIS1"] / 2 - 3.3, header["NAXIS2"] / 2)
        corner = WCS(header).pixel_to_world(2.0, 3.0)
        far = WCS(header).pixel_to_world(-300.0, -300.0)
        for sky in (centre, corner, far):
            for pad in (False, True):
                region = CenterSize(sky.icrs.ra.deg, sky.icrs.dec.deg, 21, 17)
                quick = quick_bytes(path, 0, region, pad)
                assert quick is not None, path.name
                assert quick == general_cut(path, 0, region, pad), (path.name, sky, pad)
                checked += 1
            assert quick_target(path, sky) == general_target(path, sky), path.name
    assert checked == len(files) * 6


def test_epochs_sharing_wcs_cards_share_a_wcs_and_others_do_not(tmp_path) -> None:
    """Co-registered epochs (identical WCS cards) reuse one WCS; an epoch whose grid is
    shifted (another CRPIX, all else equal) or whose SIP differs gets its own, so every
    stamp is still where the general path puts it."""
    same = [fits_factory.write_image(tmp_path / f"same{n}.fits", fits_factory.celestial_header(
        sip=True), fits_factory.position_image() + 10_000 * n) for n in range(2)]
    shifted = fits_factory.write_image(tmp_path / "shifted.fits", fits_factory.celestial_header(
        sip=True, crpix=(90.25, 70.5)), fits_factory.position_image())
    other_sip = fits.getheader(same[0])
    other_sip["A_2_0"] = 3.0e-4
    bent = fits_factory.write_image(tmp_path / "bent.fits", other_sip,
                                    fits_factory.position_image())
    sky = WCS(fits.getheader(same[0])).pixel_to_world(170.2, 30.7)
    region = CenterSize(sky.icrs.ra.deg, sky.icrs.dec.deg, 21, 17)
    targets = set()
    for path in (*same, shifted, bent):
        assert quick_bytes(path, 0, region) == general_cut(path, 0, region), path.name
        assert quick_target(path, sky) == general_target(path, sky), path.name
        targets.add(quick_target(path, sky))
    assert len(targets) == 3  # the shifted grid and the other SIP move the target
    stamps = [fits.getdata(io.BytesIO(quick_bytes(path, 0, region))) for path in same]
    assert (stamps[1] - stamps[0] == 10_000).all()  # pixels of each file, not shared
    raws = [scan_hdu(path, 0) for path in (*same, shifted)]
    wcs = [quick_wcs(raw, raw.header) for raw in raws if raw is not None]
    assert wcs[0] is wcs[1] and wcs[2] is not wcs[0]


def quick_target(path: Path, sky) -> tuple[float, float]:  # noqa: ANN001
    found = quick_cut(path, 0, CenterSize(sky.icrs.ra.deg, sky.icrs.dec.deg, 21, 17),
                      origfile=path.name)
    assert found is not None
    return found[1]


def general_target(path: Path, sky) -> tuple[float, float]:  # noqa: ANN001
    with OpenImage(path, 0) as image:
        xs, ys = image.sky_to_pixel.pixels(np.array([sky.icrs.ra.deg]),
                                           np.array([sky.icrs.dec.deg]))
    return float(xs[0]), float(ys[0])


def legacy_pc_image(folder: Path) -> Path:
    """A SIP image whose matrix is written in wcslib's legacy PC001002 form."""
    header = fits_factory.celestial_header(sip=True)
    for i in (1, 2):
        for j in (1, 2):
            header.rename_keyword(f"PC{i}_{j}", f"PC00{i}00{j}")
    return fits_factory.write_image(folder / "legacy.fits", header,
                                    fits_factory.position_image())


def test_quick_path_steps_aside_for_what_it_does_not_handle(tmp_path) -> None:
    region = CenterSize(150.0, 2.2, 10, 10)
    fk5 = fits_factory.write_image(tmp_path / "fk5.fits", fits_factory.celestial_header(
        frame="FK5"), fits_factory.position_image())
    galactic = fits_factory.write_image(tmp_path / "gal.fits", fits_factory.celestial_header(
        frame="GALACTIC", crval=(236.8, 42.1)), fits_factory.position_image())
    compressed = fits_factory.compressed_copy(fits_factory.sip_image(tmp_path / "s.fits"),
                                              tmp_path / "c.fits")
    for path, hdu in ((fk5, 0), (galactic, 0), (compressed, 1)):
        assert quick_bytes(path, hdu, region) is None, path.name
    assert quick_bytes(fk5, 0, CenterSize(150.0, 2.2, 4.0, 4.0, "arcsec")) is None
    # and the series still cuts them, through the general path
    epochs = [Epoch(path, hdu, path.name, 150.0, 2.2, 60000.0 + n)
              for n, (path, hdu) in enumerate(((fk5, 0), (compressed, 1)))]
    stamps = cut_epochs(epochs, 10)
    assert [s.status for s in stamps] == ["ok", "ok"]


def test_epoch_statuses_and_the_epochs_table(tmp_path) -> None:
    inside = fits_factory.epoch_image(tmp_path / "a.fits", mjd_obs=60002.0, exptime_s=60)
    header = fits.getheader(inside)
    header["MJD-OBS"] = 60001.5
    data = np.full((160, 200), np.nan, dtype=np.float32)
    empty = fits_factory.write_image(tmp_path / "b.fits", header, data)
    epochs = epochs_from_files([empty, inside], 150.0, 2.2)
    epochs.append(Epoch(inside, 0, "edge", 150.0 + 100.4 / 3600, 2.2, 60003.0))
    epochs.append(Epoch(inside, 0, "off", 151.0, 2.2, 60001.0))
    epochs.append(Epoch(tmp_path / "missing.fits", 0, "gone", 150.0, 2.2, 60004.0))
    stamps = cut_epochs(epochs, 20)
    statuses = {s.epoch.image_id: (s.number, s.status) for s in stamps}
    assert statuses == {"off": (1, "no-overlap"), "b.fits[0]": (2, "empty"),
                        "a.fits[0]": (3, "ok"), "edge": (4, "partial"), "gone": (5, "error")}
    stack = fits.HDUList.fromstring(stack_bytes(stamps, [("TARGRA", 150.0, "")]))
    assert [hdu.name for hdu in stack[1:-1]] == ["EPOCH2", "EPOCH3", "EPOCH4"]
    assert stack[0].header["NEPOCHS"] == 5 and stack[0].header["NSTAMPS"] == 3
    table = stack["EPOCHS"].data
    assert list(table["STATUS"]) == ["no-overlap", "empty", "ok", "partial", "error"]
    assert list(table["EXTNAME"]) == ["", "EPOCH2", "EPOCH3", "EPOCH4", ""]
    assert table["MESSAGE"][0] and table["MESSAGE"][4]  # says why
    ok = stack["EPOCH3"].header
    assert ok["MJD-OBS"] == 60002.0 and ok["EXPTIME"] == 60 and ok["EPOCH"] == 3
    assert ok["MJD-MID"] == pytest.approx(60002.0 + 30 / 86400)
    assert ok["DATE-OBS"].startswith("2023-02-27")
