"""A unit's manifest rows are made and rendered by the worker that cut it: the same rows
and texts the job's own process would make, pickled back as their fields."""

from __future__ import annotations

import pickle
from pathlib import Path
from types import SimpleNamespace

from test_unit_contents import Memory, task_of, unit  # noqa: F401 - the fixture

from vo_service.cache import CutoutCache
from vo_service.engine.cutout import StampStatus
from vo_service.jobs.bundle_parts import cut_and_pack
from vo_service.jobs.unit_rows import manifest_row
from vo_service.products.manifest import ManifestRow, render_rows

JOB_URL = "http://example.org/async/4a0b"


def test_a_units_rows_and_texts_come_back_with_its_outcomes(unit, tmp_path: Path) -> None:  # noqa: F811
    image, targets = unit
    record = SimpleNamespace(path=image.path, hdu=0, obs_collection="Euclid",
                             instrument_name="VIS", band="VIS", product_type="BGSUB",
                             obs_publisher_did="ivo://example/VIS")
    bundle = tmp_path / "4a0b" / "bundle.zip"
    bundle.parent.mkdir()
    bundle.touch()
    packed = cut_and_pack(task_of(record, targets, "VIS"), CutoutCache(tmp_path / "c", 10**8),
                          Memory(), ("fits",), 10**6, bundle.parent, bundle, JOB_URL)
    assert packed.rows == [manifest_row(record, o, JOB_URL) for o in packed.outcomes]
    assert packed.texts == render_rows(packed.rows)
    with_stamp = [row for row in packed.rows if row.status is StampStatus.OK]
    assert with_stamp and all(row.access_url.startswith(f"{JOB_URL}/results/VIS_r")
                              for row in with_stamp)
    assert pickle.loads(pickle.dumps(packed)).rows == packed.rows
    without = cut_and_pack(task_of(record, targets, "VIS"), CutoutCache(tmp_path / "c", 10**8),
                           Memory(), ("fits",), 10**6, bundle.parent, bundle)
    assert without.rows is None and without.texts is None  # not asked for


def test_manifest_rows_pickle_as_their_fields() -> None:
    row = ManifestRow("t1", 3, 10.5, None, StampStatus.PARTIAL, "cut short",
                      pixel_box="[1:10,1:10]", bytes=2880, extra={"flux": 1.5})
    assert pickle.loads(pickle.dumps(row)) == row
    assert len(pickle.dumps(row)) < 200  # no field names in every row
