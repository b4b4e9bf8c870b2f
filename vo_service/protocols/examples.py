"""DALI-examples (``/examples``): runnable example requests as XHTML with RDFa.

DALI 1.1 §2.3: one element carries ``vocab="http://www.ivoa.net/rdf/examples#"``; each
example is ``typeof="example"`` with ``id``/``resource``, one ``property="name"``, a
``property="capability"`` and its parameters as ``generic-parameter``/``keyval`` with
``key`` and ``value``. Readable without JavaScript or CSS. The example values come from
the first image in the index, so every example returns data.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlencode

from lxml import etree
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from vo_service.archive.records import ImageRecord
from vo_service.protocols.dali import public_base_url

XHTML = "http://www.w3.org/1999/xhtml"
EXAMPLES_VOCAB = "http://www.ivoa.net/rdf/examples#"


def _example_values(record: ImageRecord | None) -> tuple[str, float, float]:
    if record is None or record.s_ra is None or record.s_dec is None:
        return "ivo://vo-service.example/EXAMPLE?image.fits", 150.0, 2.0
    return record.obs_publisher_did, record.s_ra, record.s_dec


def _selection_example(record: ImageRecord | None) -> dict[str, object]:
    """Select by band name and product type when the archive knows them, else by
    collection and instrument."""
    common = {"id": "sia-select", "capability": "ivo://ivoa.net/std/SIA#query-2.0",
              "path": "query"}
    if record is not None and record.band and record.product_type:
        return {**common, "name": "Images of one band and product type (SIA 2 extensions)",
                "text": "BANDNAME and PRODUCTTYPE select survey products by filter and kind.",
                "params": [("BANDNAME", record.band), ("PRODUCTTYPE", record.product_type)]}
    params = [("COLLECTION", record.obs_collection if record else "EXAMPLE")]
    if record is not None and record.instrument_name:
        params.append(("INSTRUMENT", record.instrument_name))
    return {**common, "name": "Images of one collection and instrument (SIA 2)",
            "text": "String parameters match exactly; repeat one to accept several values.",
            "params": params}


def example_list(record: ImageRecord | None) -> list[dict[str, object]]:
    """The examples: id, name, capability, path, description, parameters."""
    did, ra, dec = _example_values(record)
    circle = f"{ra:.5f} {dec:.5f} 0.01"
    return [
        {"id": "sia-cone", "name": "Images around a position (SIA 2)",
         "capability": "ivo://ivoa.net/std/SIA#query-2.0", "path": "query",
         "text": "All images whose footprint meets a small circle; access_url of each row "
                 "leads to its DataLink document.",
         "params": [("POS", f"CIRCLE {circle}")]},
        _selection_example(record),
        {"id": "links", "name": "What can be done with one image (DataLink)",
         "capability": "ivo://ivoa.net/std/DataLink#links-1.1", "path": "links",
         "text": "The file, a preview, the sibling products and a SODA cutout service.",
         "params": [("ID", did)]},
        {"id": "soda-circle", "name": "A small circular cutout (SODA sync)",
         "capability": "ivo://ivoa.net/std/SODA#sync-1.0", "path": "sync",
         "text": "A FITS cutout of 0.01 degree radius with the image's WCS.",
         "params": [("ID", did), ("CIRCLE", circle)]},
    ]


class ExamplesPage:
    """A DALI examples page (XHTML+RDFa) being built: one ``typeof="example"`` block per
    example inside the element that carries the examples vocabulary."""

    def __init__(self, title: str, heading: str) -> None:
        self.html = etree.Element(f"{{{XHTML}}}html", nsmap={None: XHTML})
        head = etree.SubElement(self.html, f"{{{XHTML}}}head")
        etree.SubElement(head, f"{{{XHTML}}}title").text = title
        body = etree.SubElement(self.html, f"{{{XHTML}}}body")
        etree.SubElement(body, f"{{{XHTML}}}h1").text = heading
        self.container = etree.SubElement(body, f"{{{XHTML}}}div", vocab=EXAMPLES_VOCAB)

    def example(self, ident: str, name: str, text: str) -> etree._Element:
        """A new example block with its name and description; the caller adds the rest."""
        block = etree.SubElement(self.container, f"{{{XHTML}}}div", typeof="example",
                                 id=ident, resource=f"#{ident}")
        etree.SubElement(block, f"{{{XHTML}}}h2", property="name").text = name
        etree.SubElement(block, f"{{{XHTML}}}p").text = text
        return block

    @staticmethod
    def run_link(block: etree._Element, url: str) -> None:
        """A "Run it" link; it carries no property (RDFa would take its href as a value)."""
        run = etree.SubElement(block, f"{{{XHTML}}}p")
        etree.SubElement(run, f"{{{XHTML}}}a", href=url).text = "Run it"

    def document(self) -> bytes:
        """The page as an XHTML document."""
        return etree.tostring(self.html, xml_declaration=True, encoding="utf-8",
                              pretty_print=True, doctype="<!DOCTYPE html>")


def examples_document(base: str, examples: Sequence[dict[str, object]]) -> bytes:
    """The XHTML+RDFa examples page."""
    page = ExamplesPage("vo-service examples", "Examples of vo-service requests")
    for example in examples:
        block = page.example(str(example["id"]), str(example["name"]), str(example["text"]))
        capability = etree.SubElement(block, f"{{{XHTML}}}p")
        capability.text = "Capability: "
        etree.SubElement(capability, f"{{{XHTML}}}code", property="capability").text = \
            str(example["capability"])
        parameters = etree.SubElement(block, f"{{{XHTML}}}ul")
        for key, value in example["params"]:  # type: ignore[attr-defined]
            item = etree.SubElement(parameters, f"{{{XHTML}}}li", property="generic-parameter",
                                    typeof="keyval")
            etree.SubElement(item, f"{{{XHTML}}}code", property="key").text = key
            etree.SubElement(item, f"{{{XHTML}}}span").text = " = "
            etree.SubElement(item, f"{{{XHTML}}}code", property="value").text = value
        page.run_link(block, f"{base}/{example['path']}?{urlencode(example['params'])}")
    return page.document()


def _first_record(index: object) -> ImageRecord | None:
    """An image to base the examples on: a science (BGSUB) image when there is one."""
    for filters in ({"product_type": "BGSUB", "dataproduct_type": "image"},
                    {"dataproduct_type": "image"}, {}):
        records = index.records(**filters)  # type: ignore[attr-defined]
        if records:
            return records[0]
    return None


async def examples_page(request: Request) -> Response:
    """GET ``/examples``."""
    record = await run_in_threadpool(_first_record, request.app.state.index)
    body = examples_document(public_base_url(request), example_list(record))
    return Response(body, media_type="application/xhtml+xml")
