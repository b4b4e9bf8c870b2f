"""`vo-service cutout` end to end on real FITS files: files, summary, exit codes."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from PIL import Image

from vo_service.cli import main

HORSEHEAD = ("fits", "images", "HorseHead.fits")  # 893x891 DSS2 plate around (85.275, -2.458)
TEST0 = ("fits", "images", "test0.fits")  # WFPC2: HDUs 2-4 have a sky WCS, HDU 1 has not

CATALOG = """# name, position (sexagesimal or degrees), optional size in pixels
name,RA,DEC,size
centre,05:41:06.0,-02:27:30,
corner,85.2750,-2.3400,
elsewhere,10.0,10.0,
small,85.3,-2.5,20
broken,banana,-2.5,
"""


@pytest.fixture
def horsehead(real_data: Path) -> Path:
    return real_data.joinpath(*HORSEHEAD)


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    path = tmp_path / "targets.csv"
    path.write_text(CATALOG)
    return path


def _source_pixels(path: Path, header: fits.Header) -> np.ndarray:
    x0, x1, y0, y1 = (header[k] for k in ("CUTX0", "CUTX1", "CUTY0", "CUTY1"))
    with fits.open(path, do_not_scale_image_data=True) as hdul:
        return hdul[header["ORIG_EXT"]].data[y0 - 1:y1, x0 - 1:x1]


def test_catalog_run_writes_fits_and_previews_and_counts(horsehead, catalog, tmp_path, capsys):
    out = tmp_path / "out"
    status = main(["cutout", str(horsehead), "--catalog", str(catalog), "--size", "64",
                   "--format", "both", "--out", str(out), "--stretch", "sqrt"])
    captured = capsys.readouterr()
    assert status == 0
    assert "3 cutouts made, 1 partial, 1 no overlap, 0 errors, 1 catalog rows skipped" in (
        captured.out)
    assert "skipped broken: row 5: cannot read RA 'banana'" in captured.err
    assert "100% (4/4 stamps)" in captured.err
    assert sorted(p.name for p in out.iterdir()) == [
        "centre_HorseHead.fits", "centre_HorseHead.png", "corner_HorseHead.fits",
        "corner_HorseHead.png", "small_HorseHead.fits", "small_HorseHead.png",
    ]
    with fits.open(out / "centre_HorseHead.fits") as hdul:
        header, data = hdul[0].header, hdul[0].data
        assert data.shape == (64, 64) and header["ORIGFILE"] == "HorseHead.fits"
        np.testing.assert_array_equal(data, _source_pixels(horsehead, header))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            ra, dec = WCS(header).all_pix2world([[31.5, 31.5]], 0)[0]
        assert abs(ra - 85.275) < 2e-3 and abs(dec - -2.458333) < 2e-3
    with fits.open(out / "corner_HorseHead.fits") as hdul:  # clipped at the top edge
        assert hdul[0].data.shape[1] == 64 and hdul[0].data.shape[0] < 64
    with fits.open(out / "small_HorseHead.fits") as hdul:  # per-target size column
        assert hdul[0].data.shape == (20, 20)
    with Image.open(out / "centre_HorseHead.png") as preview:
        assert (preview.format, preview.size) == ("PNG", (64, 64))


def test_position_in_sexagesimal_with_angular_size_and_padding(horsehead, tmp_path, capsys):
    out = tmp_path / "out"
    status = main(["cutout", str(horsehead), "--ra", "05:41:06.0", "--dec", "-02:20:10",
                   "--size", "1", "--unit", "arcmin", "--pad", "--id", "M 1/2",
                   "--out", str(out), "--quiet"])
    assert status == 0
    assert "1 cutouts made, 1 partial, 0 no overlap, 0 errors" in capsys.readouterr().out
    with fits.open(out / "M_1_2_HorseHead.fits") as hdul:  # unsafe characters replaced
        data = hdul[0].data
    # 1' along each axis at the local scales (1.0090" x 1.0073" per pixel: 59.5 x 59.6),
    # padded to the full size
    assert data.shape == (60, 59)
    assert hdul[0].header["BLANK"] == -32768 or np.isnan(data).any()


def test_single_file_per_target_holds_every_sky_hdu(real_data, tmp_path, capsys):
    out = tmp_path / "out"
    status = main(["cutout", str(real_data.joinpath(*TEST0)), "--ra", "215.5905",
                   "--dec", "-12.7352", "--size", "16", "--single-file", "--id", "wfpc2",
                   "--out", str(out), "--quiet"])
    assert status == 0
    assert "3 cutouts made, 0 partial, 0 no overlap, 0 errors" in capsys.readouterr().out
    assert [p.name for p in out.iterdir()] == ["wfpc2.fits"]  # staging removed
    with fits.open(out / "wfpc2.fits") as hdul:
        assert hdul[0].header["OBJECT"] == "wfpc2" and hdul[0].data is None
        assert [h.header["ORIG_EXT"] for h in hdul[1:]] == [2, 3, 4]
        assert [h.name.upper() for h in hdul[1:]] == ["TEST0_H2", "TEST0_H3", "TEST0_H4"]
        for hdu in hdul[1:]:
            np.testing.assert_array_equal(hdu.data, _source_pixels(
                real_data.joinpath(*TEST0), hdu.header))


def test_nothing_to_cut_exits_1(horsehead, tmp_path, capsys):
    status = main(["cutout", str(horsehead), "--ra", "10", "--dec", "10",
                   "--out", str(tmp_path / "out"), "--quiet"])
    assert status == 1
    assert "0 cutouts made, 0 partial, 1 no overlap, 0 errors" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--ra", "85.3"], "give a position with --ra and --dec, or a --catalog"),
        (["--ra", "eighty", "--dec", "1"], "cannot read RA 'eighty' as an angle"),
        (["--ra", "85", "--dec", "95"], "Dec 95.0 is outside [-90, 90]"),
        (["--ra", "85", "--dec", "1", "--size", "-3"], "must be positive"),
        (["--ra", "85", "--dec", "1", "--format", "png", "--stretch", "cube"],
         "stretch must be one of linear, sqrt, log, asinh"),
        (["--catalog", "CATALOG", "--ra-column", "alpha"],
         "the RA column 'alpha' does not exist; available columns: name, RA, DEC, size"),
        (["--catalog", "CATALOG", "--ra", "1", "--dec", "1"], "not both"),
        (["--ra", "85", "--dec", "1", "--hdu", "1"], "HDU 1 is an image with a celestial"),
    ],
)
def test_bad_input_exits_2_with_what_to_fix(horsehead, catalog, tmp_path, capsys, arguments,
                                            message):
    arguments = [str(catalog) if a == "CATALOG" else a for a in arguments]
    status = main(["cutout", str(horsehead), *arguments, "--out", str(tmp_path / "o")])
    assert status == 2
    assert message in capsys.readouterr().err


def test_missing_file_and_bad_worker_count(tmp_path, capsys):
    assert main(["cutout", str(tmp_path / "none.fits"), "--ra", "1", "--dec", "1"]) == 2
    assert "none.fits: no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["cutout", str(tmp_path), "--ra", "1", "--dec", "1", "--workers", "17"])
    assert exit_info.value.code == 2
    assert "must be between 1 and 16" in capsys.readouterr().err


def test_console_script_with_worker_processes(real_data, horsehead, catalog, tmp_path):
    script = Path(sys.executable).parent / "vo-service"
    assert script.exists(), "install the package (make test) to get the vo-service script"
    out = tmp_path / "out"
    done = subprocess.run(
        [str(script), "cutout", str(horsehead), str(real_data.joinpath(*TEST0)),
         "--catalog", str(catalog), "--format", "jpeg", "--preview-size", "32",
         "--workers", "2", "--out", str(out)],
        capture_output=True, text=True, timeout=240, check=False,
    )
    assert done.returncode == 0, done.stderr
    # 4 good targets x (HorseHead + 3 WFPC2 chips); only HorseHead holds any of them
    assert "3 cutouts made, 1 partial, 13 no overlap, 0 errors" in done.stdout
    assert "100% (16/16 stamps)" in done.stderr
    previews = sorted(out.glob("*.jpg"))
    assert [p.name for p in previews] == [
        "centre_HorseHead.jpg", "corner_HorseHead.jpg", "small_HorseHead.jpg",
    ]
    with Image.open(previews[0]) as image:
        assert image.format == "JPEG" and max(image.size) == 32


def test_a_directory_means_every_fits_file_in_it(real_data, tmp_path, capsys):
    out = tmp_path / "out"
    status = main(["cutout", str(real_data / "fits" / "derived"), "--ra", "0.0",
                   "--dec", "-2.458", "--size", "10", "--out", str(out), "--quiet"])
    assert status == 0
    # the re-pointed HorseHead straddles RA = 0; the L1448 cube is elsewhere
    assert "1 cutouts made, 0 partial, 1 no overlap, 0 errors" in capsys.readouterr().out
    assert [p.name for p in out.iterdir()] == ["0.00000-2.45800_ra0wrap_HorseHead.fits"]


def _band_file(path: Path, flux: float) -> Path:
    """A 100x100 1"/pixel TAN image at (150, 2) with a star at pixel (50, 30) of `flux`."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.0, 2.0]
    wcs.wcs.crpix = [50.5, 50.5]
    wcs.wcs.cdelt = [-1 / 3600, 1 / 3600]
    y, x = np.mgrid[:100, :100]
    noise = np.random.default_rng(int(flux * 10)).normal(0.0, 0.01, (100, 100))
    data = (noise + flux * np.exp(-((x - 50) ** 2 + (y - 30) ** 2) / 8.0)).astype(np.float32)
    fits.PrimaryHDU(data, wcs.to_header()).writeto(path)
    return path


