"""Results a job lists and results it only serves (a catalog job's stamps, reached from its
manifest), and the manifest a catalog job rewrites while it runs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from test_outcome_memo import V1_DUMP

from vo_service.engine.cutout import StampStatus
from vo_service.jobs import running_manifest
from vo_service.jobs.job_files import iter_result, read_result, result_location
from vo_service.jobs.running_manifest import MIN_INTERVAL_SECONDS, RunningManifest
from vo_service.jobs.stamp_directory import STAMPS_FILE, StampDirectory, find_result
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

    def put_result(self, result: ResultFile) -> None:
        self.published.append(result)


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


class StampRows:
    """The job store's side of ``find_result`` for one job whose folder is ``job_dir``:
    ``rows`` are its job-store results (stamps of a job run by an earlier version)."""

    def __init__(self, job_dir: Path, rows: tuple[ResultFile, ...] = ()) -> None:
        self._dir, self._rows = job_dir, {row.result_id: row for row in rows}

    def result(self, job_id: str, result_id: str) -> ResultFile | None:
        return self._rows.get(result_id)

    def job_dir(self, job_id: str) -> Path:
        return self._dir


def test_stamps_are_published_together_before_the_manifest_listing_them(
        tmp_path: Path, monkeypatch) -> None:
    """A unit's stamps wait for the next manifest write, then are listed in the job's
    stamps file before the manifest file that points at them: never a URL whose stamp is
    not found yet."""
    now = [100.0]
    manifest = RunningManifest(FakeContext(tmp_path), clock=lambda: now[0])
    done = rows(6)
    stamps = [(f"s{n}", "bundle.zip", "application/fits", 10, n * 10) for n in range(6)]
    found: list[list[str]] = []  # the stamps found as each manifest is written
    writing = running_manifest.write_rendered

    def write(*args, **kwargs):
        found.append([result_id for result_id, file, mime, size, offset in stamps
                      if find_result(StampRows(tmp_path), "j", result_id) == ResultFile(
                          result_id, file, mime, size, listed=False, offset=offset)])
        return writing(*args, **kwargs)

    monkeypatch.setattr(running_manifest, "write_rendered", write)
    manifest.add_stamps(stamps[:2])
    manifest.update(done[:2], {"job_id": "j"})  # the first write: at once
    for n in (2, 3, 4):  # three units, too soon for a write: kept
        manifest.add_stamps(stamps[n:n + 1])
        manifest.update(done[:n + 1], {"job_id": "j"})
    assert found == [["s0", "s1"]] and manifest.writes == 1
    now[0] += MIN_INTERVAL_SECONDS
    manifest.add_stamps(stamps[5:])
    manifest.update(done, {"job_id": "j"})
    manifest.finish(sorted(done, key=lambda r: r.row), {"job_id": "j"})
    every = [result_id for result_id, *_ in stamps]
    assert found == [["s0", "s1"], every, every] and manifest.writes == 3
    assert len((tmp_path / STAMPS_FILE).read_text().splitlines()) == 6  # each stamp once


def test_a_stamp_is_found_in_the_stamps_file_as_it_grows_or_in_an_older_jobs_rows(
        tmp_path: Path) -> None:
    """The stamps file is read again once it grows; a line still being written is not a
    stamp yet; a job of an earlier version finds its stamps as job-store rows; a deleted
    job finds nothing."""
    stamp = ResultFile("VIS_r000001_a__img", "bundle.zip", "image/png", 100, listed=False,
                       offset=53)
    directory = StampDirectory(tmp_path)
    rows_of_job = StampRows(tmp_path)
    assert find_result(rows_of_job, "j", stamp.result_id) is None
    directory.append([(stamp.result_id, stamp.file, stamp.mime_type, stamp.size,
                       stamp.offset)])
    assert find_result(rows_of_job, "j", stamp.result_id) == stamp
    with open(tmp_path / STAMPS_FILE, "a") as out:  # the next stamp, half written
        out.write("VIS_r000002_b__img\tbundle.zip\tapplication/fits\t20")
    assert find_result(rows_of_job, "j", "VIS_r000002_b__img") is None
    assert find_result(rows_of_job, "j", stamp.result_id) == stamp
    with open(tmp_path / STAMPS_FILE, "a") as out:
        out.write("0\t153\n")
    assert find_result(rows_of_job, "j", "VIS_r000002_b__img") == ResultFile(
        "VIS_r000002_b__img", "bundle.zip", "application/fits", 200, listed=False,
        offset=153)
    older = ResultFile("old_stamp", "bundle.zip", "application/fits", 7, listed=False,
                       offset=0)
    assert find_result(StampRows(tmp_path, (older,)), "j", "old_stamp") == older
    assert find_result(StampRows(tmp_path / "deleted"), "j", stamp.result_id) is None
    StampDirectory(tmp_path)  # the job runs again: its stamps are listed anew
    assert find_result(rows_of_job, "j", stamp.result_id) is None
