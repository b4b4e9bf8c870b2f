"""DataLink 1.1 {links}: what a client can do with one image, and SODA service descriptors.

For each ID the links table holds ``#this`` (the FITS file), ``#preview`` (a PNG),
``#cutout`` (through a SODA descriptor: dataset-specific with VALUES hints when the answer
is about one image, shared with the ID taken from the row when about several) and
``#auxiliary`` rows for the sibling products of the same tile and band and for the coverage
MOC of the image's kind (``local_semantics="coverage"``). Unknown IDs get a
``NotFoundFault`` error row (DataLink §3.4). The descriptors are built with lxml, because
astropy rewrites an empty array PARAM value (``value=""``) as zeros, which a client would
send as a constant.
"""

from __future__ import annotations

import base64
import copy
import itertools
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from urllib.parse import quote, urlencode

import numpy as np
from astropy.io import fits
from lxml import etree
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from vo_service.archive.index import ArchiveIndex
from vo_service.archive.records import ImageRecord
from vo_service.cache import CutoutCache, make_key, source_identity
from vo_service.engine.preview import render_preview
from vo_service.protocols import dali

LINKS_STANDARD_ID = "ivo://ivoa.net/std/DataLink#links-1.1"
DATALINK_MIME = "application/x-votable+xml;content=datalink"
VOTABLE_NS = "http://www.ivoa.net/xml/VOTable/v1.3"
MAX_IDS = 1000  # IDs answered per request; more give OVERFLOW (DataLink §3.3)
PREVIEW_SIDE = 1024  # longest side of a whole-image preview, pixels


# ---------------------------------------------------------------------------------------
# URLs of the things a links row points to


_NON_ASCII = re.compile(r"[^\x00-\x7f]+")


def uri_text(text: str) -> str:
    """``text`` with non-ASCII characters percent-encoded as UTF-8 (RFC 3987 §3.1, IRI to
    URI): DataLink §3.2 fixes the links columns as ``datatype="char"``, which is ASCII."""
    return _NON_ASCII.sub(lambda match: quote(match.group()), text)


def file_token(did: str) -> str:
    """The path segment under ``/files/`` naming a dataset: base64url of its DID, no padding.

    The token is decoded back to a DID and looked up in the index: no part of it is ever
    used as a filesystem path.
    """
    return base64.urlsafe_b64encode(did.encode()).decode().rstrip("=")


def did_from_token(token: str) -> str:
    """Inverse of :func:`file_token`; a malformed token is a 404 UsageError."""
    try:
        padded = token + "=" * (-len(token) % 4)
        return base64.b64decode(padded, altchars=b"-_", validate=True).decode()
    except ValueError as exc:  # binascii.Error, UnicodeDecodeError, a non-ASCII token
        raise dali.NotFound(f"no file is known under {token!r}; take file URLs from "
                            "/links (#this)") from exc


def file_url(base: str, record: ImageRecord) -> str:
    """Where the whole FITS file of ``record`` is downloaded."""
    return f"{base}/files/{file_token(record.obs_publisher_did)}"


def links_url(base: str, did: str) -> str:
    """The DataLink document of one dataset (SIA access_url)."""
    return f"{base}/links?ID={quote(did, safe='')}"


def coverage_url(base: str, record: ImageRecord) -> str:
    """The coverage MOC of the images of the same collection, instrument, band and product
    type as ``record`` (``/coverage``, see :mod:`vo_service.protocols.coverage`)."""
    pairs = [("COLLECTION", record.obs_collection), ("INSTRUMENT", record.instrument_name),
             ("BANDNAME", record.band), ("PRODUCTTYPE", record.product_type)]
    return f"{base}/coverage?" + urlencode([(k, v) for k, v in pairs if v])


def preview_url(base: str, did: str) -> str:
    """The PNG preview of one dataset."""
    return f"{base}/preview?ID={quote(did, safe='')}"


# ---------------------------------------------------------------------------------------
# Service descriptors (DataLink 1.1 §4, SODA 1.0 §3; checklist §5.3, §8, §9)


def _number(value: float) -> str:
    return f"{value:.10g}"


