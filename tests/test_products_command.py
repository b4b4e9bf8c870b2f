"""``vo-service psf`` and ``vo-service catalog-rows`` on the archive index and on files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from vo_service.archive.index import run_index
from vo_service.cli import main
from vo_service.config import Settings

TILE = "102018212"


@pytest.fixture(scope="module")
def state_dir(demo_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    state = tmp_path_factory.mktemp("products-cli-state")
    assert run_index(Settings(data_roots=(demo_archive,), state_dir=state)).failed == []
    return state


def test_psf_from_the_index_and_from_a_file(state_dir, demo_archive, tmp_path, capsys) -> None:
    out = tmp_path / "psf"
    status = main(["psf", "--state-dir", str(state_dir), "--ra", "03:31:43.2",
                   "--dec=-28:05:24", "--band", "VIS", "--band", "NIR-H",
                   "--method", "interpolated", "--out", str(out)])
    assert status == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all("interpolated" in line for line in lines)
    written = sorted(out.glob("*_psf.fits"))
    assert [fits.getheader(p)["FILTER"] for p in written] == ["NIR-H", "VIS"]
    grid = demo_archive / "euclid" / f"TILE{TILE}" / f"EUC_MER_CATALOG-PSF-VIS_TILE{TILE}.fits"
    with fits.open(grid) as hdul:
        ra, dec = hdul["PSFCAT"].data["RA"][3], hdul["PSFCAT"].data["DEC"][3]
        x, y = hdul["PSFCAT"].data["x_center"][3], hdul["PSFCAT"].data["y_center"][3]
        side = hdul["PSFIMAGE"].header["STMPSIZE"]
        stamp = hdul["PSFIMAGE"].data[int(y) - side // 2:int(y) + side // 2 + 1,
                                      int(x) - side // 2:int(x) + side // 2 + 1]
    assert main(["psf", str(grid), "--ra", str(ra), "--dec", str(dec), "--out",
                 str(tmp_path / "one")]) == 0
    (path,) = (tmp_path / "one").glob("*.fits")
    assert np.array_equal(fits.getdata(path), stamp)
    assert main(["psf", "--state-dir", str(state_dir), "--ra", "10", "--dec", "10"]) == 1
    assert "no PSF product covers" in capsys.readouterr().err


def test_catalog_rows_from_the_index(state_dir, tmp_path, capsys) -> None:
    status = main(["catalog-rows", "--state-dir", str(state_dir), "--ra", "52.93",
                   "--dec=-28.09", "--size", "20", "--unit", "arcsec", "--columns",
                   "OBJECT_ID,MAG_VIS", "--out", str(tmp_path)])
    assert status == 0
    (path,) = tmp_path.glob("*_rows.fits")
    rows = fits.getdata(path, 1)
    assert rows.columns.names == ["OBJECT_ID", "MAG_VIS", "x_stamp", "y_stamp"]
    assert f"{len(rows)} rows" in capsys.readouterr().out
    # a 20" stamp on VIS (0.2"/pix) is 100 pixels wide: every row falls on it
    assert len(rows) and (rows["x_stamp"] > 0.5).all() and (rows["x_stamp"] < 100.5).all()
    assert main(["catalog-rows", "--state-dir", str(state_dir), "--ra", "52.93",
                 "--dec=-28.09", "--columns", "NOPE", "--out", str(tmp_path)]) == 2
    assert "no column(s) NOPE" in capsys.readouterr().err
