"""Files of a job on disk: the uploads that came with its creation, and its results
(whole files, or byte ranges of one, such as the stamps inside a catalog job's bundle)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from vo_service.jobs.store import ResultFile


@dataclass(frozen=True)
class Upload:
    """A file that came with the creating request (DALI UPLOAD), saved in the job folder."""

    name: str
    filename: str | None
    path: Path


def _upload_folders(job_dir: Path) -> list[Path]:
    """The folders of saved uploads, in the order they were saved."""
    root = job_dir / "uploads"
    folders = [f for f in root.iterdir() if f.name.isdigit()] if root.is_dir() else []
    return sorted(folders, key=lambda folder: int(folder.name))


def save_uploads(job_dir: Path, uploads: Mapping[str, tuple[str | None, bytes]]
                 ) -> dict[str, Upload]:
    """Write each upload to ``<job>/uploads/<n>/`` with its part name and file name
    (numbered after any saved before)."""
    saved: dict[str, Upload] = {}
    existing = _upload_folders(job_dir)
    first = int(existing[-1].name) + 1 if existing else 0
    for number, (name, (filename, content)) in enumerate(uploads.items(), start=first):
        folder = job_dir / "uploads" / str(number)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "name").write_text(name)
        (folder / "filename").write_text(filename or "")
        path = folder / "content"
        path.write_bytes(content)
        saved[name] = Upload(name, filename, path)
    return saved


def load_uploads(job_dir: Path) -> dict[str, Upload]:
    """The uploads saved by :func:`save_uploads`, by part name (a later one of the same
    name wins)."""
    uploads: dict[str, Upload] = {}
    for folder in _upload_folders(job_dir):
        name = (folder / "name").read_text()
        uploads[name] = Upload(name, (folder / "filename").read_text() or None,
                               folder / "content")
    return uploads


def remove_uploads(uploads: Mapping[str, Upload]) -> None:
    """Delete saved uploads (their folders)."""
    for upload in uploads.values():
        shutil.rmtree(upload.path.parent, ignore_errors=True)


def remove_result_files(job_dir: Path) -> None:
    """Delete everything of a job but its uploads (before it runs again)."""
    for child in job_dir.iterdir() if job_dir.is_dir() else []:
        if child.name == "uploads":
            continue
        if child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def result_location(job_dir: Path, result: ResultFile) -> Path | None:
    """The file holding ``result`` (whole, or its byte range), or None if it is gone."""
    path = job_dir / result.file
    return path if path.is_file() else None


def read_result(path: Path, result: ResultFile) -> bytes:
    """The bytes of ``result`` held in ``path`` (:func:`result_location`)."""
    if result.offset is None:
        return path.read_bytes()
    return b"".join(iter_result(path, result))


def iter_result(path: Path, result: ResultFile, chunk_size: int = 256 * 1024
                ) -> Iterator[bytes]:
    """The bytes of a result held in a range of ``path``, in chunks (for streaming)."""
    with open(path, "rb") as handle:
        handle.seek(result.offset or 0)
        left = result.size
        while left > 0:
            chunk = handle.read(min(chunk_size, left))
            if not chunk:
                break
            left -= len(chunk)
            yield chunk
    if left:
        raise OSError(f"result {result.result_id} ends {left} bytes early in {path.name}")