def covering_circle(record: ImageRecord) -> tuple[float, float, float] | None:
    """A near-minimal circle (ra, dec, radius in deg) around the footprint, or None."""
    if record.s_ra is None or record.s_dec is None:
        return None
    if record.s_region:
        ra0, dec0 = np.radians(record.s_ra), np.radians(record.s_dec)
        ra, dec = np.radians(np.array(record.s_region).T)
        cos_distance = (np.sin(dec0) * np.sin(dec)
                        + np.cos(dec0) * np.cos(dec) * np.cos(ra - ra0))
        radius = float(np.degrees(np.arccos(np.clip(cos_distance, -1, 1))).max())
    elif record.s_fov:
        radius = record.s_fov / 2
    else:
        return None
    return record.s_ra, record.s_dec, min(180.0, radius * (1 + 1e-6) + 1e-9)


def _values(param: etree._Element, *, minimum: str | None = None, maximum: str | None = None,
            options: Iterable[str] = ()) -> None:
    values = etree.SubElement(param, f"{{{VOTABLE_NS}}}VALUES")
    if minimum is not None:
        etree.SubElement(values, f"{{{VOTABLE_NS}}}MIN", value=minimum)
    if maximum is not None:
        etree.SubElement(values, f"{{{VOTABLE_NS}}}MAX", value=maximum)
    for option in options:
        etree.SubElement(values, f"{{{VOTABLE_NS}}}OPTION", value=option)


def _template_descriptor() -> etree._Element:
    tree = etree.parse(str(dali.TEMPLATES / "soda_descriptor.xml"),
                       etree.XMLParser(remove_comments=True, remove_blank_text=True))
    return tree.getroot().find(f"{{{VOTABLE_NS}}}RESOURCE[@type='meta']")


def soda_descriptor(base: str, *, resource_id: str, record: ImageRecord | None = None,
                    id_ref: str | None = None) -> etree._Element:
    """A SODA sync descriptor RESOURCE.

    With ``record`` it is dataset-specific: ID fixed, CIRCLE/POLYGON ``MAX`` from the
    footprint, BAND/TIME ``MIN``/``MAX``, POL ``OPTION``s (SODA §3.3; POS has no VALUES).
    Without, it is generic: ID ``value=""`` with ``ref`` to the FIELD ``id_ref``.
    """
    resource = copy.deepcopy(_template_descriptor())
    resource.set("ID", resource_id)
    params = {p.get("name"): p for p in resource.iter(f"{{{VOTABLE_NS}}}PARAM")}
    params["accessURL"].set("value", f"{base}/sync")
    if record is None:
        if id_ref:
            params["ID"].set("ref", id_ref)
        return resource
    params["ID"].set("value", record.obs_publisher_did)
    circle = covering_circle(record)
    if circle:
        _values(params["CIRCLE"], maximum=" ".join(_number(v) for v in circle))
    if record.s_region:
        _values(params["POLYGON"], maximum=" ".join(_number(v) for v in record.dali_polygon))
    if record.em_min is not None and record.em_max is not None:
        _values(params["BAND"], minimum=_number(record.em_min), maximum=_number(record.em_max))
    if record.t_min is not None and record.t_max is not None:
        _values(params["TIME"], minimum=_number(record.t_min), maximum=_number(record.t_max))
    if len(record.shape) != 2:  # stitching joins 2-D tiles only
        params["STITCH"].getparent().remove(params["STITCH"])
    states = [s for s in (record.pol_states or "").split("/") if s]
    if states:
        _values(params["POL"], options=states)
    else:  # SODA §3.3: declare only what applies; an unpolarised image has no POL axis
        params["POL"].getparent().remove(params["POL"])
    return resource


def links_descriptor(base: str, *, resource_id: str, id_ref: str) -> etree._Element:
    """A generic DataLink descriptor for a discovery table: ``ID`` taken from the FIELD
    ``id_ref`` of each row. With it pyvo fetches the links of many rows in one POST."""
    v = f"{{{VOTABLE_NS}}}"
    resource = etree.Element(f"{v}RESOURCE", type="meta", utype="adhoc:service",
                             ID=resource_id, name="links")
    etree.SubElement(resource, f"{v}DESCRIPTION").text = \
        "DataLink: the file, a preview, sibling products and a cutout service of an image"
    for name, value in (("standardID", LINKS_STANDARD_ID), ("accessURL", f"{base}/links"),
                        ("contentType", DATALINK_MIME)):
        etree.SubElement(resource, f"{v}PARAM", name=name, datatype="char", arraysize="*",
                         value=value)
    group = etree.SubElement(resource, f"{v}GROUP", name="inputParams")
    etree.SubElement(group, f"{v}PARAM", name="ID", datatype="char", arraysize="*",
                     ucd="meta.id;meta.main", value="", ref=id_ref)
    return resource


