"""UWS 1.1 XML documents (job, job list, results, parameters), built with lxml.

Element order follows UWS.xsd; ``version="1.1"`` is always set; result and job links
use the ``xlink:`` prefix with absolute URLs (pyvo reads attribute names literally).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from urllib.parse import quote

from lxml import etree

from vo_service.jobs.store import JobRecord, Parameter, ResultFile

UWS_NS = "http://www.ivoa.net/xml/UWS/v1.0"
XLINK_NS = "http://www.w3.org/1999/xlink"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
JOBINFO_NS = "http://vo-service.example/xml/jobinfo/v1"
NSMAP = {"uws": UWS_NS, "xlink": XLINK_NS, "xsi": XSI_NS}


def _uws(name: str) -> str:
    return f"{{{UWS_NS}}}{name}"


def _text(parent: etree._Element, name: str, value: object | None, *, nillable: bool) -> None:
    element = etree.SubElement(parent, _uws(name))
    if value is None:
        if nillable:
            element.set(f"{{{XSI_NS}}}nil", "true")
    else:
        element.text = str(value)


def _serialize(root: etree._Element) -> bytes:
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def result_url(job_url: str, result_id: str) -> str:
    """Where a result is served: ``<job URL>/results/<result id>`` (DALI async)."""
    return f"{job_url}/results/{quote(result_id, safe='')}"


def _results(parent: etree._Element, results: Iterable[ResultFile], job_url: str) -> None:
    container = etree.SubElement(parent, _uws("results"))
    for result in results:
        element = etree.SubElement(container, _uws("result"))
        element.set("id", result.result_id)
        element.set(f"{{{XLINK_NS}}}type", "simple")
        element.set(f"{{{XLINK_NS}}}href", result_url(job_url, result.result_id))
        if result.size:  # a result made when first asked for has none until then
            element.set("size", str(result.size))
        element.set("mime-type", result.mime_type)


def _parameters(parent: etree._Element, parameters: Sequence[Parameter]) -> None:
    container = etree.SubElement(parent, _uws("parameters"))
    for parameter in parameters:
        element = etree.SubElement(container, _uws("parameter"))
        element.set("id", parameter.name)
        if parameter.by_reference:
            element.set("byReference", "true")
        element.text = parameter.value


def job_document(
    job: JobRecord, parameters: Sequence[Parameter], results: Iterable[ResultFile],
    job_url: str,
) -> bytes:
    """The ``uws:job`` document of one job."""
    root = etree.Element(_uws("job"), nsmap=NSMAP)
    root.set("version", "1.1")
    _text(root, "jobId", job.job_id, nillable=False)
    if job.run_id:
        _text(root, "runId", job.run_id, nillable=False)
    _text(root, "ownerId", job.owner_id, nillable=True)
    _text(root, "phase", job.phase.value, nillable=False)
    _text(root, "quote", job.quote, nillable=True)
    _text(root, "creationTime", job.creation_time, nillable=False)
    _text(root, "startTime", job.start_time, nillable=True)
    _text(root, "endTime", job.end_time, nillable=True)
    _text(root, "executionDuration", job.execution_duration, nillable=False)
    _text(root, "destruction", job.destruction, nillable=True)
    _parameters(root, parameters)
    _results(root, results, job_url)
    if job.error_message:
        summary = etree.SubElement(root, _uws("errorSummary"))
        summary.set("type", job.error_type or "fatal")
        summary.set("hasDetail", "true")
        _text(summary, "message", job.error_message, nillable=False)
    info = etree.SubElement(root, _uws("jobInfo"))
    progress = etree.SubElement(info, f"{{{JOBINFO_NS}}}progress", nsmap={"vos": JOBINFO_NS})
    progress.set("done", str(job.progress_done))
    progress.set("total", str(job.progress_total))
    kind = etree.SubElement(info, f"{{{JOBINFO_NS}}}kind", nsmap={"vos": JOBINFO_NS})
    kind.text = job.kind
    return _serialize(root)


def jobs_document(jobs: Iterable[JobRecord], list_url: str) -> bytes:
    """The ``uws:jobs`` list: one jobref per job with phase, runId, ownerId, creationTime."""
    root = etree.Element(_uws("jobs"), nsmap=NSMAP)
    root.set("version", "1.1")
    for job in jobs:
        ref = etree.SubElement(root, _uws("jobref"))
        ref.set("id", job.job_id)
        ref.set(f"{{{XLINK_NS}}}type", "simple")
        ref.set(f"{{{XLINK_NS}}}href", f"{list_url}/{job.job_id}")
        _text(ref, "phase", job.phase.value, nillable=False)
        if job.run_id:
            _text(ref, "runId", job.run_id, nillable=False)
        _text(ref, "ownerId", job.owner_id, nillable=True)
        _text(ref, "creationTime", job.creation_time, nillable=False)
    return _serialize(root)


def results_document(results: Iterable[ResultFile], job_url: str) -> bytes:
    """The ``uws:results`` document."""
    holder = etree.Element("holder", nsmap=NSMAP)
    _results(holder, results, job_url)
    root = holder[0]
    return _serialize(_detach(root))


def parameters_document(parameters: Sequence[Parameter]) -> bytes:
    """The ``uws:parameters`` document."""
    holder = etree.Element("holder", nsmap=NSMAP)
    _parameters(holder, parameters)
    return _serialize(_detach(holder[0]))


def _detach(element: etree._Element) -> etree._Element:
    """A copy of ``element`` as a root that declares the UWS namespaces itself."""
    root = etree.Element(element.tag, attrib=dict(element.attrib), nsmap=NSMAP)
    root.extend(list(element))
    return root
