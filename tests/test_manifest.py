"""The manifest writer: ManifestRow records in, the VOTable astropy would write out."""

from __future__ import annotations

import dataclasses
import io
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from server import assert_valid_votable

from vo_service.engine.cutout import StampStatus
from vo_service.products.manifest import (
    ManifestRow,
    format_pixel_box,
    manifest_bytes,
    write_manifest,
)
from vo_service.votables import VOTABLE_VERSION, load_template

REPO = Path(__file__).resolve().parents[1]


def varied_rows() -> list[ManifestRow]:
    """Rows of every kind, with text that needs escaping and values astropy writes alike."""
    url = "http://127.0.0.1:8000/async/j1/results/"
    return [
        ManifestRow("bad0", 1, None, None, StampStatus.ERROR, "RA is not a number"),
        ManifestRow("Ω Cen & <friends>", 2, 52.91, -28.1, StampStatus.PARTIAL, "clipped",
                    collection="Euclid Q1", instrument="VIS", band="VIS", product_type="BGSUB",
                    image_id="ivo://example/euclid?t1&x=<1>", access_url=url + "VIS_r2.fits",
                    content_type="application/fits", preview_url=url + "VIS_r2.png",
                    file="VIS/r000002_Cen__t1.fits",
                    pixel_box=format_pixel_box(((0, 64), (9, 73))), bytes=20160),
        ManifestRow("far", 3, 10.0, -0.30000000000000004, StampStatus.NO_OVERLAP,
                    "the position is inside no image matching the selection"),
        ManifestRow("", 4, 1e-7, 90.0, StampStatus.OK, None, band="NIR-Y", product_type="FLAG",
                    bytes=0),
        ManifestRow("nan", 5, math.nan, -0.0, StampStatus.OK, "", band="NIR-H", bytes=2**40),
    ]


def astropy_manifest(rows: list[ManifestRow], infos: dict[str, str]) -> bytes:
    """The same manifest written cell by cell by astropy's own (Python) TABLEDATA writer."""
    votable = load_template("manifest.xml")
    resource = votable.resources[0]
    from astropy.io.votable.tree import Info
    for name, value in infos.items():
        resource.infos.append(Info(name=name, value=value))
    table = resource.tables[0]
    table.create_arrays(len(rows))
    table._nrows = None
    for field in table.fields:
        values = [getattr(row, field.name) for row in rows]
        missing = [v is None or (isinstance(v, float) and math.isnan(v)) for v in values]
        if field.datatype in ("char", "unicodeChar"):
            column = np.array(["" if v is None else str(v) for v in values], dtype=object)
        else:
            column = np.array([0 if m else v for v, m in zip(values, missing, strict=True)])
        table.array[field.name] = column
        table.array.mask[field.name] = missing
    votable.version = VOTABLE_VERSION
    buffer = io.BytesIO()
    votable.to_xml(buffer, tabledata_format="tabledata", _debug_python_based_parser=True)
    return buffer.getvalue()


def test_record_attributes_are_the_manifest_fields() -> None:
    fields = [f.name for f in load_template("manifest.xml").get_first_table().fields]
    # `extra` holds the optional columns a job adds (photometry), not a template FIELD
    assert sorted(f.name for f in dataclasses.fields(ManifestRow) if f.name != "extra") == sorted(
        fields)


@pytest.mark.parametrize("rows_per_block", [4096, 2])
def test_manifest_is_byte_identical_to_astropys_writer_and_valid(rows_per_block, monkeypatch
                                                                 ) -> None:
    monkeypatch.setattr("vo_service.products.manifest.ROWS_PER_BLOCK", rows_per_block)
    rows = varied_rows()
    infos = {"job_id": "j1", "targets": "5", "incomplete": "stopped & <early>"}
    written = manifest_bytes(rows, infos=infos)
    assert written == astropy_manifest(rows, infos)
    table = assert_valid_votable(written).get_first_table().to_table()
    assert [str(s) for s in table["status"]] == [str(r.status) for r in rows]
    assert str(table["target_id"][1]) == "Ω Cen & <friends>"
    assert table["ra"].mask.tolist() == [True, False, False, False, True]
    assert table["bytes"][4] == 2**40 and str(table["pixel_box"][1]) == "[1:64,10:73]"


def test_manifest_files_are_the_same_bytes_and_may_have_no_rows(tmp_path: Path) -> None:
    size = write_manifest(tmp_path / "manifest.xml", [], infos={"job_id": "j0"})
    content = (tmp_path / "manifest.xml").read_bytes()
    assert size == len(content) and content == astropy_manifest([], {"job_id": "j0"})
    assert len(assert_valid_votable(content).get_first_table().array) == 0
    rows = varied_rows()
    size = write_manifest(tmp_path / "manifest.xml", rows)
    assert (tmp_path / "manifest.xml").read_bytes() == manifest_bytes(rows)
    assert size == (tmp_path / "manifest.xml").stat().st_size
    assert not (tmp_path / "manifest.xml.part").exists()


@pytest.mark.parametrize("count", [1, 3000])
def test_rows_of_every_length_are_written_without_memory_errors(count: int) -> None:
    """Rows whose XML grows past 256, 512 and 1024 bytes one byte at a time: astropy's C
    TABLEDATA writer writes one byte past its buffer on a row of exactly 2**n bytes (which
    crashes the process later). Python's debug allocator (-X dev) catches such writes."""
    script = f"""
import sys
from vo_service.engine.cutout import StampStatus
from vo_service.products.manifest import ManifestRow, manifest_bytes
rows = [ManifestRow("t" + "x" * (n % 900), n + 1, 1.0, 2.0, StampStatus.OK)
        for n in range({count})]
sys.stdout.buffer.write(manifest_bytes(rows))
"""
    done = subprocess.run([sys.executable, "-X", "dev", "-c", script], cwd=REPO,
                          capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    table = assert_valid_votable(done.stdout).get_first_table().to_table()
    assert len(table) == count and len(str(table["target_id"][-1])) == 1 + (count - 1) % 900