def add_resources(document: bytes, resources: Sequence[etree._Element]) -> bytes:
    """Insert ``resources`` as top-level RESOURCEs after the last one of a VOTable document."""
    if not resources:
        return document
    root = etree.fromstring(document)
    last = root.findall(f"{{{VOTABLE_NS}}}RESOURCE")[-1]
    position = list(root).index(last) + 1
    for offset, resource in enumerate(resources):
        root.insert(position + offset, resource)
    etree.indent(root, space=" ")
    return etree.tostring(root, xml_declaration=True, encoding="utf-8")


# ---------------------------------------------------------------------------------------
# {links}


def _describe(record: ImageRecord) -> str:
    parts = [record.instrument_name, record.band, record.product_type]
    what = " ".join(dict.fromkeys(p for p in parts if p))  # "VIS VIS BGSUB" -> "VIS BGSUB"
    tile = f" of tile {record.tile}" if record.tile else ""
    return f"{what} {record.dataproduct_type}{tile}".strip()


def _describe_kind(record: ImageRecord) -> str:
    parts = [record.obs_collection, record.instrument_name, record.band, record.product_type]
    what = " ".join(dict.fromkeys(p for p in parts if p))
    return f"{what} {record.dataproduct_type}".strip()


def link_rows(base: str, did: str, record: ImageRecord | None, siblings: Sequence[ImageRecord],
              service_id: str) -> list[dict[str, object]]:
    """The links rows of one ID (all consecutive, DataLink §3.2).

    An unknown ID is echoed in its URI form (:func:`uri_text`): the request may carry any
    text, the ``char`` cells only ASCII. Known IDs are echoed as indexed, so that clients
    match them with the ``obs_publisher_did`` of the SIA results and send them back as is.
    """
    if record is None:
        did = uri_text(did)
        return [{"ID": did, "semantics": "#this",
                 "error_message": f"NotFoundFault: no image with ID {did!r} in this archive"}]
    rows: list[dict[str, object]] = [
        {"ID": did, "access_url": file_url(base, record), "semantics": "#this",
         "description": f"the whole FITS file: {_describe(record)}",
         "content_type": record.access_format, "content_length": record.file_size,
         "content_qualifier": record.product_type, "local_semantics": "file"},
        {"ID": did, "access_url": preview_url(base, did), "semantics": "#preview",
         "description": "PNG preview of the whole image (binned, zscale)",
         "content_type": "image/png", "local_semantics": "preview"},
        {"ID": did, "service_def": service_id, "semantics": "#cutout",
         "description": CUTOUT_DESCRIPTIONS.get(
             record.product_kind,
             "SODA cutout of this image (CIRCLE, POLYGON or POS; BAND, TIME)"),
         "content_type": "application/fits", "local_semantics": "cutout"},
        # The core vocabulary has no #coverage: #auxiliary + local_semantics (checklist §13).
        {"ID": did, "access_url": coverage_url(base, record), "semantics": "#auxiliary",
         "description": "coverage (MOC 2.0) of every "
                        f"{_describe_kind(record)} in this archive",
         "content_type": "application/fits", "local_semantics": "coverage"},
    ]
    if record.product_kind == "catalog":  # a table has no picture
        rows = [row for row in rows if row["semantics"] != "#preview"]
    for sibling in siblings:
        rows.append({
            "ID": did, "access_url": file_url(base, sibling), "semantics": "#auxiliary",
            "description": f"{sibling.product_type or 'related'} product of the same tile"
                           f"{' and band' if sibling.band else ''}: {_describe(sibling)} "
                           f"({sibling.obs_publisher_did})",
            "content_type": sibling.access_format, "content_length": sibling.file_size,
            "content_qualifier": sibling.product_type,
            "local_semantics": (sibling.product_type or "auxiliary").lower(),
        })
    return rows


CUTOUT_DESCRIPTIONS = {  # #cutout of PSF and catalog products (docs/products.md)
    "psf": "SODA: the PSF at the centre of CIRCLE, POLYGON or POS (PSF=nearest or "
           "interpolated)",
    "catalog": "SODA: the catalog rows inside the stamp of CIRCLE, POLYGON or POS, with "
               "their pixel positions (COLUMNS=; RESPONSEFORMAT FITS or VOTable)",
}
LINKS_ID_FIELD = "ID"  # XML ID of the links table's ID FIELD (votable_templates)
CUTOUT_SERVICE_ID = "soda-cutout"  # RESOURCE ID of the SODA descriptor in a links answer


