"""The outcome memo of catalog jobs: typed records, the pixel-box encoding, and a job store
written by the previous version (JSON pixel boxes) opening and answering as before."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from vo_service.engine.cutout import StampStatus
from vo_service.jobs.outcome_memo import (
    RememberedOutcome,
    decode_ranges,
    encode_ranges,
    outcome_of_stamp,
    stamp_meta,
)
from vo_service.jobs.phases import Phase
from vo_service.jobs.store import JobStore

V1_DUMP = Path(__file__).parent / "data" / "jobs_store_v1.sql"


@pytest.mark.parametrize("ranges", [
    ((100, 164), (200, 264)),  # an image stamp
    ((0, 12), (5, 30), (2, 3)),  # a cube: one channel
    ((-3, 7), (0, 1), (0, 4), (1, 2)),  # padded past the edge; four axes
    ((0, 2**40), (7, 8)),  # large files
])
def test_pixel_boxes_survive_encoding(ranges) -> None:
    text = encode_ranges(ranges)
    assert "[" not in text and text.count(",") == len(ranges) - 1
    assert decode_ranges(text) == ranges
    assert all(type(v) is int for axis in decode_ranges(text) for v in axis)


def test_no_box_is_no_text_and_json_boxes_of_version_1_still_read() -> None:
    assert encode_ranges(None) is None and encode_ranges(()) is None
    assert decode_ranges(None) is None and decode_ranges("") is None
    assert decode_ranges("[[100, 164], [200, 264]]") == ((100, 164), (200, 264))
    assert encode_ranges(decode_ranges("[[0, 12], [5, 30], [2, 3]]")) == "0:12,5:30,2:3"


def test_outcomes_round_trip_through_the_store(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs")
    outcomes = {
        "a": RememberedOutcome(StampStatus.OK, "", ((3, 67), (9, 73)), True),
        "b": RememberedOutcome(StampStatus.PARTIAL, "no PNG preview: empty", ((0, 5), (0, 64)),
                               True),
        "c": RememberedOutcome(StampStatus.NO_OVERLAP, "the region does not overlap the image"),
        "d": RememberedOutcome(StampStatus.ERROR, "the cutout has 9 pixels, more than 4"),
    }
    store.save_stamp_outcomes(outcomes)
    store.save_stamp_outcomes({"a": RememberedOutcome(StampStatus.OK, "", ((4, 68), (9, 73)),
                                                      True)})  # replaced, not added
    store.close()
    reopened = JobStore(tmp_path / "jobs")
    found = reopened.stamp_outcomes(["a", "b", "c", "d", "unknown"])
    assert found == {**outcomes, "a": RememberedOutcome(StampStatus.OK, "", ((4, 68), (9, 73)),
                                                        True)}
    assert all(type(o.status) is StampStatus for o in found.values())
    with pytest.raises(AttributeError):
        found["a"].status = StampStatus.ERROR  # records are frozen


def _v1_state(jobs_dir: Path) -> None:
    jobs_dir.mkdir(parents=True)
    with sqlite3.connect(jobs_dir / "jobs.sqlite") as connection:
        connection.executescript(V1_DUMP.read_text())
    connection.close()


def test_a_job_store_of_the_previous_version_opens_with_its_outcomes(tmp_path: Path) -> None:
    _v1_state(tmp_path / "jobs")
    store = JobStore(tmp_path / "jobs")
    assert store.get("job1").phase is Phase.COMPLETED
    found = store.stamp_outcomes(["k-ok", "k-cube", "k-miss", "k-big"])
    assert found == {
        "k-ok": RememberedOutcome(StampStatus.OK, "", ((100, 164), (200, 264)), True),
        "k-cube": RememberedOutcome(StampStatus.PARTIAL, "", ((0, 12), (5, 30), (2, 3)), True),
        "k-miss": RememberedOutcome(StampStatus.NO_OVERLAP,
                                    "the region does not overlap the image"),
        "k-big": RememberedOutcome(StampStatus.ERROR, "the cutout has 10 pixels, more than the "
                                   "limit of 4; ask for a smaller region"),
    }
    store.save_stamp_outcomes({"k-new": RememberedOutcome(StampStatus.OK, "", ((1, 2), (3, 4)),
                                                          True)})
    assert store.stamp_outcomes(["k-new", "k-ok"])["k-ok"] == found["k-ok"]
    assert store.stamp_outcomes(["k-new"])["k-new"].ranges == ((1, 2), (3, 4))


def test_a_stamps_outcome_is_kept_with_it_as_text() -> None:
    """The outcome a stamp's cache entry keeps reads back whole; text it did not write
    (or none: an entry of an earlier version) reads as nothing known."""
    kept = RememberedOutcome(StampStatus.PARTIAL, "stitched from <a> | b,\tc",
                             ((0, 12), (5, 30)), True)
    assert outcome_of_stamp(stamp_meta(kept)) == kept
    assert outcome_of_stamp(stamp_meta(RememberedOutcome(StampStatus.OK, has_stamp=True))) \
        == RememberedOutcome(StampStatus.OK, "", None, True)
    for text in (None, "", "ok", "ok|0:12", "nonsense||", "ok|0-12|", "ok|a:b|", "ok|[1]|"):
        assert outcome_of_stamp(text) is None
