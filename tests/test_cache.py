"""The cutout cache: hits, misses, damaged files, LRU eviction, threads, processes, restarts."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from vo_service.cache import CutoutCache, make_key, source_identity


def key_of(name: str) -> str:
    return make_key({"test": name})


class Counter:
    """A compute function that records how often it ran."""

    def __init__(self, content: bytes) -> None:
        self.content = content
        self.calls = 0

    def __call__(self) -> bytes:
        self.calls += 1
        return self.content


@pytest.fixture
def cache(tmp_path: Path) -> CutoutCache:
    return CutoutCache(tmp_path / "cache", max_bytes=10_000)


def test_miss_then_hit_computes_once(cache: CutoutCache) -> None:
    compute = Counter(b"stamp-bytes")
    path, hit = cache.get_or_compute(key_of("a"), compute)
    assert not hit and path.read_bytes() == b"stamp-bytes"
    path2, hit2 = cache.get_or_compute(key_of("a"), compute)
    assert hit2 and path2 == path and compute.calls == 1
    assert cache.get(key_of("a")) == path
    assert cache.get(key_of("never-stored")) is None


def test_open_or_compute_returns_readable_file(cache: CutoutCache) -> None:
    cached, hit = cache.open_or_compute(key_of("b"), lambda: b"x" * 1000)
    assert not hit and b"".join(cached.iter_chunks(64)) == b"x" * 1000
    cached, hit = cache.open_or_compute(key_of("b"), lambda: b"other")
    assert hit and cached.size == 1000 and b"".join(cached.iter_chunks()) == b"x" * 1000


def test_keys_are_canonical() -> None:
    assert make_key({"a": 1, "b": [1, 2]}) == make_key({"b": [1, 2], "a": 1})
    assert make_key({"a": 1}) != make_key({"a": 2})


def test_changed_source_file_gets_a_new_key(tmp_path: Path) -> None:
    source = tmp_path / "image.fits"
    source.write_bytes(b"old pixels")
    old = make_key({"source": source_identity(source, 0), "box": [0, 10, 0, 10]})
    source.write_bytes(b"new pixels, longer")
    os.utime(source, ns=(1, 2_000_000_000))
    new = make_key({"source": source_identity(source, 0), "box": [0, 10, 0, 10]})
    assert old != new
    assert make_key({"source": source_identity(source, 1), "box": [0, 10, 0, 10]}) != new


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "append"])
def test_damaged_or_missing_file_is_recomputed_not_served(cache: CutoutCache, damage: str) -> None:
    good = bytes(range(256)) * 4
    compute = Counter(good)
    path, _ = cache.get_or_compute(key_of("d"), compute)
    if damage == "truncate":
        with open(path, "r+b") as handle:
            handle.truncate(100)
    elif damage == "flip":
        with open(path, "r+b") as handle:
            handle.seek(500)
            byte = handle.read(1)
            handle.seek(500)
            handle.write(bytes([byte[0] ^ 0xFF]))
    elif damage == "append":
        with open(path, "ab") as handle:
            handle.write(b"junk")
    else:
        path.unlink()
    assert cache.get(key_of("d")) is None  # never served
    assert key_of("d") not in cache
    path2, hit = cache.get_or_compute(key_of("d"), compute)
    assert not hit and compute.calls == 2 and path2.read_bytes() == good
    assert cache.get(key_of("d")) == path2


def test_lru_eviction_order_under_a_small_budget(tmp_path: Path) -> None:
    cache = CutoutCache(tmp_path / "c", max_bytes=3000)
    for name in "abc":
        cache.put(key_of(name), name.encode() * 1000)
    assert cache.stats().total_bytes == 3000
    assert cache.get(key_of("a")) is not None  # a is now the most recently used
    cache.put(key_of("d"), b"d" * 1000)  # over budget: b goes first
    assert cache.get(key_of("b")) is None
    assert not cache.path_for(key_of("b")).exists()
    assert all(cache.get(key_of(n)) is not None for n in "acd")
    cache.put(key_of("e"), b"e" * 2000)  # needs two slots: the two least recent (c, a)
    assert cache.get(key_of("c")) is None and cache.get(key_of("a")) is None
    assert cache.get(key_of("d")) is not None and cache.get(key_of("e")) is not None
    assert cache.stats().total_bytes <= 3000


def test_an_entry_larger_than_the_budget_is_kept_alone(tmp_path: Path) -> None:
    cache = CutoutCache(tmp_path / "c", max_bytes=100)
    cache.put(key_of("small"), b"s" * 50)
    cache.put(key_of("big"), b"b" * 500)
    assert cache.get(key_of("big")) is not None and cache.get(key_of("small")) is None


def test_put_from_a_file_and_atomic_leftovers(cache: CutoutCache, tmp_path: Path) -> None:
    source = tmp_path / "stamp.fits"
    source.write_bytes(b"F" * 2880)
    path = cache.put(key_of("file"), source)
    assert path.read_bytes() == source.read_bytes() and source.exists()
    assert not list(cache.objects_dir.rglob("*.part"))


def test_concurrent_puts_and_gets_from_threads(tmp_path: Path) -> None:
    cache = CutoutCache(tmp_path / "c", max_bytes=10**9)
    counters = {i: Counter(f"content-{i}".encode() * 100) for i in range(20)}

    def work(i: int) -> tuple[bytes, bool]:
        path, hit = cache.get_or_compute(key_of(str(i % 20)), counters[i % 20])
        return path.read_bytes(), hit

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(work, range(200)))
    for i, (content, _) in enumerate(results):
        assert content == f"content-{i % 20}".encode() * 100
    assert all(c.calls == 1 for c in counters.values())  # one computation per key
    assert cache.stats().entries == 20


def _process_worker(directory: str, worker: int) -> int:
    cache = CutoutCache(Path(directory), max_bytes=20_000)
    for i in range(30):
        name = f"{(worker * 7 + i) % 40}"
        path, _ = cache.get_or_compute(key_of(name), lambda n=name: n.encode() * 1000)
        cache.get(key_of(name))
    return worker


def in_three_processes(worker, directory: Path, max_bytes: int) -> CutoutCache:  # noqa: ANN001
    """Run ``worker(directory, number)`` in three processes at once on a new cache of
    ``max_bytes`` there; the cache as they left it."""
    CutoutCache(directory, max_bytes=max_bytes)
    context = multiprocessing.get_context("spawn")
    with context.Pool(3) as pool:
        assert sorted(pool.starmap(worker, [(str(directory), w) for w in range(3)])) \
            == [0, 1, 2]
    return CutoutCache(directory, max_bytes=max_bytes)


def test_several_processes_share_one_cache(tmp_path: Path) -> None:
    cache = in_three_processes(_process_worker, tmp_path / "shared", 20_000)
    stats = cache.stats()
    assert 0 < stats.total_bytes <= 20_000
    for key in cache.keys_by_recency():  # every recorded entry is intact
        assert cache.get(key) is not None


def test_a_key_put_again_while_it_is_evicted_keeps_its_file(tmp_path: Path,
                                                            monkeypatch) -> None:
    """A put of a key that another writer is evicting at that moment: the evicting writer
    deletes the key's file inside the index write that forgets it, so the put (its rename
    and its record) comes wholly before or wholly after, never between; a file deleted
    after its new record made the key recorded without a file."""
    import threading

    from vo_service.cache.index import CacheIndex

    evicting = CutoutCache(tmp_path / "c", max_bytes=3000)
    putting = CutoutCache(tmp_path / "c", max_bytes=10**6)  # another writer, same folder
    key = key_of("old")
    evicting.put(key, b"o" * 2000)
    evict_over = CacheIndex.evict_over
    racers: list[threading.Thread] = []

    def evict_then_put_again(index, *args, **kwargs):  # noqa: ANN001, ANN202
        victims = evict_over(index, *args, **kwargs)
        if key in victims.keys and not racers:  # the other writer puts the key again now
            racers.append(threading.Thread(target=putting.put, args=(key, b"o" * 2000)))
            racers[0].start()
            racers[0].join(1.0)  # it waits while this write is open
        return victims

    monkeypatch.setattr(CacheIndex, "evict_over", evict_then_put_again)
    evicting.put(key_of("new"), b"n" * 2000)  # over budget: evicts the old key
    racers[0].join(10)
    monkeypatch.undo()
    assert key in putting  # the second put came last
    for cached in (putting.get(key), evicting.get(key_of("new"))):
        assert cached is not None and cached.exists()


def test_a_restart_keeps_entries_and_their_order(tmp_path: Path) -> None:
    first = CutoutCache(tmp_path / "c", max_bytes=3000)
    for name in "abc":
        first.put(key_of(name), name.encode() * 1000)
    first.get(key_of("a"))
    first.close()
    second = CutoutCache(tmp_path / "c", max_bytes=3000)
    assert second.get(key_of("b")) is not None  # b now most recent, c least
    second.put(key_of("d"), b"d" * 1000)
    assert second.get(key_of("c")) is None
    assert {second.get(key_of(n)) is not None for n in "abd"} == {True}


def test_compute_failure_stores_nothing(cache: CutoutCache) -> None:
    def fail() -> bytes:
        raise RuntimeError("engine failed")

    with pytest.raises(RuntimeError):
        cache.get_or_compute(key_of("f"), fail)
    assert key_of("f") not in cache
    assert not list(cache.objects_dir.rglob("*.part"))


def test_sweep_removes_stray_files_but_not_entries_or_fresh_writes(cache: CutoutCache) -> None:
    kept = cache.put(key_of("kept"), b"entry")
    stray = cache.path_for(key_of("stray"))
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"orphan")
    half = stray.parent / ".abc-123.part"
    half.write_bytes(b"half")
    fresh = stray.parent / ".fresh.part"
    fresh.write_bytes(b"in flight")
    for old in (stray, half, kept):
        os.utime(old, (1, 1))
    assert cache.sweep() == 2
    assert kept.exists() and fresh.exists() and not stray.exists() and not half.exists()
    assert cache.get(key_of("kept")) == kept


def test_running_totals_follow_puts_replacements_drops_and_evictions(tmp_path: Path) -> None:
    cache = CutoutCache(tmp_path / "c", max_bytes=5000)
    for name in "abcdefg":
        cache.put(key_of(name), name.encode() * 900)
    cache.put(key_of("g"), b"g" * 100)  # the same key again, smaller
    cache.get(key_of("zzz"))
    path = cache.path_for(key_of("g"))
    path.unlink()
    assert cache.get(key_of("g")) is None  # dropped
    total, count = cache._db().execute(
        "SELECT COALESCE(SUM(size), 0), COUNT(*) FROM entries").fetchone()
    assert (cache.stats().total_bytes, cache.stats().entries) == (total, count)
    assert total <= 5000


def test_a_cache_made_before_the_totals_table_gets_it(tmp_path: Path) -> None:
    cache = CutoutCache(tmp_path / "c", max_bytes=10_000)
    cache.put(key_of("a"), b"a" * 700)
    with cache._write() as db:
        for trigger in ("entries_added", "entries_removed", "entries_resized"):
            db.execute(f"DROP TRIGGER {trigger}")
        db.execute("DROP TABLE totals")
    cache.close()
    reopened = CutoutCache(tmp_path / "c", max_bytes=10_000)
    assert reopened.stats().total_bytes == 700 and reopened.stats().entries == 1
    reopened.put(key_of("b"), b"b" * 300)
    assert reopened.stats().total_bytes == 1000


def test_check_repairs_missing_damaged_stray_files_and_totals(tmp_path: Path) -> None:
    from vo_service.cache.check import check_cache

    cache = CutoutCache(tmp_path / "c", max_bytes=10**6)
    for name in "abcd":
        cache.put(key_of(name), name.encode() * 500)
    assert check_cache(cache).consistent
    cache.path_for(key_of("a")).unlink()
    with open(cache.path_for(key_of("b")), "r+b") as handle:
        handle.truncate(10)
    stray = cache.path_for(key_of("stray"))
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"orphan")
    (cache.path_for(key_of("c")).parent / ".half.part").write_bytes(b"half")
    with cache._write() as db:
        db.execute("UPDATE totals SET bytes = 1")
    report = check_cache(cache)
    assert sorted(report.dropped) == sorted([key_of("a"), key_of("b")])
    assert report.strays_removed == 2 and report.totals_fixed and report.verified == 2
    assert check_cache(cache).consistent
    assert cache.stats().total_bytes == 1000 and not stray.exists()
