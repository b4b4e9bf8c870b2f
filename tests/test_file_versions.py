"""A job's manifest is parsed once per version of the file for the web page's views."""

from __future__ import annotations

import os
from pathlib import Path

from vo_service.products.file_versions import PerVersion


def test_a_value_is_made_once_per_file_version_and_the_oldest_goes(tmp_path: Path) -> None:
    made: list[str] = []

    def make(path: Path) -> str:
        made.append(path.name)
        return path.read_text()

    kept: PerVersion[str] = PerVersion(2)
    first, second, third = (tmp_path / name for name in ("a.xml", "b.xml", "c.xml"))
    for path in (first, second, third):
        path.write_text(path.stem)
    assert kept.get(first, make) == "a" and kept.get(first, make) == "a"
    assert made == ["a.xml"]  # once
    first.write_text("a, rewritten")  # a running job's manifest, written again
    stat = first.stat()
    os.utime(first, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert kept.get(first, make) == "a, rewritten"
    kept.get(second, make)
    kept.get(third, make)  # two kept: the first file's value goes
    kept.get(first, make)
    assert made == ["a.xml", "a.xml", "b.xml", "c.xml", "a.xml"]
