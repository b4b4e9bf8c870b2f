"""SODA async jobs: one result per combination of ID x spatial x BAND x TIME (SODA §3.3).

POL is one filter for all outputs. A combination without overlap (or that the image cannot
answer) still gets a result: a text/plain file starting with ``UsageError:`` (DESIGN). The
job is COMPLETED if any cutout was made, ERROR if none could be.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from vo_service.cache import make_key, source_identity
from vo_service.engine.cutout import cut
from vo_service.engine.spectral import CutoutError
from vo_service.jobs.service import JobContext, JobFailed, Upload
from vo_service.jobs.stamps import publish_cached
from vo_service.jobs.store import Parameter, ResultFile
from vo_service.protocols.dali import (
    NotFound,
    UsageError,
    parse_circle,
    parse_interval,
    parse_polygon,
    parse_pos,
    parse_responseformat,
)
from vo_service.shapes import Range, Shape

POL_STATES = {"I", "Q", "U", "V", "RR", "LL", "RL", "LR", "XX", "YY", "XY", "YX", "POLI",
              "POLA"}
SODA_PARAMETERS = {"ID", "POS", "CIRCLE", "POLYGON", "BAND", "TIME", "POL", "RESPONSEFORMAT"}
WHOLE_SKY = Range(-math.inf, math.inf, -math.inf, math.inf)


@dataclass(frozen=True)
class SodaRequest:
    """A SODA async request, parsed: the lists whose cartesian product is the job."""

    ids: list[str]
    regions: list[Shape]
    bands: list[tuple[float, float] | None]
    times: list[tuple[float, float] | None]
    pol: list[str] | None

    def combinations(self) -> list[tuple[str, Shape, tuple | None, tuple | None]]:
        """Every (ID, region, band, time) in request order."""
        return list(itertools.product(self.ids, self.regions, self.bands, self.times))


def parse_soda_request(parameters: Sequence[Parameter]) -> SodaRequest:
    """Parse and check SODA parameters; UsageError says what to fix."""
    values: dict[str, list[str]] = {}
    for parameter in parameters:
        values.setdefault(parameter.name.upper(), []).append(parameter.value)
    unknown = sorted(set(values) - SODA_PARAMETERS)
    if unknown:
        raise UsageError(f"unknown parameter(s) {', '.join(unknown)} for a SODA job; use "
                         f"{', '.join(sorted(SODA_PARAMETERS))} (or UPLOAD for a catalog job)")
    ids = values.get("ID", [])
    if not ids:
        raise UsageError("a SODA job needs at least one ID (or UPLOAD=name,param:name with a "
                         "catalog for a batch job)")
    regions: list[Shape] = [parse_pos(v) for v in values.get("POS", [])]
    regions += [parse_circle(v) for v in values.get("CIRCLE", [])]
    regions += [parse_polygon(v) for v in values.get("POLYGON", [])]
    bands = [parse_interval("BAND", v) for v in values.get("BAND", [])]
    times = [parse_interval("TIME", v) for v in values.get("TIME", [])]
    pol = values.get("POL") or None
    for state in pol or []:
        if state not in POL_STATES:
            raise UsageError(f"POL: {state!r} is not a polarization state; use one of "
                             + " ".join(sorted(POL_STATES)))
    formats = values.get("RESPONSEFORMAT", [])
    if len(formats) > 1:
        raise UsageError("RESPONSEFORMAT is single-valued; send it once")
    parse_responseformat(formats[0] if formats else None, ["application/fits"],
                         default="application/fits")
    return SodaRequest(ids, regions or [WHOLE_SKY], list(bands) or [None],
                       list(times) or [None], pol)


class SodaJob:
    """The ``soda`` job kind."""

    name = "soda"

    def __init__(self, resources: object) -> None:
        self.resources = resources

    def validate(self, parameters: Sequence[Parameter], uploads: Mapping[str, Upload]) -> float:
        if uploads:
            raise UsageError("files were uploaded but UPLOAD does not name them; send "
                             "UPLOAD=name,param:name for a catalog job")
        request = parse_soda_request(parameters)
        index = self.resources.index
        for did in dict.fromkeys(request.ids):
            if index.get(did) is None:
                raise NotFound(f"unknown ID {did!r}; find IDs with the SIA query or DataLink")
        return 0.5 + 0.05 * len(request.combinations())

    def run(self, context: JobContext) -> None:
        request = parse_soda_request(context.parameters)
        combinations = request.combinations()
        produced = 0
        for number, (did, region, band, time) in enumerate(combinations, start=1):
            if context.should_stop():
                break
            result = self._one(context, number, did, region, band, time, request.pol)
            produced += result.mime_type == "application/fits"
            context.add_results([result])
            context.set_progress(number, len(combinations))
        if produced == 0 and not context.should_stop():
            raise JobFailed(f"UsageError: no overlap: none of the {len(combinations)} "
                            "requested cutouts overlaps its image; see the job's results")

    def _one(self, context: JobContext, number: int, did: str, region: Shape,
             band: tuple | None, time: tuple | None, pol: list[str] | None) -> ResultFile:
        result_id = f"cutout-{number}"
        record = self.resources.index.get(did)
        if record is None:
            return _text_result(context, result_id, f"UsageError: unknown ID {did!r}")
        key = make_key({
            "kind": "soda", "source": source_identity(record.path, record.hdu),
            "region": repr(region), "band": band, "time": time, "pol": pol,
            "format": "application/fits",
        })
        problem: list[str] = []

        def compute() -> bytes:
            result = cut(record.path, record.hdu, region, band=band, time=time, pol=pol,
                         max_pixels=self.resources.settings.limits.max_cutout_pixels)
            if not result.has_stamp:
                problem.append(f"UsageError: no overlap: {result.message or result.status}")
                raise _NoStamp()
            return result.fits_bytes()

        try:
            cached, _ = self.resources.cache.open_or_compute(key, compute)
        except _NoStamp:
            return _text_result(context, result_id, problem[0])
        except CutoutError as exc:
            return _text_result(context, result_id, f"UsageError: {exc}")
        target = context.job_dir / f"{result_id}.fits"
        size = publish_cached(cached, target)
        return ResultFile(result_id, target.name, "application/fits", size)


class _NoStamp(Exception):
    """The cutout has no pixels; nothing is stored in the cache."""


def _text_result(context: JobContext, result_id: str, text: str) -> ResultFile:
    path = context.job_dir / f"{result_id}.txt"
    path.write_text(text + "\n")
    return ResultFile(result_id, path.name, "text/plain", path.stat().st_size)
