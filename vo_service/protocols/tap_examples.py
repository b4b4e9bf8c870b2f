"""DALI examples of the TAP service (``<tap>/examples``, TAP 1.1 §2.5): XHTML+RDFa with a
``query`` and the ``table``s it reads per example. The web page shows the same queries."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from lxml import etree

from vo_service.archive.records import ImageRecord
from vo_service.protocols.examples import XHTML, ExamplesPage, _first_record

DEFAULT_POSITION = (52.93, -28.09)


@dataclass(frozen=True)
class TapExample:
    """One example query: an id (the fragment), a title, what it shows, the ADQL."""

    ident: str
    name: str
    text: str
    query: str
    tables: tuple[str, ...] = ("ivoa.obscore",)


def example_record(index: object) -> ImageRecord | None:
    """An image of the archive to place the cone example on."""
    return _first_record(index)


def example_queries(record: ImageRecord | None) -> list[TapExample]:
    """The examples, placed on ``record``'s centre when there is one."""
    ra, dec = DEFAULT_POSITION
    if record is not None and record.s_ra is not None and record.s_dec is not None:
        ra, dec = record.s_ra, record.s_dec
    cone = (
        "SELECT obs_publisher_did, instrument_name, band, product_type, access_url\n"
        "FROM ivoa.obscore\n"
        f"WHERE INTERSECTS(s_region, CIRCLE('ICRS', {ra:.5f}, {dec:.5f}, 0.05)) = 1")
    census = (
        "SELECT instrument_name, band, COUNT(*) AS images\n"
        "FROM ivoa.obscore\n"
        "GROUP BY instrument_name, band\n"
        "ORDER BY instrument_name, band")
    return [
        TapExample("images-at-position", "Images whose footprint meets a small circle",
                   "Every image around a position, with the DataLink document of each "
                   "(access_url), from which SODA cuts it.", cone),
        TapExample("images-per-band", "How many images per instrument and band",
                   "A census of the archive, grouped by instrument and band.", census),
    ]


def examples_document(base: str, examples: list[TapExample]) -> bytes:
    """The XHTML+RDFa examples page (DALI 1.1 §2.3)."""
    page = ExamplesPage("vo-service TAP examples", "Examples of ADQL queries")
    for example in examples:
        block = page.example(example.ident, example.name, example.text)
        etree.SubElement(block, f"{{{XHTML}}}pre", property="query").text = example.query
        tables = etree.SubElement(block, f"{{{XHTML}}}p")
        tables.text = "Tables: "
        for table in example.tables:
            etree.SubElement(tables, f"{{{XHTML}}}span", property="table").text = table
        page.run_link(block, f"{base}/tap/sync?" + urlencode({"LANG": "ADQL",
                                                              "QUERY": example.query}))
    return page.document()