def links_document(index: ArchiveIndex, base: str, ids: Sequence[str], *,
                   overflow_cap: int | None = None) -> bytes:
    """The links VOTable of ``ids`` with one SODA descriptor for their ``#cutout`` rows.

    With one image the descriptor is dataset-specific (ID fixed, VALUES from the image).
    With several it is shared: its ID PARAM ``ref``s the links table's ID FIELD, so the ID
    comes from the row (DataLink 1.1 §4). pyvo's batched ``iter_datalinks()`` copies every
    descriptor of a many-ID answer into each row's result and ``processed()`` takes the
    first SODA one: per-image descriptors with fixed IDs would cut the first image for
    every row.

    Built in one call (one thread): index lookups are blocking SQLite reads, and lxml trees
    are best created and serialised by the same thread.
    """
    rows: list[dict[str, object]] = []
    known: list[ImageRecord] = []
    for did in ids:
        record = index.get(did)
        siblings = index.siblings(record) if record is not None else []
        if record is not None and record.tile is not None and record.product_kind is None:
            siblings += index.records(obs_collection=record.obs_collection, tile=record.tile,
                                      product_kind="catalog")  # the tile's source catalogs
        rows.extend(link_rows(base, did, record, siblings, CUTOUT_SERVICE_ID))
        if record is not None:
            known.append(record)
    descriptors = []
    if len(known) == 1:
        descriptors.append(soda_descriptor(base, resource_id=CUTOUT_SERVICE_ID,
                                           record=known[0]))
    elif known:
        descriptors.append(soda_descriptor(base, resource_id=CUTOUT_SERVICE_ID,
                                           id_ref=LINKS_ID_FIELD))
    votable = dali.load_template("datalink_links.xml")
    dali.fill_rows(votable.resources[0].tables[0], rows)
    if overflow_cap is not None:
        status = next(i for i in votable.resources[0].infos if i.name == "QUERY_STATUS")
        status.value = "OVERFLOW"
        status.content = f"only the first {overflow_cap} IDs were answered; send the rest again"
    return add_resources(dali.votable_bytes(votable), descriptors)


async def links_endpoint(request: Request) -> Response:
    """GET/POST ``/links``: the DataLink document of one or many IDs."""
    request.scope["vo_standard_id"] = LINKS_STANDARD_ID
    params = await dali.read_params(request)
    requested = dali.parse_responseformat(
        params.get_single("RESPONSEFORMAT"), [dali.VOTABLE_MIME], default=dali.VOTABLE_MIME)
    content_type = DATALINK_MIME if params.get_single("RESPONSEFORMAT") is None \
        or requested.content_type == dali.VOTABLE_MIME else requested.content_type
    maxrec_text = params.get_single("MAXREC")
    id_cap = MAX_IDS if maxrec_text is None else min(
        MAX_IDS, dali.parse_int("MAXREC", maxrec_text, minimum=0))
    # A repeated ID is answered once: all rows of one ID must be consecutive (DataLink §3.2).
    ids = list(dict.fromkeys(params.get_all("ID")))
    answered, overflow = ids[:id_cap], len(ids) > id_cap
    body = await run_in_threadpool(links_document, request.app.state.index,
                                   dali.public_base_url(request), answered,
                                   overflow_cap=id_cap if overflow else None)
    return Response(body, media_type=content_type)


# ---------------------------------------------------------------------------------------
# Link targets: the file itself and its preview


async def _record_or_404(request: Request, did: str) -> ImageRecord:
    record = await run_in_threadpool(request.app.state.index.get, did)
    if record is None:
        raise dali.NotFound(f"no image with ID {did!r} in this archive")
    return record


async def file_endpoint(request: Request) -> Response:
    """GET/HEAD ``/files/<token>``: the whole FITS file of a dataset, streamed."""
    record = await _record_or_404(request, did_from_token(request.path_params["token"]))
    if not record.path.is_file():
        raise dali.NotFound(f"the file of {record.obs_publisher_did!r} is no longer on disk; "
                            "the index needs a refresh")
    return FileResponse(record.path, media_type=record.access_format,
                        filename=record.path.name, content_disposition_type="attachment")


