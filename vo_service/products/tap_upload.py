"""TAP uploads (TAP 1.1 §2.7.6, DALI §3.4.5): inline VOTables become ``TAP_UPLOAD.<name>``.

An upload is read from its own bytes with the catalog reader's safety rules
(:mod:`vo_service.catalogs.safety`: no DOCTYPE/ENTITY, no STREAM href, no XInclude, bounded
columns) before astropy parses it. ``http(s)`` URIs are refused unless the operator enabled
them (``tap_upload_urls``); then they are fetched with a size limit. Each FIELD keeps its
name, datatype, arraysize, xtype, unit and UCD, so ``SELECT * FROM TAP_UPLOAD.t`` returns
what was sent; SQLite stores the columns as ``c0, c1, ...`` (any FIELD name is usable).
"""

from __future__ import annotations

import io
import json
import math
import urllib.request
import warnings
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from astropy.io.votable import parse as parse_votable
from astropy.utils.exceptions import AstropyWarning

from vo_service.archive import tap_geometry as geo
from vo_service.archive.tap_query import UploadTable
from vo_service.archive.tap_schema import ColumnMeta, TableMeta
from vo_service.catalogs.columns import CatalogError
from vo_service.catalogs.safety import check_votable
from vo_service.config import Settings
from vo_service.products.tap_request import (
    MAXREC_HARD,
    TapError,
    TapRequest,
    UploadSpec,
    parse_tap_request,
    parse_uploads,
)

GEOMETRY_XTYPES = {"point", "circle", "polygon"}


COMPLEX_DATATYPES = ("floatComplex", "doubleComplex")


def read_upload(spec: UploadSpec, data: bytes, *, max_rows: int, max_columns: int
                ) -> UploadTable:
    """The table ``TAP_UPLOAD.<spec.name>`` from VOTable bytes."""
    label = f"UPLOAD {spec.name}"
    try:
        check_votable(data, label, max_columns)
    except CatalogError as exc:
        raise TapError(str(exc)) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
            votable = parse_votable(io.BytesIO(data), verify="ignore")
            table = next(votable.iter_tables(), None)
    except Exception as exc:  # the parser raises many types for malformed XML
        raise TapError(f"{label}: not a readable VOTable ({exc})") from None
    if table is None:
        raise TapError(f"{label}: the VOTable holds no TABLE")
    if len(table.array) > max_rows:
        raise TapError(f"{label} has {len(table.array)} rows, more than the {max_rows} "
                       "allowed; split it")
    columns = []
    for number, field in enumerate(table.fields):
        if field.datatype in COMPLEX_DATATYPES:
            raise TapError(f"{label}: column {field.name!r} holds {field.datatype} values, "
                           "which ADQL has no type for; leave it out, or upload its real "
                           "and imaginary parts as two double columns")
        columns.append(ColumnMeta(
            name=field.name if _regular(field.name) else f'"{field.name}"',
            datatype=field.datatype, arraysize=field.arraysize, xtype=field.xtype,
            unit=str(field.unit) if field.unit is not None else None, ucd=field.ucd,
            utype=field.utype, description=field.description, sql_name=f"c{number}"))
    meta = TableMeta("tap_upload", f"tap_upload.{spec.name}", tuple(columns),
                     f"tap_upload_{spec.name.lower()}", "uploaded table")
    converters = [_converter(column) for column in columns]
    array = table.array
    names = array.dtype.names or ()
    rows = []
    for index in range(len(array)):
        rows.append(tuple(
            convert(array[name][index], bool(np.any(array.mask[name][index])))
            for name, convert in zip(names, converters, strict=True)))
    return UploadTable(meta, rows)


def _regular(name: str) -> bool:
    return name.isascii() and name[:1].isalpha() and name.replace("_", "a").isalnum()


