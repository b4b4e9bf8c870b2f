"""Packed cache entries: a batch of stamps in one pack file, verified by CRC-32, evicted whole."""

from __future__ import annotations

import errno
import os
import sqlite3
import zlib
from pathlib import Path

import pytest
from test_cache import in_three_processes

from vo_service.cache import KEEP_CONTENT_BYTES, CutoutCache, PackedEntryError, make_key
from vo_service.cache.check import check_cache


def key_of(name: str) -> str:
    return make_key({"test": name})


def stamp(name: str, size: int = 1000) -> bytes:
    """Distinct bytes per name (a repeated pattern would hide an offset error)."""
    pattern = name.encode() + bytes(range(256))
    return (pattern * (size // len(pattern) + 1))[:size]


def batch(prefix: str, count: int, size: int = 1000) -> list[tuple[str, bytes]]:
    return [(key_of(f"{prefix}{i}"), stamp(f"{prefix}{i}", size)) for i in range(count)]


def pack_files(cache: CutoutCache) -> list[Path]:
    return sorted(p for p in cache.packs_dir.iterdir() if p.is_file())


def disk_bytes(cache: CutoutCache) -> int:
    """Bytes of every file under objects/ and packs/."""
    return sum(p.stat().st_size for folder in (cache.objects_dir, cache.packs_dir)
               for p in folder.rglob("*") if p.is_file())


def row_sums(cache: CutoutCache) -> tuple[int, int]:
    total, count = cache._db().execute(
        "SELECT COALESCE(SUM(size), 0), COUNT(*) FROM entries").fetchone()
    return total, count


def flip_byte(path: Path, position: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(position)
        byte = handle.read(1)
        handle.seek(position)
        handle.write(bytes([byte[0] ^ 0xFF]))


@pytest.fixture
def cache(tmp_path: Path) -> CutoutCache:
    return CutoutCache(tmp_path / "cache", max_bytes=10**7)


def test_a_pack_round_trips_every_entry_with_its_crc(cache: CutoutCache) -> None:
    items = batch("a", 5) + [(key_of("empty"), b"")]
    cache.put_pack(items)
    assert len(pack_files(cache)) == 1 and not list(cache.objects_dir.rglob("*"))
    opened = cache.open_many([key for key, _ in items])
    for key, content in items:
        cached = opened[key]
        assert cached is not None and cached.packed and cached.path == pack_files(cache)[0]
        assert cached.content == content and cached.size == len(content)
        assert cached.crc32 == zlib.crc32(content)
        assert cached.handle.read() == content
        with open(cached.path, "rb") as whole:  # offset says where in the pack it is
            whole.seek(cached.offset)
            assert whole.read(cached.size) == content
        assert b"".join(cached.iter_chunks(64)) == content
    stats = cache.stats()
    assert (stats.entries, stats.total_bytes) == (6, sum(len(c) for _, c in items))
    assert disk_bytes(cache) == stats.total_bytes


def test_own_file_entries_have_no_crc_and_are_not_packed(cache: CutoutCache) -> None:
    cache.put(key_of("own"), b"own bytes")
    cached = cache.open(key_of("own"))
    assert cached is not None and not cached.packed and cached.crc32 is None
    assert cached.offset == 0 and cached.path == cache.path_for(key_of("own"))
    cached.close()


def test_a_large_packed_entry_reads_exactly_its_range(cache: CutoutCache) -> None:
    large = stamp("large", KEEP_CONTENT_BYTES + 12345)
    items = [(key_of("before"), stamp("before", 777)), (key_of("large"), large),
             (key_of("after"), stamp("after", 999))]
    cache.put_pack(items)
    opened = cache.open_many([key_of("large"), key_of("after")])
    cached = opened[key_of("large")]
    assert cached is not None and cached.content is None and cached.offset == 777
    assert cached.crc32 == zlib.crc32(large)
    assert b"".join(cached.iter_chunks(100_000)) == large
    assert opened[key_of("after")].content == stamp("after", 999)  # its mate, same descriptor
    again = cache.open(key_of("large"))
    assert again.handle.read() == large and again.handle.read() == b""
    again.close()


def test_a_large_packed_entry_stays_readable_after_its_pack_is_evicted(tmp_path: Path) -> None:
    cache = CutoutCache(tmp_path / "c", max_bytes=3 * KEEP_CONTENT_BYTES)
    large = stamp("large", KEEP_CONTENT_BYTES + 1)
    cache.put_pack([(key_of("large"), large)])
    cached = cache.open(key_of("large"))
    cache.put_pack([(key_of("new"), stamp("new", 2 * KEEP_CONTENT_BYTES))])  # evicts it
    assert key_of("large") not in cache and len(pack_files(cache)) == 1
    assert b"".join(cached.iter_chunks()) == large


def test_a_flipped_byte_drops_that_entry_and_keeps_its_pack_mates(cache: CutoutCache) -> None:
    items = batch("f", 4)
    cache.put_pack(items)
    flip_byte(pack_files(cache)[0], 2 * 1000 + 500)  # inside the third entry
    opened = cache.open_many([key for key, _ in items])
    assert opened[items[2][0]] is None
    assert items[2][0] not in cache  # dropped: it will be recomputed
    for key, content in items[:2] + items[3:]:
        assert opened[key].content == content
    assert cache.stats().entries == 3 and len(pack_files(cache)) == 1
    assert cache.open(items[2][0]) is None


def test_a_truncated_pack_drops_its_entries(cache: CutoutCache) -> None:
    items = batch("t", 4)
    cache.put_pack(items)
    cache.put_pack(batch("other", 2))
    [short] = [p for p in pack_files(cache) if p.stat().st_size == 4000]
    os.truncate(short, 3500)
    opened = cache.open_many([items[0][0], items[3][0]])
    assert opened == {items[0][0]: None, items[3][0]: None}
    assert all(key not in cache for key, _ in items)  # the whole pack is forgotten
    assert not short.exists() and len(pack_files(cache)) == 1
    assert cache.stats().total_bytes == 2000 == disk_bytes(cache)
    assert all(cache.open(key) is not None for key, _ in batch("other", 2))


def test_a_missing_pack_is_a_miss_for_each_of_its_entries(cache: CutoutCache) -> None:
    items = batch("m", 3)
    cache.put_pack(items)
    pack_files(cache)[0].unlink()
    assert cache.open_many([key for key, _ in items]) == {key: None for key, _ in items}
    assert cache.stats().entries == 0 and cache.stats().total_bytes == 0


def test_eviction_removes_whole_packs_least_recently_used_first_and_keeps_totals_exact(
        tmp_path: Path) -> None:
    """A pack goes whole, and as recent as the last hit on any of its entries: a stamp of
    it read now keeps its pack-mates too."""
    cache = CutoutCache(tmp_path / "c", max_bytes=10_000)
    first, second, third = batch("p", 4), batch("q", 4), batch("r", 4)
    cache.put_pack(first)
    cache.put_pack(second)
    assert cache.open(first[1][0]) is not None  # one entry used now: its whole pack is
    cache.put(key_of("own"), stamp("own", 500))
    cache.put_pack(third)  # 12,500 bytes: the least recently used pack is the second
    assert all(key not in cache for key, _ in second)  # the whole second pack went
    assert all(key in cache for key, _ in first + third) and key_of("own") in cache
    assert len(pack_files(cache)) == 2
    stats = cache.stats()
    assert (stats.total_bytes, stats.entries) == row_sums(cache) == (8500, 9)
    assert disk_bytes(cache) == stats.total_bytes
    cache.put_pack(batch("s", 4))  # next oldest: the first pack (used before "own"), whole
    assert all(key not in cache for key, _ in first) and key_of("own") in cache
    assert cache.stats().total_bytes == row_sums(cache)[0] == disk_bytes(cache) <= 10_000


def test_a_hit_on_a_pack_marks_one_of_its_entries_used(cache: CutoutCache) -> None:
    """Reading every stamp of a pack rewrites one index row, not one per stamp (a warm
    catalog job read 43,000 and spent 27 µs on each)."""
    items = batch("h", 5)
    cache.put_pack(items)
    before = dict(cache._db().execute("SELECT key, used_seq FROM entries").fetchall())
    opened = cache.open_many([key for key, _ in items])
    assert all(entry is not None for entry in opened.values())
    after = dict(cache._db().execute("SELECT key, used_seq FROM entries").fetchall())
    assert sum(after[key] != before[key] for key in before) == 1
    assert max(after.values()) > max(before.values())  # the pack is the most recent now


def test_eviction_never_takes_a_pack_holding_a_kept_key(tmp_path: Path) -> None:
    cache = CutoutCache(tmp_path / "c", max_bytes=100_000)
    first, second = batch("k", 3), batch("l", 3)
    cache.put_pack(first)
    cache.put_pack(second)
    cache.max_bytes = 3000
    evicted = cache.evict(keep=[first[2][0]])  # the oldest pack holds a kept key
    assert sorted(evicted) == sorted(key for key, _ in second)
    assert all(key in cache for key, _ in first)
    cache.max_bytes = 1000  # nothing can go but the kept pack: it stays, over budget
    assert cache.evict(keep=first[0][0]) == []
    assert cache.stats().total_bytes == 3000 == disk_bytes(cache)


def test_put_pack_keeps_its_own_entries_even_over_budget(tmp_path: Path) -> None:
    cache = CutoutCache(tmp_path / "c", max_bytes=2000)
    cache.put(key_of("old"), b"o" * 500)
    items = batch("big", 5)
    cache.put_pack(items)
    assert all(cache.open(key) is not None for key, _ in items)
    assert key_of("old") not in cache


def test_a_later_pack_replaces_a_key_and_the_emptied_pack_goes(cache: CutoutCache) -> None:
    cache.put_pack([(key_of("x"), b"old x"), (key_of("y"), b"old y")])
    [first] = pack_files(cache)
    cache.put_pack([(key_of("x"), b"new x, longer")])
    assert cache.open(key_of("x")).content == b"new x, longer"
    assert cache.open(key_of("y")).content == b"old y"
    assert first.exists()  # y still lives there
    cache.put_pack([(key_of("y"), b"new y")])
    assert not first.exists()  # no entry refers to it any more
    assert cache.stats().total_bytes == len(b"new x, longer") + len(b"new y")
    assert (cache.stats().total_bytes, cache.stats().entries) == row_sums(cache)


def test_own_files_and_packs_replace_each_other(cache: CutoutCache) -> None:
    own = cache.put(key_of("z"), b"own z")
    cache.put_pack([(key_of("z"), b"packed z")])
    assert not own.exists()  # the old own file is not left behind
    assert cache.open(key_of("z")).content == b"packed z"
    cache.put(key_of("z"), b"own again")
    assert cache.get(key_of("z")) == own and own.read_bytes() == b"own again"
    assert pack_files(cache) == []  # its only entry moved out
    assert cache.stats().total_bytes == len(b"own again") == disk_bytes(cache)


def test_get_refuses_a_packed_entry_clearly(cache: CutoutCache) -> None:
    cache.put_pack([(key_of("g"), b"packed")])
    with pytest.raises(PackedEntryError, match="pack"):
        cache.get(key_of("g"))
    with pytest.raises(PackedEntryError):
        cache.get_or_compute(key_of("g"), lambda: b"other")
    cached, hit = cache.open_or_compute(key_of("g"), lambda: b"other")
    assert hit and cached.content == b"packed"


def test_sweep_removes_orphan_packs_and_temp_files_but_not_live_or_fresh_ones(
        cache: CutoutCache) -> None:
    cache.put_pack(batch("live", 2))
    [live] = pack_files(cache)
    orphan = cache.packs_dir / ("ab" * 16 + ".pack")
    orphan.write_bytes(b"left by a crash before the index insert")
    half = cache.packs_dir / ".half.part"
    half.write_bytes(b"half")
    fresh = cache.packs_dir / ("cd" * 16 + ".pack")
    fresh.write_bytes(b"being recorded by another process")
    for old in (orphan, half, live):
        os.utime(old, (1, 1))
    assert cache.sweep() == 2
    assert live.exists() and fresh.exists() and not orphan.exists() and not half.exists()
    assert all(cache.open(key) is not None for key, _ in batch("live", 2))


def test_sweep_removes_an_own_file_left_behind_by_a_packed_key(cache: CutoutCache) -> None:
    leftover = cache.put(key_of("w"), b"own")
    cache.put_pack([(key_of("w"), b"packed")])
    leftover.write_bytes(b"own")  # as if its unlink had not happened (a crash)
    os.utime(leftover, (1, 1))
    assert cache.sweep() == 1 and not leftover.exists()
    assert cache.open(key_of("w")).content == b"packed"


def test_clear_removes_packs(cache: CutoutCache) -> None:
    cache.put_pack(batch("c", 3))
    cache.put(key_of("own"), b"own")
    cache.clear()
    assert pack_files(cache) == [] and cache.stats().entries == 0
    cache.put_pack(batch("c", 1))
    assert cache.open(batch("c", 1)[0][0]) is not None


def test_put_pack_on_a_full_disk_leaves_nothing(tmp_path: Path) -> None:
    import shutil

    directory = tmp_path / "c"
    directory.mkdir()
    free = shutil.disk_usage(directory).free
    cache = CutoutCache(directory, max_bytes=10**9, min_free_bytes=free + 10**9)
    with pytest.raises(OSError) as raised:
        cache.put_pack(batch("n", 2))
    assert raised.value.errno == errno.ENOSPC
    assert pack_files(cache) == [] and cache.stats().entries == 0


def test_check_verifies_packed_entries_and_repairs_them(tmp_path: Path) -> None:
    cache = CutoutCache(tmp_path / "c", max_bytes=10**6)
    good, damaged, lost = batch("g", 3), batch("d", 3), batch("l", 2)
    for items in (good, damaged, lost):
        cache.put_pack(items)
    cache.put(key_of("own"), b"own" * 100)
    assert check_cache(cache).consistent
    packs = {p.stat().st_mtime_ns: p for p in pack_files(cache)}
    by_age = [packs[t] for t in sorted(packs)]
    flip_byte(by_age[1], 1500)  # the second entry of the 'd' pack
    by_age[2].unlink()
    stray = cache.packs_dir / ("ef" * 16 + ".pack")
    stray.write_bytes(b"orphan")
    report = check_cache(cache)
    assert sorted(report.dropped) == sorted([damaged[1][0]] + [key for key, _ in lost])
    assert report.verified == 3 + 2 + 1 and report.strays_removed == 1
    assert not stray.exists()
    assert check_cache(cache).consistent
    assert cache.stats().total_bytes == row_sums(cache)[0] == 3000 + 2000 + 300


def test_an_index_made_before_packs_opens_and_works(tmp_path: Path) -> None:
    directory = tmp_path / "old"
    (directory / "objects").mkdir(parents=True)
    key = key_of("old")
    content = b"a stamp stored by an older release"
    (directory / "objects" / key[:2]).mkdir()
    (directory / "objects" / key[:2] / key).write_bytes(content)
    import hashlib

    db = sqlite3.connect(directory / "index.sqlite")
    db.executescript("""
        CREATE TABLE [entries] (
           [key] TEXT PRIMARY KEY, [size] INTEGER, [sha256] TEXT, [created_at] FLOAT,
           [used_at] FLOAT, [used_seq] INTEGER, [hits] INTEGER);
        CREATE INDEX [idx_entries_used_seq] ON [entries] ([used_seq]);
        CREATE TABLE totals (id INTEGER PRIMARY KEY CHECK (id = 1),
           bytes INTEGER NOT NULL, entries INTEGER NOT NULL);
    """)
    db.execute("INSERT INTO entries VALUES (?, ?, ?, 1.0, 1.0, 1, 0)",
               [key, len(content), hashlib.sha256(content).hexdigest()])
    db.execute("INSERT INTO totals VALUES (1, ?, 1)", [len(content)])
    db.commit()
    db.close()
    cache = CutoutCache(directory, max_bytes=10**6)
    assert cache.open(key).content == content
    cache.put_pack(batch("new", 3))
    assert all(cache.open(k).content == c for k, c in batch("new", 3))
    assert (cache.stats().total_bytes, cache.stats().entries) == (len(content) + 3000, 4)
    assert (cache.stats().total_bytes, cache.stats().entries) == row_sums(cache)
    assert check_cache(cache).consistent
    reopened = CutoutCache(directory, max_bytes=10**6)  # the columns are added once
    assert reopened.open(key).content == content


def _pack_worker(directory: str, worker: int) -> int:
    cache = CutoutCache(Path(directory), max_bytes=60_000, sweep=False)
    for round_ in range(40):
        # overlapping keys across workers: replacements race with evictions and reads
        items = [(key_of(f"s{(worker * 5 + round_ * 3 + i) % 40}"),
                  stamp(f"w{worker}r{round_}i{i}", 1000 + 37 * i)) for i in range(6)]
        cache.put_pack(items)
        opened = cache.open_many([key for key, _ in items])
        for cached in opened.values():
            if cached is not None:
                assert zlib.crc32(cached.content) == cached.crc32
                cached.close()
        if round_ % 4 == 0:
            cache.put(key_of(f"own{worker}-{round_}"), stamp(f"own{worker}", 800))
    return worker


def test_processes_putting_packs_concurrently_leave_a_consistent_index(tmp_path: Path) -> None:
    cache = in_three_processes(_pack_worker, tmp_path / "shared", 60_000)
    stats = cache.stats()
    assert (stats.total_bytes, stats.entries) == row_sums(cache)
    assert 0 < stats.total_bytes <= 60_000
    assert {p.name for p in pack_files(cache)} == cache.index.packs()  # no orphan, none lost
    assert disk_bytes(cache) >= stats.total_bytes  # replaced entries leave dead bytes
    report = check_cache(cache)
    assert report.consistent and report.verified == stats.entries


def test_publishing_a_packed_entry_copies_its_bytes_not_the_pack(cache: CutoutCache,
                                                                 tmp_path: Path) -> None:
    """A job publishing a cached stamp hard-links an own file, but a packed entry shares
    its file with its pack-mates: the job gets a copy of exactly the entry's bytes."""
    from vo_service.jobs.stamps import publish_cached

    items = batch("pub", 3)
    cache.put_pack(items)
    cache.put(key_of("own"), stamp("own"))
    target = tmp_path / "job" / "second.fits"
    assert publish_cached(cache.open(items[1][0]), target) == len(items[1][1])
    assert target.read_bytes() == items[1][1] and os.stat(target).st_nlink == 1
    linked = tmp_path / "job" / "own.fits"
    publish_cached(cache.open(key_of("own")), linked)
    assert linked.read_bytes() == stamp("own") and os.stat(linked).st_nlink == 2


def test_a_crc_the_caller_knows_is_recorded_and_a_wrong_one_is_a_miss(
        cache: CutoutCache) -> None:
    """A batch job computes each new stamp's CRC-32 once, for its ZIP member and the cache:
    put_pack records it as given; one that does not match the bytes makes that entry a miss
    (dropped when read), never wrong bytes served."""
    items = batch("c", 3)
    (good, good_bytes), (wrong, _), (computed, computed_bytes) = items
    cache.put_pack(items, {good: zlib.crc32(good_bytes), wrong: 12345})
    opened = cache.open_many([good, wrong, computed])
    assert opened[good].content == good_bytes
    assert opened[good].crc32 == zlib.crc32(good_bytes)
    assert opened[computed].content == computed_bytes  # no CRC given: computed here
    assert opened[wrong] is None and wrong not in cache
    for entry in opened.values():
        if entry is not None:
            entry.close()
