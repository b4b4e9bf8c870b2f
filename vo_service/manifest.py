"""What a catalog batch job hands back: the manifest VOTable and the ZIP bundle.

The manifest's FIELDs are defined in ``votable_templates/manifest.xml``; rows are filled
with astropy. The bundle is written member by member into a file on disk as stamps are
made (never built in memory), one folder per band.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from astropy.io.votable.tree import Field, Info

from vo_service.engine.bundle import ZipStream
from vo_service.protocols.dali import load_template, votable_bytes

MANIFEST_MIME = "application/x-votable+xml"
ZIP_MIME = "application/zip"


def format_pixel_box(ranges: Sequence[tuple[int, int]] | None) -> str | None:
    """0-based half-open ranges as a FITS section ``[x1:x2,y1:y2]`` (1-based, inclusive)."""
    if not ranges:
        return None
    return "[" + ",".join(f"{start + 1}:{stop}" for start, stop in ranges) + "]"


ExtraField = tuple[str, str, str, str, str]  # name, datatype, unit, ucd, description


def manifest_bytes(rows: Sequence[Mapping[str, object]], *,
                   infos: Mapping[str, str] = {},  # noqa: B006 - never mutated
                   extra_fields: Sequence[ExtraField] = ()) -> bytes:
    """The manifest VOTable 1.4 with ``rows`` (dicts by FIELD name) and INFOs after status;
    ``extra_fields`` are FIELDs after the template's (e.g. photometry columns)."""
    votable = load_template("manifest.xml")
    resource = votable.resources[0]
    for name, value in infos.items():
        resource.infos.append(Info(name=name, value=str(value)))
    table = resource.tables[0]
    for name, datatype, unit, ucd, description in extra_fields:
        extra = Field(votable, name=name, datatype=datatype, ucd=ucd or None,
                      unit=unit or None, arraysize="*" if datatype == "char" else None)
        extra.description = description
        table.fields.append(extra)
    _fill_columns(table, rows)
    return votable_bytes(votable)


def _fill_columns(table, rows: Sequence[Mapping[str, object]]) -> None:
    """Fill the TABLE column by column (a manifest has tens of thousands of rows)."""
    table.create_arrays(len(rows))
    table._nrows = None  # the template's parsed nrows=0 would be written out otherwise
    for field in table.fields:
        values = [row.get(field.name) for row in rows]
        missing = np.array([v is None or (isinstance(v, float) and math.isnan(v))
                            for v in values], dtype=bool)
        if field.datatype in ("char", "unicodeChar"):
            column = np.array(["" if v is None else str(v) for v in values], dtype=object)
        else:
            column = np.array([0 if m else v for v, m in zip(values, missing, strict=True)])
        if len(rows):
            table.array[field.name] = column
        table.array.mask[field.name] = missing


def write_manifest(path: Path, rows: Sequence[Mapping[str, object]], *,
                   infos: Mapping[str, str] = {},  # noqa: B006 - never mutated
                   extra_fields: Sequence[ExtraField] = ()) -> int:
    """Write the manifest atomically; return its size in bytes."""
    content = manifest_bytes(rows, infos=infos, extra_fields=extra_fields)
    temporary = path.with_name(path.name + ".part")
    temporary.write_bytes(content)
    os.replace(temporary, path)
    return len(content)


class Bundle:
    """A ZIP file on disk that grows member by member (stored: FITS barely compresses).

    Written in one pass by :class:`vo_service.engine.bundle.ZipStream`: each member is
    read once and written once (no seek back to patch its local header, as ``zipfile``
    does), which matters for tens of thousands of small stamps.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._partial = path.with_name(path.name + ".part")
        self._zip = ZipStream(self._partial)
        self.members = 0

    def add_file(self, source: Path, arcname: str) -> None:
        """Copy ``source`` into the bundle as ``arcname`` (e.g. ``VIS/target_BGSUB.fits``)."""
        with open(source, "rb") as handle:
            content = handle.read()
        self.add_bytes(content, arcname)

    def add_bytes(self, content: bytes, arcname: str) -> None:
        """Add a member from memory (the manifest, or a stamp's bytes)."""
        self._zip.add(arcname, (content,))
        self.members += 1

    def add_part(self, part: Path, entries: list[tuple[bytes, int, int, int]]) -> None:
        """Append a part written by a worker (``ZipStream.close_part``), then delete it."""
        self._zip.append_part(part, entries)
        self.members += len(entries)
        part.unlink(missing_ok=True)

    def close(self) -> int:
        """Finish the ZIP directory and move it into place; return its size in bytes."""
        self._zip.close()
        os.replace(self._partial, self.path)
        return self.path.stat().st_size
