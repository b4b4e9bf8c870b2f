"""A unit of a catalog job met again is answered from its table of contents in the cache:
the same outcomes and bytes as target by target, in one lookup and one read."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
import zlib
from pathlib import Path
from types import SimpleNamespace

import pytest
from astropy.wcs import WCS

from tests import fits_factory
from vo_service.cache import CutoutCache, pack_layout, read_pack_ranges, source_identity
from vo_service.engine.bundle import ZipAppender, member_data_offsets
from vo_service.engine.cutout import StampStatus
from vo_service.jobs import batch_cut
from vo_service.jobs.batch_cut import StampKeys, StampTask, Target, cut_task
from vo_service.jobs.outcome_memo import RememberedOutcome
from vo_service.jobs.store import JobStore
from vo_service.jobs.unit_contents import (
    UnitContents,
    UnitEntry,
    contents_bytes,
    read_contents,
)

FORMATS = ("fits", "png")


class Members(dict):
    """A stamp sink: member name -> bytes (a CRC given must be the bytes' own)."""

    def add(self, name: str, chunks, crc: int | None = None) -> None:
        self[name] = b"".join(bytes(chunk) for chunk in chunks)
        assert crc is None or crc == zlib.crc32(self[name])


class Memory:
    """Remembered outcomes, counting the lookups."""

    def __init__(self) -> None:
        self.saved: dict = {}
        self.lookups = 0

    def stamp_outcomes(self, keys: list[str]) -> dict:
        self.lookups += 1
        return {key: self.saved[key] for key in keys if key in self.saved}

    def save_stamp_outcomes(self, outcomes: dict) -> None:
        self.saved.update(outcomes)


@pytest.fixture
def unit(tmp_path: Path):
    """A unit of six targets on one image: inside, at an edge (partial), off the image, and
    one position twice (two catalog rows)."""
    path = fits_factory.sip_image(tmp_path / "image.fits")
    wcs = WCS(str(path))
    positions = [(50, 50), (120, 80), (2, 60), (400, 400), (150, 120), (50, 50)]
    targets = []
    for row, (x, y) in enumerate(positions):
        sky = wcs.pixel_to_world(x, y)
        targets.append(Target(row, f"t{row}", float(sky.ra.deg), float(sky.dec.deg), 24.0,
                              "pix"))
    record = SimpleNamespace(path=path, hdu=0)
    return record, targets


def task_of(record, targets: list[Target], job: str) -> StampTask:
    return StampTask(record, [(target, f"{job}/r{target.row}") for target in targets])


def summary(outcomes, members: Members) -> list[tuple]:
    """What a job shows of each outcome, in catalog order, without the job's own names."""
    return [(o.target, o.status, o.message, o.ranges,
             {fmt: (size, members[name]) for fmt, (name, size) in o.files.items()})
            for o in sorted(outcomes, key=lambda o: o.target.row)]


def test_a_unit_met_again_is_read_whole_from_its_table_of_contents(unit, tmp_path,
                                                                      monkeypatch) -> None:
    record, targets = unit
    cache, memory = CutoutCache(tmp_path / "cache", 10**8), Memory()
    first_members = Members()
    first = cut_task(task_of(record, targets, "a"), cache, memory, FORMATS, 10**6,
                     first_members)
    statuses = [o.status for o in first]
    assert StampStatus.OK in statuses and StampStatus.PARTIAL in statuses
    assert StampStatus.NO_OVERLAP in statuses and memory.lookups == 1

    opened: list[list[str]] = []
    open_many = cache.open_many
    monkeypatch.setattr(cache, "open_many", lambda keys: opened.append(keys) or open_many(keys))
    second_members = Members()
    second = cut_task(task_of(record, targets, "b"), cache, memory, FORMATS, 10**6,
                      second_members)
    assert summary(second, second_members) == summary(first, first_members)
    assert all(o.from_cache for o in second)
    assert all(name.startswith("b/") for name in second_members)  # this job's names
    assert memory.lookups == 1 and len(opened) == 1 and len(opened[0]) == 1  # one lookup
    assert second[0].files["fits"][1] == second[5].files["fits"][1]  # one position twice


def test_a_damaged_stamp_sends_the_unit_target_by_target(unit, tmp_path) -> None:
    record, targets = unit
    cache, memory = CutoutCache(tmp_path / "cache", 10**8), Memory()
    first_members = Members()
    first = cut_task(task_of(record, targets, "a"), cache, memory, FORMATS, 10**6,
                     first_members)
    [pack] = list(cache.packs_dir.glob("*.pack"))  # the unit's stamps and its table
    damaged = bytearray(pack.read_bytes())
    damaged[100] ^= 0xFF  # inside the first stamp
    pack.write_bytes(bytes(damaged))
    second_members = Members()
    second = cut_task(task_of(record, targets, "b"), cache, memory, FORMATS, 10**6,
                      second_members)
    assert memory.lookups == 2  # target by target
    assert summary(second, second_members) == summary(first, first_members)  # cut again
    assert not all(o.from_cache for o in second)


def test_a_unit_whose_stamps_span_packs_has_no_table(unit, tmp_path, monkeypatch) -> None:
    record, targets = unit
    monkeypatch.setattr(batch_cut._PendingStamps, "MAX_BYTES", 1)  # a pack per stamp
    cache, memory = CutoutCache(tmp_path / "cache", 10**8), Memory()
    first_members = Members()
    first = cut_task(task_of(record, targets, "a"), cache, memory, FORMATS, 10**6,
                     first_members)
    second_members = Members()
    second = cut_task(task_of(record, targets, "b"), cache, memory, FORMATS, 10**6,
                      second_members)
    assert memory.lookups == 2  # no table: target by target, all from the cache
    assert summary(second, second_members) == summary(first, first_members)
    assert all(o.from_cache for o in second)


def test_the_table_key_names_all_that_makes_the_units_bytes(unit) -> None:
    record, targets = unit
    keys = StampKeys({"path": "/a.fits", "size": 1, "mtime_ns": 2, "hdu": 0}, FORMATS)
    key = keys.unit(targets, 10**6)
    assert key == StampKeys({"path": "/a.fits", "size": 1, "mtime_ns": 2, "hdu": 0},
                            FORMATS).unit(list(targets), 10**6)
    bigger = [Target(t.row, t.target_id, t.ra, t.dec, t.size + 1, t.unit) for t in targets]
    others = {
        keys.unit(targets[::-1], 10**6),  # another order
        keys.unit(targets[:-1], 10**6),  # another set
        keys.unit(bigger, 10**6),  # another size
        keys.unit(targets, 10**5),  # another pixel limit
        StampKeys({"path": "/a.fits", "size": 1, "mtime_ns": 2, "hdu": 0},
                  ("fits",)).unit(targets, 10**6),  # other formats
        StampKeys({"path": "/a.fits", "size": 1, "mtime_ns": 3, "hdu": 0},
                  FORMATS).unit(targets, 10**6),  # the image changed on disk
    }
    assert key not in others and len(others) == 6


def test_a_table_reads_back_and_refuses_what_it_did_not_write() -> None:
    entries = [UnitEntry(StampStatus.OK, "", ((0, 24), (5, 29)),
                         (("fits", 0, 8640, 123), ("png", 8640, 900, 456))),
               UnitEntry(StampStatus.NO_OVERLAP, "outside", None)]
    stored = contents_bytes(entries)
    assert read_contents(stored, 2) == UnitContents(None, entries)  # in the table's pack
    assert read_contents(contents_bytes(entries, "ab12.pack"), 2) == UnitContents(
        "ab12.pack", entries)  # in a job's bundle, linked
    assert read_contents(stored, 3) is None  # another unit's table
    assert read_contents(b"not json", 2) is None
    assert read_contents(b'[["ok", "", null, [["fits", 0]]]]', 1) is None  # version 1
    assert read_contents(b'{"pack": 7, "entries": []}', 0) is None


def test_pack_ranges_are_read_in_one_piece_and_checked(tmp_path) -> None:
    items = [("a", b"A" * 10), ("b", b"BB" * 7), ("a", b"a" * 12), ("c", b"C")]
    layout = pack_layout(items)
    assert list(layout) == ["a", "b", "c"]  # a key given twice: its last bytes, first place
    assert [offset for offset, _ in layout.values()] == [0, 12, 26]
    cache = CutoutCache(tmp_path / "cache", 10**6)
    cache.put_pack(items)
    [pack] = list(cache.packs_dir.glob("*.pack"))
    assert pack.read_bytes() == b"a" * 12 + b"BB" * 7 + b"C"
    ranges = [(offset, len(data), zlib.crc32(data)) for offset, data in layout.values()]
    pieces = read_pack_ranges(pack, ranges[1:])
    assert {offset: bytes(piece) for offset, piece in pieces.items()} == {
        12: b"BB" * 7, 26: b"C"}
    assert read_pack_ranges(pack, [(12, 14, 0)]) is None  # a wrong CRC
    assert read_pack_ranges(pack, [(20, 50, 0)]) is None  # past the end
    assert read_pack_ranges(tmp_path / "gone.pack", ranges) is None


def test_ranges_far_apart_are_read_apart(tmp_path, monkeypatch) -> None:
    """A unit's stamps in a job's bundle lie between other units': those are skipped."""
    pack = tmp_path / "bundle.pack"
    pack.write_bytes(b"a" * 10 + b"x" * 200_000 + b"b" * 10)
    read: list[int] = []
    pread = os.pread
    monkeypatch.setattr(os, "pread", lambda fd, n, at: read.append(n) or pread(fd, n, at))
    ranges = [(0, 10, zlib.crc32(b"a" * 10)), (200_010, 10, zlib.crc32(b"b" * 10))]
    pieces = read_pack_ranges(pack, ranges)
    assert {offset: bytes(piece) for offset, piece in pieces.items()} == {
        0: b"a" * 10, 200_010: b"b" * 10}
    assert read == [10, 10]


def cut_into_bundle(record, targets, job: str, cache, memory, bundle: Path) -> tuple:
    """Cut a unit as a job's worker does: appending to the bundle, caching the new stamps
    where they lie in it; (outcomes, each stamp's bytes by member name)."""
    bundle.touch()
    appender = ZipAppender(bundle)
    outcomes = cut_task(task_of(record, targets, job), cache, memory, FORMATS, 10**6,
                        appender, bundle)
    entries = appender.close()
    members = Members()
    with open(bundle, "rb") as handle:
        for name, offset in member_data_offsets(entries).items():
            size = next(size for encoded, _, size, _ in entries if encoded.decode() == name)
            handle.seek(offset)
            members[name] = handle.read(size)
    return outcomes, members


def count_transactions(cache: CutoutCache) -> list[bool]:
    """A list that gets a True for each write transaction of ``cache``'s index."""
    started: list[bool] = []
    depth = [0]
    write = cache.index.write

    @contextlib.contextmanager
    def counted():  # noqa: ANN202
        if depth[0] == 0:
            started.append(True)
        depth[0] += 1
        try:
            with write() as db:
                yield db
        finally:
            depth[0] -= 1

    cache.index.write = counted
    return started


def test_new_stamps_are_cached_where_they_lie_in_the_jobs_bundle(unit, tmp_path) -> None:
    """No second copy: the bundle is linked into the cache (it outlives the job), and the
    unit met again reads its stamps from there, the same bytes."""
    record, targets = unit
    cache, memory = CutoutCache(tmp_path / "cache", 10**8), Memory()
    bundle = tmp_path / "4a0b" / "bundle.zip"  # in the folder of job 4a0b
    bundle.parent.mkdir()
    transactions = count_transactions(cache)
    first, first_members = cut_into_bundle(record, targets, "a", cache, memory, bundle)
    assert transactions == [True]  # the stamps and the table recorded at once
    linked = [pack for pack in cache.packs_dir.glob("*.pack")
              if pack.stat().st_ino == bundle.stat().st_ino]
    assert len(linked) == 1 and bundle.stat().st_nlink == 2
    assert cache.linked_groups() == {"4a0b"}
    stamp_bytes = sum(size for o in first for _, size in o.files.values())
    assert cache.stats().total_bytes < stamp_bytes + 10_000  # the stamps once, and the table
    second_members = Members()
    second = cut_task(task_of(record, targets, "b"), cache, memory, FORMATS, 10**6,
                      second_members)
    assert all(o.from_cache for o in second) and memory.lookups == 1  # from the table
    assert summary(second, second_members) == summary(first, first_members)

    # the job is deleted: the cache lets its bundle go, and the unit is cut again
    assert cache.forget_linked("4a0b") == 1
    bundle.unlink()
    assert not linked[0].exists() and cache.linked_groups() == set()
    assert cache.stats().total_bytes < 10_000  # the table alone
    third_members = Members()
    third = cut_task(task_of(record, targets, "c"), cache, memory, FORMATS, 10**6,
                     third_members)
    assert summary(third, third_members) == summary(first, first_members)
    assert not any(o.from_cache and o.files for o in third)


def test_a_cache_on_another_file_system_gets_copies(unit, tmp_path, monkeypatch) -> None:
    record, targets = unit
    cache, memory = CutoutCache(tmp_path / "cache", 10**8), Memory()

    def cross_device(source, target) -> None:  # noqa: ANN001
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)
    bundle = tmp_path / "5b1c" / "bundle.zip"
    bundle.parent.mkdir()
    first, first_members = cut_into_bundle(record, targets, "a", cache, memory, bundle)
    [pack] = list(cache.packs_dir.glob("*.pack"))  # copies and the table, one pack
    assert pack.stat().st_ino != bundle.stat().st_ino
    bundle.unlink()
    second_members = Members()
    second = cut_task(task_of(record, targets, "b"), cache, memory, FORMATS, 10**6,
                      second_members)
    assert all(o.from_cache for o in second) and memory.lookups == 1
    assert summary(second, second_members) == summary(first, first_members)