def _converter(column: ColumnMeta) -> Callable[[object, bool], object]:
    """How one cell becomes an SQLite value (geometry as geometry text, arrays as JSON)."""
    is_text = column.datatype in ("char", "unicodeChar")
    is_array = not is_text and column.arraysize not in (None, "1")

    def convert(value: object, masked: bool) -> object:
        if masked and not is_array:
            return None
        if is_text:
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            return text
        if is_array:
            values = np.ma.filled(np.ma.asarray(value).astype(float), np.nan).ravel().tolist()
            if column.xtype in GEOMETRY_XTYPES:
                if not values or any(math.isnan(v) for v in values):
                    return None
                return _geometry_text(column.xtype, values)
            return json.dumps([None if math.isnan(v) else v for v in values]
                              if column.datatype in ("float", "double")
                              else np.ma.asarray(value).tolist())
        if isinstance(value, np.bool_ | bool):
            return int(bool(value))
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float) and math.isnan(value):
            return None
        return value

    return convert


def _geometry_text(xtype: str | None, values: list[float]) -> str | None:
    try:
        if xtype == "point" and len(values) == 2:
            return geo.encode(geo.make_point(*values))
        if xtype == "circle" and len(values) == 3:
            return geo.encode(geo.make_circle(*values))
        if xtype == "polygon" and len(values) >= 6:
            return geo.encode(geo.make_polygon(list(zip(values[::2], values[1::2],
                                                        strict=True))))
    except geo.GeometryError:
        return None
    return None


def fetch_upload(uri: str, *, max_bytes: int, allow_urls: bool,
                 files: dict[str, bytes]) -> bytes:
    """The bytes behind an upload URI: ``param:<part>`` from the request's file parts, or an
    ``http(s)`` URL when the operator allows it."""
    scheme, _, rest = uri.partition(":")
    scheme = scheme.lower()
    if scheme == "param":
        data = files.get(rest.upper())
        if data is None:
            raise TapError(f"UPLOAD refers to param:{rest}, but the request has no file part "
                           f"named {rest!r}; send it as multipart/form-data")
        return data
    if scheme in ("http", "https"):
        if not allow_urls:
            raise TapError("UPLOAD from a URL is switched off on this service; send the "
                           "table inline (UPLOAD=name,param:part with a multipart file part)")
        request = urllib.request.Request(uri, headers={"User-Agent": "vo-service TAP"})
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
                data = answer.read(max_bytes + 1)
        except OSError as exc:
            raise TapError(f"UPLOAD could not fetch {uri}: {exc}") from None
        if len(data) > max_bytes:
            raise TapError(f"UPLOAD {uri} is larger than {max_bytes} bytes")
        return data
    raise TapError(f"UPLOAD URI {uri!r} is not supported; use param:<part> (inline)")


def read_uploads(specs: Sequence[UploadSpec], files: dict[str, bytes], *, max_rows: int,
                 max_columns: int, max_bytes: int, allow_urls: bool) -> list[UploadTable]:
    """Every UPLOAD of a request, read and checked."""
    return [read_upload(spec, fetch_upload(spec.uri, max_bytes=max_bytes,
                                           allow_urls=allow_urls, files=files),
                        max_rows=max_rows, max_columns=max_columns) for spec in specs]


def read_tap_request(values: Mapping[str, list[str]], files: dict[str, bytes],
                     settings: Settings) -> TapRequest:
    """The TAP request of ``values`` (parameter name -> values) with its UPLOADs read from
    ``files`` under the service's limits, as /tap/sync and TAP jobs both take it."""
    limits = settings.limits
    tables = read_uploads(parse_uploads(values.get("UPLOAD", [])), files,
                          max_rows=limits.max_upload_rows,
                          max_columns=limits.max_upload_columns,
                          max_bytes=limits.max_upload_bytes,
                          allow_urls=settings.tap_upload_urls)
    return parse_tap_request(values, tables, maxrec_default=limits.maxrec_default,
                             maxrec_hard=MAXREC_HARD)
