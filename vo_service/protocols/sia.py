"""SIA 2.0 {query}: image discovery over the archive index, answered as ObsCore rows.

Parameters follow SIA 2.0 §2: every one repeatable, values of one name OR-ed, different
names AND-ed; numeric ones take a DALI interval or a single value. Two extra string
filters, BANDNAME (filter name) and PRODUCTTYPE (BGSUB, RMS, FLAG, BGMOD, ...), select
survey products (docs/protocols.md). Each row's access_url is the image's DataLink
document; generic DataLink and SODA descriptors and a self-descriptor follow the results.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from lxml import etree
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from vo_service.archive.index import ArchiveIndex
from vo_service.archive.records import ImageRecord
from vo_service.protocols import dali
from vo_service.protocols.datalink import (
    DATALINK_MIME,
    VOTABLE_NS,
    add_resources,
    links_descriptor,
    links_url,
    soda_descriptor,
)
from vo_service.shapes import Circle, Polygon, Range

SIA_STANDARD_ID = "ivo://ivoa.net/std/SIA#query-2.0"
MAXREC_HARD_LIMIT = 100_000
# Values of one parameter searched at once (they are OR-ed): a POS polygon or range is
# tested footprint by footprint (~12 ms on a busy machine; a circle meets them all at
# once) and wide images through their WCS, and a thousand values of another parameter
# overflow SQLite's expression depth. Many positions: a TAP upload join.
MAX_POS_VALUES = 64
MAX_PARAMETER_VALUES = 256

# SIA parameter -> keyword of ArchiveIndex.search (vo_service/archive/search.py).
STRING_PARAMS = {
    "COLLECTION": "collection",
    "FACILITY": "facility",
    "INSTRUMENT": "instrument",
    "DPTYPE": "dptype",
    "TARGET": "target",
    "POL": "pol",
    "ID": "id",
    "BANDNAME": "band_name",  # extension: filter name
    "PRODUCTTYPE": "product_type",  # extension: BGSUB, RMS, FLAG, BGMOD, ...
}
INTERVAL_PARAMS = {
    "BAND": "band",
    "TIME": "time",
    "FOV": "fov",
    "SPATRES": "spatres",
    "EXPTIME": "exptime",
    "SPECRP": "specrp",
    "TIMERES": "timeres",
}


@dataclass(frozen=True)
class SIAQuery:
    """A parsed SIA 2 request: ``pos`` shapes and ``constraints`` (ArchiveIndex.search
    keywords -> lists; values of one list OR-ed, lists AND-ed), ``maxrec``, and whether
    the FORMAT values admit the rows' ``access_format`` at all."""

    pos: list[Circle | Range | Polygon] = field(default_factory=list)
    constraints: dict[str, list[object]] = field(default_factory=dict)
    maxrec: int = 10_000
    format_matches: bool = True


def _mime(text: str) -> str:
    """A MIME type for comparison: lower case, no spaces around ``;`` (RFC 2045 §5.1)."""
    return ";".join(part.strip() for part in text.lower().split(";"))


def format_matches(values: Sequence[str]) -> bool:
    """Whether FORMAT ``values`` (OR-ed) match the ``access_format`` of the rows.

    SIA 2.0 §2: FORMAT constrains ``access_format``. Every row's access_url is its
    DataLink document, so every row's access_format is the DataLink MIME type: that value
    matches all rows, any other (``application/fits`` included) none.
    """
    return not values or any(_mime(value) == DATALINK_MIME for value in values)


def parse_query(params: dali.Params, maxrec_default: int) -> SIAQuery:
    """Turn DALI parameters into a :class:`SIAQuery`; a bad value is a UsageError."""
    for name in params.names():
        count, most = len(params.get_all(name)), (
            MAX_POS_VALUES if name.upper() == "POS" else MAX_PARAMETER_VALUES)
        if count > most:
            raise dali.UsageError(
                f"{name} is given {count} times; one query searches at most {most} values "
                f"of {name}: split it into several queries, or for many positions upload "
                "them to TAP (/tap) and join them with ivoa.obscore")
    constraints: dict[str, list[object]] = {}
    for name, keyword in STRING_PARAMS.items():
        if params.get_all(name):
            constraints[keyword] = list(params.get_all(name))
    for name, keyword in INTERVAL_PARAMS.items():
        if params.get_all(name):
            constraints[keyword] = [dali.parse_interval(name, v, allow_scalar=True)
                                    for v in params.get_all(name)]
    if params.get_all("CALIB"):
        constraints["calib"] = [dali.parse_int("CALIB", v, minimum=0)
                                for v in params.get_all("CALIB")]
    maxrec_text = params.get_single("MAXREC")
    maxrec = maxrec_default if maxrec_text is None else dali.parse_int(
        "MAXREC", maxrec_text, minimum=0)
    return SIAQuery(pos=[dali.parse_pos(v) for v in params.get_all("POS")],
                    constraints=constraints, maxrec=min(maxrec, MAXREC_HARD_LIMIT),
                    format_matches=format_matches(params.get_all("FORMAT")))


def obscore_row(record: ImageRecord, base: str) -> dict[str, object]:
    """One result row: the ObsCore fields of ``record``; access_url leads to DataLink."""
    row = {name: getattr(record, name) for name in (
        "dataproduct_type", "calib_level", "obs_collection", "obs_id", "obs_publisher_did",
        "access_estsize", "target_name", "s_ra", "s_dec", "s_fov", "s_resolution", "s_xel1",
        "s_xel2", "t_min", "t_max", "t_exptime", "t_resolution", "t_xel", "em_min", "em_max",
        "em_res_power", "em_xel", "o_ucd", "pol_states", "pol_xel", "facility_name",
        "instrument_name", "band", "product_type")}
    row["s_region"] = record.dali_polygon
    # SIA 2.0 §4: a links URL as access_url needs exactly this access_format.
    row["access_url"] = links_url(base, record.obs_publisher_did)
    row["access_format"] = DATALINK_MIME
    return row