def test_stamps_outcomes_remembered_by_an_earlier_version_still_answer(unit, tmp_path
                                                                       ) -> None:
    """A cache and job store of an earlier version: stamps' entries without their outcome,
    which the job store remembers, with JSON pixel boxes. A unit not met whole before is
    answered from them, target by target, without cutting; new stamps keep their outcome
    and leave the job store alone."""
    record, targets = unit
    cache, store = CutoutCache(tmp_path / "cache", 10**8), JobStore(tmp_path / "jobs")
    first_members = Members()
    first = cut_task(task_of(record, targets, "a"), cache, store, FORMATS, 10**6,
                     first_members)
    keyer = StampKeys(source_identity(record.path, 0), FORMATS)
    with_stamps = {keyer.of(o.target)["outcome"]: o for o in first if o.files}
    assert with_stamps and not store.stamp_outcomes(list(with_stamps))  # kept in the cache

    # back to the earlier version's state
    with contextlib.closing(sqlite3.connect(cache.index_path)) as index, index:
        index.execute("UPDATE entries SET meta = NULL")
    store.save_stamp_outcomes({key: RememberedOutcome(o.status, o.message, o.ranges, True)
                               for key, o in with_stamps.items()})
    with contextlib.closing(sqlite3.connect(tmp_path / "jobs" / "jobs.sqlite")) as jobs, jobs:
        jobs.executemany("UPDATE stamp_outcomes SET ranges = ? WHERE key = ?", [
            (json.dumps([list(pair) for pair in o.ranges]), key)
            for key, o in with_stamps.items()])

    second_members = Members()
    second = cut_task(task_of(record, targets[1:], "b"), cache, store, FORMATS, 10**6,
                      second_members)  # not the unit met whole: target by target
    assert all(o.from_cache for o in second)
    assert summary(second, second_members) == summary(first, first_members)[1:]


def test_the_keys_of_one_image_begin_alike(unit, tmp_path) -> None:
    """An image's keys share their first digits, so that a unit's rows lie side by side
    in the cache index; another image's begin otherwise. Each is still a whole digest."""
    record, targets = unit
    keyer = StampKeys(source_identity(record.path, 0), FORMATS)
    keys = [key for target in targets for key in keyer.of(target).values()]
    keys.append(keyer.unit(targets, 10**6))
    assert len(set(keys)) == 3 * 5 + 1  # outcome, fits, png of 5 positions (one twice)
    assert {key[:batch_cut.IMAGE_DIGITS] for key in keys} == {keys[0][:batch_cut.IMAGE_DIGITS]}
    assert all(len(key) == 64 and int(key, 16) >= 0 for key in keys)
    other = fits_factory.sip_image(tmp_path / "other.fits", crval=(10.0, 10.0))
    other_keys = StampKeys(source_identity(other, 0), FORMATS).of(targets[0]).values()
    assert all(key[:batch_cut.IMAGE_DIGITS] != keys[0][:batch_cut.IMAGE_DIGITS]
               for key in other_keys)
