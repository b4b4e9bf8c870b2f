"""TAP async jobs (TAP 1.1 §2.2): one ADQL query whose result is the job's ``result``.

A TAP job may be created empty and completed by later POSTs (TAP 1.1 §2.7); its QUERY and
LANG are only judged when it runs, and a bad one ends the job in ERROR with the message
(DESIGN "UWS"; taplint and pyvo expect that). Other parameters' syntax (MAXREC,
RESPONSEFORMAT, UPLOAD names) is checked when they arrive; unknown ones are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from vo_service.jobs.context import JobContext, JobFailed, JobParameterError
from vo_service.jobs.job_files import Upload
from vo_service.jobs.store import Parameter, ResultFile
from vo_service.products.tap_request import (
    TapError,
    find_format,
    parse_uploads,
    single,
)
from vo_service.products.tap_results import run_and_write
from vo_service.products.tap_upload import read_tap_request

TAP_ASYNC_PATH = "/tap/async"  # where TAP jobs live, below the service's base URL
EXTENSIONS = {"tabledata": "xml", "binary2": "xml", "csv": "csv", "tsv": "tsv",
              "fits": "fits"}


def parameter_values(parameters: Sequence[Parameter]) -> dict[str, list[str]]:
    """Upper-cased names -> values, empty values dropped (DALI)."""
    values: dict[str, list[str]] = {}
    for parameter in parameters:
        if parameter.value.strip():
            values.setdefault(parameter.name.upper(), []).append(parameter.value)
    return values


class TapJob:
    """The ``tap`` job kind."""

    name = "tap"

    def __init__(self, resources: object) -> None:
        self.resources = resources

    def validate(self, parameters: Sequence[Parameter], uploads: Mapping[str, Upload]) -> float:
        values = parameter_values(parameters)
        try:
            for name in ("RESPONSEFORMAT", "FORMAT"):
                for value in values.get(name, []):
                    find_format(value)
            maxrec = single(values, "MAXREC")
            if maxrec is not None and not maxrec.strip().lstrip("+").isdigit():
                raise TapError(f"MAXREC {maxrec!r} is not a non-negative integer")
            parse_uploads(values.get("UPLOAD", []))
        except TapError as exc:
            raise JobParameterError(str(exc)) from None
        return 1.0

    def check_ready(self, parameters: Sequence[Parameter], uploads: Mapping[str, Upload]
                    ) -> None:
        """Nothing is refused at RUN: a missing or bad QUERY or LANG ends the job in ERROR
        with its message (TAP practice; DESIGN "UWS")."""

    def run(self, context: JobContext) -> None:
        settings = self.resources.settings  # type: ignore[attr-defined]
        limits = settings.limits
        values = parameter_values(context.parameters)
        files = {name.upper(): upload.path.read_bytes()
                 for name, upload in context.uploads.items()}
        try:
            request = read_tap_request(values, files, settings)
            base = context.base_url.removesuffix(TAP_ASYNC_PATH)
            body = run_and_write(request, settings.index_path, base,
                                 seconds=float(limits.default_execution_duration),
                                 stop=context.should_stop)
        except TapError as exc:
            if context.should_stop():
                return
            raise JobFailed(f"UsageError: {exc}") from None
        target = context.job_dir / f"result.{EXTENSIONS[request.output.writer]}"
        target.write_bytes(body)
        context.add_results([ResultFile("result", target.name, request.output.content_type,
                                        len(body))])
        context.set_progress(1, 1)