def _param(parent: etree._Element, name: str, description: str, *, datatype: str = "char",
           arraysize: str | None = "*", unit: str | None = None, xtype: str | None = None,
           options: Sequence[str] = ()) -> None:
    attributes = {"name": name, "datatype": datatype, "value": ""}
    for key, value in (("arraysize", arraysize), ("unit", unit), ("xtype", xtype)):
        if value:
            attributes[key] = value
    param = etree.SubElement(parent, f"{{{VOTABLE_NS}}}PARAM", attributes)
    etree.SubElement(param, f"{{{VOTABLE_NS}}}DESCRIPTION").text = description
    if options:
        values = etree.SubElement(param, f"{{{VOTABLE_NS}}}VALUES")
        for option in options:
            etree.SubElement(values, f"{{{VOTABLE_NS}}}OPTION", value=str(option))


def self_descriptor(base: str, facets: Mapping[str, Sequence[str]]) -> etree._Element:
    """The SIA self-description (DataLink 1.1 ``adhoc:this``) with OPTIONs from the index."""
    v = f"{{{VOTABLE_NS}}}"
    resource = etree.Element(f"{v}RESOURCE", type="meta", utype="adhoc:this", name="this")
    etree.SubElement(resource, f"{v}DESCRIPTION").text = \
        "This SIA 2.0 service: its parameters and the values present in the archive"
    etree.SubElement(resource, f"{v}PARAM", name="standardID", datatype="char",
                     arraysize="*", value=SIA_STANDARD_ID)
    etree.SubElement(resource, f"{v}PARAM", name="accessURL", datatype="char",
                     arraysize="*", value=f"{base}/query")
    group = etree.SubElement(resource, f"{v}GROUP", name="inputParams")
    _param(group, "POS", "CIRCLE ra dec r, RANGE ra1 ra2 dec1 dec2 or POLYGON ... (deg, ICRS)")
    for name, unit, what in (("BAND", "m", "wavelength"), ("TIME", "d", "time (MJD)"),
                             ("FOV", "deg", "field of view"),
                             ("SPATRES", "arcsec", "spatial resolution"),
                             ("EXPTIME", "s", "exposure time"),
                             ("SPECRP", None, "spectral resolving power"),
                             ("TIMERES", "s", "time resolution")):
        _param(group, name, f"{what}: a value or an interval 'lo hi'", datatype="double",
               arraysize="2", unit=unit, xtype="interval")
    _param(group, "POL", "polarization state", options=facets.get("pol_states", ()))
    _param(group, "ID", "publisher dataset identifier (obs_publisher_did)")
    for name, key, what in (("COLLECTION", "collections", "collection"),
                            ("FACILITY", "facilities", "telescope"),
                            ("INSTRUMENT", "instruments", "instrument"),
                            ("BANDNAME", "bands", "filter / band name (extension)"),
                            ("PRODUCTTYPE", "product_types", "product type (extension)"),
                            ("TARGET", "targets", "target name")):
        _param(group, name, what, options=facets.get(key, ()))
    _param(group, "DPTYPE", "data product type",
           options=facets.get("dataproduct_types", ("image", "cube")))
    _param(group, "CALIB", "calibration level", datatype="int", arraysize=None,
           options=("0", "1", "2", "3", "4"))
    _param(group, "FORMAT", "access_format: the DataLink document of each image (the files "
           "behind it are FITS)", options=(DATALINK_MIME,))
    _param(group, "MAXREC", "most rows to return (0: metadata only)", datatype="int",
           arraysize=None)
    return resource


def query_document(index: ArchiveIndex, query: SIAQuery, base: str) -> bytes:
    """The SIA results VOTable with the generic SODA descriptor and the self-descriptor.

    Built in one call (one thread): the search is blocking, and lxml trees are best created
    and serialised by the same thread.
    """
    records, overflow = search(index, query)
    votable = dali.load_template("sia_results.xml")
    dali.fill_rows(votable.resources[0].tables[0], [obscore_row(r, base) for r in records])
    if overflow:
        status = next(i for i in votable.resources[0].infos if i.name == "QUERY_STATUS")
        status.value = "OVERFLOW"
        status.content = f"more than MAXREC={query.maxrec} images match; narrow the query"
    descriptors = [
        links_descriptor(base, resource_id="links-generic", id_ref="obs_publisher_did"),
        soda_descriptor(base, resource_id="soda-generic", id_ref="obs_publisher_did"),
        self_descriptor(base, index.facets()),
    ]
    return add_resources(dali.votable_bytes(votable), descriptors)


async def query_endpoint(request: Request) -> Response:
    """GET/POST ``/query``: SIA 2.0 discovery."""
    request.scope["vo_standard_id"] = SIA_STANDARD_ID
    params = await dali.read_params(request)
    requested = dali.parse_responseformat(params.get_single("RESPONSEFORMAT"),
                                          [dali.VOTABLE_MIME])
    settings = request.app.state.settings
    query = parse_query(params, settings.limits.maxrec_default)
    body = await run_in_threadpool(query_document, request.app.state.index, query,
                                   dali.public_base_url(request))
    return Response(body, media_type=requested.content_type)


def search(index: ArchiveIndex, query: SIAQuery) -> tuple[list[ImageRecord], bool]:
    """Records matching ``query`` (at most ``query.maxrec``) and whether more matched."""
    if not query.format_matches:
        return [], False
    return index.search(pos=query.pos, maxrec=query.maxrec, **query.constraints)