def test_rgb_composite_from_three_bands(tmp_path, capsys):
    bands = [_band_file(tmp_path / f"{name}.fits", flux)
             for name, flux in (("i", 10.0), ("r", 0.5), ("g", 0.3))]
    out = tmp_path / "out"
    status = main(["cutout", *map(str, bands), "--ra", "150", "--dec", "2", "--size", "80",
                   "--rgb", "--id", "star", "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert status == 0
    assert "3 cutouts made" in captured.out and "1 colour composites made" in captured.out
    assert sorted(p.name for p in out.iterdir()) == [
        "star_g.fits", "star_i.fits", "star_r.fits", "star_rgb.png",
    ]
    with Image.open(out / "star_rgb.png") as composite:
        assert composite.mode == "RGB" and composite.size == (80, 80)
        red, green, blue = np.asarray(composite)[79 - 20, 40].astype(int)  # star at y=20
    assert red > 200 and red > 3 * max(green, blue)
    assert main(["cutout", *map(str, bands[:2]), "--ra", "150", "--dec", "2", "--rgb",
                 "--out", str(out)]) == 2
    assert "--rgb needs exactly three images (red, green, blue), got 2: i, r" in (
        capsys.readouterr().err)


def test_same_file_name_in_two_folders_keeps_both(horsehead, tmp_path, capsys):
    copy = tmp_path / "copy" / "HorseHead.fits"
    copy.parent.mkdir()
    copy.write_bytes(horsehead.read_bytes())
    out = tmp_path / "out"
    assert main(["cutout", str(horsehead), str(copy), "--ra", "85.275", "--dec", "-2.458",
                 "--size", "8", "--id", "hh", "--out", str(out), "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["hh_HorseHead.fits", "hh_HorseHead_2.fits"]


def test_unitless_size_column_takes_the_unit_option(horsehead, tmp_path, capsys):
    catalog = tmp_path / "sizes.csv"
    catalog.write_text("id,ra,dec,size\nwide,85.275,-2.458,30\n")
    out = tmp_path / "out"
    assert main(["cutout", str(horsehead), "--catalog", str(catalog), "--unit", "arcsec",
                 "--out", str(out), "--quiet"]) == 0
    with fits.open(out / "wide_HorseHead.fits") as hdul:
        assert hdul[0].data.shape == (30, 30)  # 30" at 1.01"/pixel


def test_dotted_gzipped_file_names_keep_their_stem(real_data, tmp_path, capsys):
    source = real_data / "fits" / "images" / "dss.14.29.56-62.41.05.fits.gz"
    out = tmp_path / "out"
    assert main(["cutout", str(source), "--ra", "14:29:56", "--dec", "-62:41:05",
                 "--size", "10", "--id", "dss", "--out", str(out), "--quiet"]) == 0
    assert [p.name for p in out.iterdir()] == ["dss_dss.14.29.56-62.41.05.fits"]


def test_target_names_that_collide_once_made_unique_still_get_their_own_files(
        horsehead, tmp_path, capsys):
    # row 3 repeats row 1's ID; its row-numbered name is already row 2's own ID
    path = tmp_path / "clash.csv"
    path.write_text("id,ra,dec\na,85.275,-2.458\na_row3,85.27,-2.46\na,85.28,-2.455\n")
    out = tmp_path / "out"
    assert main(["cutout", str(horsehead), "--catalog", str(path), "--size", "16",
                 "--out", str(out)]) == 0
    assert "3 cutouts made" in capsys.readouterr().out
    files = sorted(p.name for p in out.iterdir())
    assert len(files) == 3, files
    centres = set()
    for name in files:
        with fits.open(out / name) as hdul:
            centres.add((hdul[0].header["CUTX0"], hdul[0].header["CUTY0"]))
    assert len(centres) == 3, "each file holds its own row's stamp"