def downsampled_plane(path: Path, hdu: int, *, max_side: int = PREVIEW_SIDE,
                      max_planes: int = 8) -> np.ndarray:
    """Pixels of one HDU on a regular grid: at most ``max_side`` per image axis and
    ``max_planes`` along any other axis, so a huge image is never read whole.

    Rows are read through ``.section`` and thinned in memory (astropy's strided section
    reads element by element, which is slow): one contiguous read per kept row of a plain
    image; for a tile-compressed image one read per band of tiles, so that no tile is
    decompressed twice.
    """
    # memmap=False: astropy refuses to scale (BZERO/BSCALE) memory-mapped integer images;
    # .section still reads only the rows asked for.
    with fits.open(path, memmap=False, lazy_load_hdus=True) as hdul:
        image = hdul[hdu]
        shape = image.shape
        steps = [max(1, math.ceil(n / max_planes)) for n in shape[:-2]]
        steps += [max(1, math.ceil(n / max_side)) for n in shape[-2:]]
        tile_shape = getattr(image, "tile_shape", None) or (1,)
        band = max(1, int(tile_shape[-2])) if len(tile_shape) >= 2 else 1
        leading = [range(0, n, step) for n, step in zip(shape[:-2], steps[:-2], strict=True)]
        ny, row_step, column_step = shape[-2], steps[-2], steps[-1]
        planes = []
        for index in itertools.product(*leading):
            rows = []
            for start in range(0, ny, band):
                wanted = [r for r in range(start, min(start + band, ny)) if r % row_step == 0]
                if wanted:
                    block = image.section[(*index, slice(wanted[0], wanted[-1] + 1))]
                    offsets = np.array(wanted) - wanted[0]
                    rows.append(np.asarray(block, dtype=np.float32)[offsets, ::column_step])
            planes.append(np.concatenate(rows))
        return np.stack(planes).reshape([len(k) for k in leading] + list(planes[0].shape))


def _render(path: Path, hdu: int, fmt: str) -> bytes:
    return render_preview(downsampled_plane(path, hdu), fmt=fmt, limits="zscale")


def preview_key(record: ImageRecord, fmt: str) -> str:
    """Cache key of a whole-image preview: the file as it is on disk now, HDU, options."""
    return make_key({"kind": "whole-image-preview", "fmt": fmt, "side": PREVIEW_SIDE,
                     **source_identity(record.path, record.hdu)})


def _cached_preview(cache: CutoutCache | None, record: ImageRecord, key: str, fmt: str) -> bytes:
    if cache is None:
        return _render(record.path, record.hdu, fmt)
    cached, _hit = cache.open_or_compute(key, lambda: _render(record.path, record.hdu, fmt))
    return b"".join(cached.iter_chunks())


async def preview_endpoint(request: Request) -> Response:
    """GET/HEAD ``/preview?ID=...[&RESPONSEFORMAT=image/jpeg]``: the whole image as PNG,
    rendered once per file version and kept in the cutout cache."""
    params = await dali.read_params(request)
    did = params.get_single("ID")
    if did is None:
        raise dali.UsageError("ID is required: the publisher DID of the image to preview")
    requested = dali.parse_responseformat(params.get_single("RESPONSEFORMAT"),
                                          ["image/png", "image/jpeg"], default="image/png")
    record = await _record_or_404(request, did)
    if record.product_kind == "catalog":  # its links offer no #preview either
        raise dali.UsageError(f"{did!r} is a catalog (a FITS table), which has no picture to "
                              "preview; fetch the table from its #this link")
    fmt = "jpeg" if requested.mime == "image/jpeg" else "png"
    try:
        key = await run_in_threadpool(preview_key, record, fmt)
    except OSError as exc:
        raise dali.NotFound(f"the file of {did!r} is no longer on disk; the index needs a "
                            "refresh") from exc
    etag = f'"{key[:32]}"'
    headers = {"ETag": etag, "Cache-Control": "public, max-age=3600"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    cache = getattr(request.app.state, "cache", None)
    try:
        body = await run_in_threadpool(_cached_preview, cache, record, key, fmt)
    except (OSError, ValueError) as exc:
        if dali.storage_failure(exc) is not None:  # a full disk: 503, retry later
            raise
        raise dali.DALIError(f"the preview of {did!r} could not be rendered: {exc}") from exc
    return Response(body, media_type=requested.content_type, headers=headers)
