"""Results a job lists and results it only serves (a catalog job's stamps, reached from its
manifest), and the manifest a catalog job rewrites while it runs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from test_outcome_memo import V1_DUMP

from vo_service.engine.cutout import StampStatus
from vo_service.jobs.job_files import iter_result, read_result, result_location
from vo_service.jobs.running_manifest import MIN_INTERVAL_SECONDS, RunningManifest
from vo_service.jobs.store import JobStore, ResultFile
from vo_service.products.manifest import ManifestRow, manifest_bytes, read_manifest


def test_unlisted_results_are_served_and_counted_but_not_listed(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    with sqlite3.connect(jobs / "jobs.sqlite") as connection:  # a store made before
        connection.executescript(V1_DUMP.read_text())
        connection.execute("INSERT INTO results VALUES ('job1', 0, 'old', 'old.fits', "
                           "'application/fits', 10)")
    connection.close()
    store = JobStore(jobs)
    assert [r.result_id for r in store.results("job1")] == ["old"]  # listed as before
    store.add_results("job1", [  # stamps: byte ranges of the job's bundle
        ResultFile("VIS_r000001_a__img", "bundle.zip", "application/fits", 100,
                   listed=False, offset=53),
        ResultFile("VIS_r000002_b__img", "bundle.zip", "application/fits", 200,
                   listed=False, offset=206)])
    store.put_result("job1", ResultFile("manifest", "manifest.xml", "x/votable", 5))
    store.put_result("job1", ResultFile("manifest", "manifest.xml", "x/votable", 7))
    assert [(r.result_id, r.size) for r in store.results("job1")] == [("old", 10),
                                                                      ("manifest", 7)]
    stamp = store.result("job1", "VIS_r000002_b__img")
    assert stamp is not None and (stamp.file, stamp.offset, stamp.size) == ("bundle.zip", 206,
                                                                           200)
    assert not stamp.listed and store.result("job1", "old").offset is None
    assert store.owner_usage(None, []) == (0, 10 + 100 + 200 + 7)
    store.clear_results("job1")
    assert store.result("job1", "VIS_r000001_a__img") is None
    store.close()


def test_a_result_in_a_byte_range_reads_exactly_its_bytes(tmp_path: Path) -> None:
    """A stamp inside the bundle is its own bytes, not the rest of the ZIP; a bundle cut
    short is an error, never a short stamp."""
    (tmp_path / "bundle.zip").write_bytes(b"header" + b"stamp-bytes" + b"directory")
    stamp = ResultFile("s", "bundle.zip", "application/fits", 11, listed=False, offset=6)
    path = result_location(tmp_path, stamp)
    assert path == tmp_path / "bundle.zip"
    assert read_result(path, stamp) == b"stamp-bytes"
    assert b"".join(iter_result(path, stamp, chunk_size=4)) == b"stamp-bytes"
    whole = ResultFile("manifest", "bundle.zip", "application/zip", 26)
    assert read_result(path, whole) == b"headerstamp-bytesdirectory"
    (tmp_path / "bundle.zip").write_bytes(b"header" + b"stamp")
    with pytest.raises(OSError, match="6 bytes early"):
        read_result(path, stamp)
    with pytest.raises(OSError, match="6 bytes early"):
        b"".join(iter_result(path, stamp))
    assert result_location(tmp_path, ResultFile("x", "gone.zip", "a/b", 1)) is None


class FakeContext:
    """What a RunningManifest needs of a job: its folder and a place to publish."""

    def __init__(self, job_dir: Path) -> None:
        self.job_dir = job_dir
        self.published: list[ResultFile] = []
        self.added: list[list[ResultFile]] = []  # one list per job-store transaction

    def put_result(self, result: ResultFile) -> None:
        self.published.append(result)

    def add_results(self, results: list[ResultFile]) -> None:
        self.added.append(list(results))


def rows(count: int) -> list[ManifestRow]:
    return [ManifestRow(f"t{n}", count - n, 1.0, 2.0, StampStatus.OK,
                        access_url=f"http://x/results/s{n}") for n in range(count)]


def test_the_manifest_is_written_at_once_then_now_and_then_then_whole(tmp_path: Path) -> None:
    now = [100.0]
    context = FakeContext(tmp_path)
    manifest = RunningManifest(context, clock=lambda: now[0])
    done = rows(6)  # the job's list of rows grows at its end
    manifest.update([], {"job_id": "j"})  # nothing done yet: nothing written
    assert manifest.writes == 0
    manifest.update(done[:3], {"job_id": "j"})  # the first rows: at once
    written = read_manifest(manifest.path)
    assert [r.row for r in written] == [4, 5, 6]  # in catalog order
    now[0] += MIN_INTERVAL_SECONDS / 2
    manifest.update(done[:5], {"job_id": "j"})  # too soon after the last write
    assert manifest.writes == 1 and len(read_manifest(manifest.path)) == 3
    now[0] += MIN_INTERVAL_SECONDS
    manifest.update(done[:5], {"job_id": "j"})
    assert manifest.writes == 2 and [r.row for r in read_manifest(manifest.path)] == [
        2, 3, 4, 5, 6]
    text = manifest.path.read_text()
    assert 'name="incomplete"' in text and "still running" in text
    done.sort(key=lambda r: r.row)
    manifest.finish(done, {"job_id": "j", "stamps": "6"})  # the same bytes as in one go
    assert manifest.path.read_bytes() == manifest_bytes(done, infos={"job_id": "j",
                                                                      "stamps": "6"})
    assert "still running" not in manifest.path.read_text()
    assert {r.result_id for r in context.published} == {"manifest"}
    assert context.published[-1].size == manifest.path.stat().st_size


def test_rows_rendered_as_units_finish_are_not_rendered_again(tmp_path: Path,
                                                              monkeypatch) -> None:
    """A job renders each unit's rows as the unit finishes (while the workers still cut);
    the writes, the final one included, render only what was not rendered yet, and the
    manifest is the same bytes as written in one go."""
    from vo_service.jobs import running_manifest

    rendered: list[int] = []
    render = running_manifest.render_rows
    monkeypatch.setattr(running_manifest, "render_rows",
                        lambda some: rendered.append(len(some)) or render(some))
    manifest = RunningManifest(FakeContext(tmp_path))
    done = rows(6)
    manifest.render(done[:4])
    manifest.update(done[:4], {"job_id": "j"})
    manifest.render(done[4:])
    done.sort(key=lambda r: r.row)
    manifest.finish(done, {"job_id": "j", "stamps": "6"})
    assert sum(rendered) == 6 and manifest.writes == 2
    assert manifest.path.read_bytes() == manifest_bytes(done, infos={"job_id": "j",
                                                                      "stamps": "6"})


def test_a_slow_rewrite_waits_in_proportion(tmp_path: Path, monkeypatch) -> None:
    """A rewrite that took t seconds is followed by one no sooner than t / COST_SHARE."""
    from vo_service.jobs import running_manifest

    now = [0.0]

    def clock() -> float:
        return now[0]

    manifest = RunningManifest(FakeContext(tmp_path), clock=clock)
    writing = running_manifest.write_rendered

    def slow_write(*args, **kwargs):  # each write takes 2 s of the clock
        now[0] += 2.0
        return writing(*args, **kwargs)

    monkeypatch.setattr(running_manifest, "write_rendered", slow_write)
    manifest.update(rows(2), {})
    assert manifest.writes == 1
    now[0] += 2.0 / running_manifest.COST_SHARE - 1
    manifest.update(rows(2), {})
    assert manifest.writes == 1  # not yet
    now[0] += 1
    manifest.update(rows(2), {})
    assert manifest.writes == 2


def test_a_store_another_process_just_upgraded_opens(tmp_path: Path, monkeypatch) -> None:
    """Processes started together on a store of the previous version (``serve --workers``)
    each see the ``listed`` column missing; the one that adds it second must still open."""
    import sqlite_utils

    JobStore(tmp_path / "jobs").close()  # the column is there now
    monkeypatch.setattr(sqlite_utils.db.Table, "columns_dict",
                        property(lambda table: {"job_id": str}))  # as seen a moment ago
    store = JobStore(tmp_path / "jobs")
    store.add_results("j", [ResultFile("a", "a.fits", "application/fits", 1, listed=False)])
    assert store.results("j") == [] and store.result("j", "a") is not None
    store.close()


def test_stamps_results_are_published_together_before_the_manifest_listing_them(
        tmp_path: Path) -> None:
    """A unit's stamp results wait for the next manifest write, then go into the store in
    one transaction before the manifest file that points at them: never a row whose
    stamp is not there yet, and not one commit per unit."""
    now = [100.0]
    context = FakeContext(tmp_path)
    manifest = RunningManifest(context, clock=lambda: now[0])
    done = rows(6)
    stamps = [ResultFile(f"s{n}", "bundle.zip", "application/fits", 10, listed=False,
                         offset=n * 10) for n in range(6)]
    manifest.add_results(stamps[:2])
    manifest.update(done[:2], {"job_id": "j"})  # the first write: at once
    assert context.added == [stamps[:2]] and manifest.writes == 1
    for n in (2, 3, 4):  # three units, too soon for a write: kept
        manifest.add_results(stamps[n:n + 1])
        manifest.update(done[:n + 1], {"job_id": "j"})
    assert context.added == [stamps[:2]] and manifest.writes == 1
    now[0] += MIN_INTERVAL_SECONDS
    manifest.add_results(stamps[5:])
    manifest.update(done, {"job_id": "j"})
    assert context.added == [stamps[:2], stamps[2:]] and manifest.writes == 2
    manifest.finish(sorted(done, key=lambda r: r.row), {"job_id": "j"})
    assert len(context.added) == 2  # nothing left to publish
