"""Where a catalog job's stamps lie in its bundle: one line per stamp, in a file beside it.

A catalog job's stamps are served at ``results/<stamp id>`` (the manifest's
``access_url``) but are not results of their own in the job store: the job document lists
the job's products. Each stamp's place in the bundle (file, offset, size) and its MIME
type are appended, a tab-separated line per stamp, to ``stamps.tsv`` in the job's
directory before the manifest that first lists the stamp is written. As job-store rows
(three B-trees each) 40,000 stamps took 0.3 s of the job's own process, a tenth of a
catalog run again; the lines take a few milliseconds. A request for a stamp reads the
file once per version of it (a running job's grows) and keeps what it read.

Jobs run by earlier versions have their stamps as unlisted job-store rows, which
:func:`find_result` still finds.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from vo_service.jobs.store import ResultFile
from vo_service.products.file_versions import PerVersion

STAMPS_FILE = "stamps.tsv"
# Where one stamp lies: (result id, file of the job, MIME type, size, offset in the file)
StampPlace = tuple[str, str, str, int, int]
# (file, MIME type, size, offset) by result id, of the most recently read versions
_Places = dict[str, tuple[str, str, int, int]]
_READ: PerVersion[_Places] = PerVersion(size=4)


class ResultRows(Protocol):
    """The job store's side of :func:`find_result`."""

    def result(self, job_id: str, result_id: str) -> ResultFile | None: ...

    def job_dir(self, job_id: str) -> Path: ...


class StampDirectory:
    """The stamps file of one run of a job, started empty (a job run again after a restart
    lists its stamps anew)."""

    def __init__(self, job_dir: Path) -> None:
        self.path = job_dir / STAMPS_FILE
        self.path.write_bytes(b"")

    def append(self, stamps: Sequence[StampPlace]) -> None:
        """List ``stamps`` (byte ranges of a file of the job) at the end of the file."""
        if not stamps:
            return
        with open(self.path, "a", encoding="utf-8") as out:
            out.write("".join("\t".join(map(str, place)) + "\n" for place in stamps))


def find_result(store: ResultRows, job_id: str, result_id: str) -> ResultFile | None:
    """A job's result by id, listed or not: a job-store row, or a catalog job's stamp."""
    result = store.result(job_id, result_id)
    if result is not None:
        return result
    try:
        place = _READ.get(store.job_dir(job_id) / STAMPS_FILE, _read_places).get(result_id)
    except FileNotFoundError:  # not a catalog job, or deleted
        return None
    if place is None:
        return None
    file, mime_type, size, offset = place
    return ResultFile(result_id, file, mime_type, size, listed=False, offset=offset)


def _read_places(path: Path) -> _Places:
    """The stamps listed in ``path``; a last line still being written is left out."""
    places: _Places = {}
    lines = path.read_text(encoding="utf-8").split("\n")
    for line in lines[:-1]:  # after the last newline: nothing, or a line being written
        result_id, file, mime_type, size, offset = line.split("\t")
        places[result_id] = (file, mime_type, int(size), int(offset))
    return places
