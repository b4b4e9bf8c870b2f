"""``vo-service timeseries``: local files or the archive index -> stack, cube, light curve."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.io.votable import parse_single_table

from vo_service.archive.index import ArchiveIndex
from vo_service.cli import main


@pytest.fixture(scope="module")
def variable(variable_star: dict[str, str]) -> tuple[str, str]:
    return variable_star["ra"], variable_star["dec"]


@pytest.fixture(scope="module")
def state_dir(demo_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    state = tmp_path_factory.mktemp("ts-cli-state")
    ArchiveIndex(state / "index.sqlite").update([demo_archive])
    return state


def test_archive_series_writes_stack_cube_and_light_curve(state_dir, variable, tmp_path,
                                                          capsys) -> None:
    status = main(["timeseries", "--state-dir", str(state_dir), "--ra", variable[0],
                   "--dec", variable[1], "--size", "4", "--unit", "arcsec", "--band", "VIS",
                   "--product-type", "BGSUB", "--cube", "--lightcurve", "--aperture", "1.5",
                   "--annulus", "2.5", "4", "--name", "var", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert status == 0
    assert printed.count(" ok ") == 20 and "wrote" in printed
    stack = fits.open(tmp_path / "var_stack.fits")
    assert stack["EPOCH1"].data.shape == (20, 20)  # 4 arcsec of 0.2 arcsec pixels
    assert fits.getdata(tmp_path / "var_cube.fits", "CUBE").shape == (20, 20, 20)
    curve = parse_single_table(tmp_path / "var_lightcurve.xml").to_table()
    assert len(curve) == 20 and np.all(np.isfinite(curve["flux"]))
    assert (tmp_path / "var_lightcurve.png").stat().st_size > 1000


def test_local_files_and_a_moving_target(demo_archive, tmp_path, capsys) -> None:
    files = [str(p) for p in sorted(demo_archive.glob("euclid/EPOCHS/*/*BGSUB*.fits"))]
    status = main(["timeseries", *files, "--ephemeris", str(demo_archive / "asteroid.csv"),
                   "--size", "15", "--out", str(tmp_path), "--name", "rock"])
    printed = capsys.readouterr().out
    assert status == 0
    assert "no-overlap" in printed and " ok " in printed  # off-image epochs are listed
    table = fits.getdata(tmp_path / "rock_stack.fits", "EPOCHS")
    assert len(table) == 20 and set(table["KIND"]) == {"path"}


@pytest.mark.parametrize(("arguments", "words"), [
    (["--ra", "53.3"], "give both --ra and --dec"),
    ([], "give --ra and --dec, or --ephemeris"),
    (["--ra", "abc", "--dec", "1"], "RA"),
])
def test_bad_input_exits_2_with_the_reason(state_dir, arguments, words, tmp_path,
                                           capsys) -> None:
    status = main(["timeseries", "--state-dir", str(state_dir), *arguments,
                   "--out", str(tmp_path)])
    assert status == 2 and words in capsys.readouterr().err


def test_nothing_to_cut_exits_1(state_dir, tmp_path, capsys) -> None:
    status = main(["timeseries", "--state-dir", str(state_dir), "--ra", "10", "--dec", "10",
                   "--out", str(tmp_path)])
    assert status == 1 and "no epoch" in capsys.readouterr().err
