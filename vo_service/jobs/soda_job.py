"""SODA async jobs: one result per combination of ID x spatial x BAND x TIME (SODA §3.3).

POL is one filter for all outputs. Each combination is made exactly as ``/sync`` makes a
single cutout (``products.cutouts.fetch_product``), so its bytes equal the sync answer and
both share the cutout cache. A combination without overlap, or that the image cannot
answer, still gets a result: a text/plain file starting with ``UsageError:`` (DESIGN). The
job is COMPLETED if any cutout was made, ERROR if none could be.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import replace

from vo_service.errors import DALIError, NotFound, UsageError
from vo_service.jobs.service import JobContext, JobFailed, Upload
from vo_service.jobs.stamps import publish_cached
from vo_service.jobs.store import Parameter, ResultFile
from vo_service.products import stitching
from vo_service.products.cutout_request import FITS_MIME, CutoutRequest, parse_cutout_values
from vo_service.products.cutouts import NoOverlap, fetch_product
from vo_service.products.parameters import parse_responseformat
from vo_service.products.product_options import ProductError, ProductOptions
from vo_service.products.product_requests import NoProductOverlap, fetch_product_answer

SODA_PARAMETERS = {"ID", "POS", "CIRCLE", "POLYGON", "BAND", "TIME", "POL", "RESPONSEFORMAT",
                   "STITCH"}


MAX_JOB_CUTOUTS = 10_000  # results of one SODA job (the cartesian product is checked first)


def parse_soda_requests(parameters: Sequence[Parameter], *, complete: bool = True
                        ) -> list[CutoutRequest]:
    """One single-cutout request per combination, in request order; UsageError if bad.

    With ``complete=False`` only each value's syntax is checked (a PENDING job being built
    up may still lack its ID or region; UWS 1.1 ``POST …/parameters``).
    """
    values = parse_cutout_values((p.name.upper(), p.value) for p in parameters)
    names = {parameter.name.upper() for parameter in parameters}
    unknown = sorted(names - SODA_PARAMETERS)
    if unknown:
        raise UsageError(f"unknown parameter(s) {', '.join(unknown)} for a SODA job; use "
                         f"{', '.join(sorted(SODA_PARAMETERS))} (or UPLOAD for a catalog job)")
    if not values.ids and complete:
        raise UsageError("a SODA job needs at least one ID (or UPLOAD=name,param:name with a "
                         "catalog for a batch job); add it with POST …/parameters")
    if not values.selects_a_part and complete:
        raise UsageError("the job has no CIRCLE, POLYGON or POS (nor BAND, TIME, POL) to say "
                         "which part of the images to cut; add one with POST …/parameters")
    formats = [p.value for p in parameters if p.name.upper() == "RESPONSEFORMAT"]
    if len(formats) > 1:
        raise UsageError("RESPONSEFORMAT is single-valued; send it once")
    response_format = parse_responseformat(formats[0] if formats else None, [FITS_MIME],
                                           default=FITS_MIME)
    ids, regions, bands, times = values.ids, values.regions, values.bands, values.times
    count = len(ids) * max(1, len(regions)) * max(1, len(bands)) * max(1, len(times))
    if count > MAX_JOB_CUTOUTS:
        raise UsageError(f"{count:,} cutouts (ID x region x BAND x TIME) in one job, more "
                         f"than {MAX_JOB_CUTOUTS:,}; split the job, or upload a catalog "
                         "(UPLOAD) for many positions")
    stitch_values = [p.value for p in parameters
                     if p.name.upper() == stitching.STITCH_PARAMETER]
    if len(stitch_values) > 1:
        raise UsageError("STITCH is single-valued; send it once")
    try:
        method = stitching.parse_stitch(stitch_values[0] if stitch_values else None)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    stitch = stitching.Stitching(method) if method else None
    return [
        CutoutRequest((did,), (region,) if region is not None else (), band, time,
                      values.pol, response_format, None, None, stitch)
        for did, region, band, time in itertools.product(
            ids, regions or [None], bands or [None], times or [None])
    ]


class SodaJob:
    """The ``soda`` job kind."""

    name = "soda"

    def __init__(self, resources: object) -> None:
        self.resources = resources

    def validate(self, parameters: Sequence[Parameter], uploads: Mapping[str, Upload]) -> float:
        """Each value's syntax, and that every ID is in the archive (a job may be built up:
        completeness is checked by :meth:`check_ready` at RUN)."""
        if uploads:
            raise UsageError("files were uploaded but UPLOAD does not name them; send "
                             "UPLOAD=name,param:name for a catalog job")
        requests = parse_soda_requests(parameters, complete=False)
        for did in dict.fromkeys(r.ids[0] for r in requests):
            if self.resources.index.get(did) is None:
                raise NotFound(f"ID {did!r} is not in this archive; find IDs with /query "
                               "(obs_publisher_did)")
        return 0.5 + 0.05 * len(requests)

    def check_ready(self, parameters: Sequence[Parameter], uploads: Mapping[str, Upload]
                    ) -> None:
        """A UsageError naming what is missing (an ID, a region) before the job may run."""
        parse_soda_requests(parameters)

    def run(self, context: JobContext) -> None:
        requests = parse_soda_requests(context.parameters)
        produced = 0
        for number, request in enumerate(requests, start=1):
            if context.should_stop():
                break
            result = self._one(context, f"cutout-{number}", request)
            produced += result.mime_type == FITS_MIME
            context.add_results([result])
            context.set_progress(number, len(requests))
        if produced == 0 and not context.should_stop():
            raise JobFailed(f"UsageError: no overlap: none of the {len(requests)} requested "
                            "cutouts overlaps its image; each result says why")

    def _one(self, context: JobContext, result_id: str, request: CutoutRequest) -> ResultFile:
        record = self.resources.index.get(request.ids[0])
        if record is None:
            return _text_result(context, result_id, f"UsageError: unknown ID {request.ids[0]!r}")
        max_pixels = self.resources.settings.limits.max_cutout_pixels
        try:
            if record.product_kind is not None:  # a PSF or a catalog: answered, not cut
                cached, _, _ = fetch_product_answer(
                    self.resources.cache, self.resources.index, record, request.regions,
                    FITS_MIME, ProductOptions(), max_pixels)
            else:
                request = replace(request, stitch=stitching.resolve(
                    self.resources.index, request.stitch, [record]))
                cached, _, _ = fetch_product(self.resources.cache, request, [record],
                                             max_pixels)
        except ProductError as exc:
            return _text_result(context, result_id, f"UsageError: {exc}")
        except (NoOverlap, NoProductOverlap):
            return _text_result(context, result_id, "UsageError: no overlap: the region "
                                f"does not overlap {request.ids[0]}")
        except DALIError as exc:
            return _text_result(context, result_id, exc.text)
        target = context.job_dir / f"{result_id}.fits"
        size = publish_cached(cached, target)
        return ResultFile(result_id, target.name, FITS_MIME, size)


def _text_result(context: JobContext, result_id: str, text: str) -> ResultFile:
    path = context.job_dir / f"{result_id}.txt"
    path.write_text(text + "\n")
    return ResultFile(result_id, path.name, "text/plain", path.stat().st_size)

