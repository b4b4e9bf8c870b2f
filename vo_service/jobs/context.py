"""What a job kind sees and must provide: ``JobKind``, ``JobContext`` and the two errors."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from vo_service.jobs.job_files import Upload
from vo_service.jobs.store import JobStore, Parameter, ResultFile

PROGRESS_SECONDS = 0.25  # least time between two progress writes of a job, until its end


class JobParameterError(ValueError):
    """Parameters a job kind refuses at creation; the message says what to fix."""


class OwnerLimitError(Exception):
    """An owner reached a per-owner limit (unfinished jobs, result bytes); the message says
    which and what to delete."""


class JobFailed(Exception):
    """Raised by a job kind when the job produced nothing usable (phase ERROR)."""


class JobKind(Protocol):
    """What a kind of job must provide."""

    name: str

    def validate(
        self, parameters: Sequence[Parameter], uploads: Mapping[str, Upload]
    ) -> float | None:
        """Raise JobParameterError (or a DALI UsageError) for a bad value; return an
        estimate of the run time in seconds (the quote), or None. A job may be built up
        (UWS ``POST …/parameters``): what is still missing is not an error here."""
        ...

    def check_ready(
        self, parameters: Sequence[Parameter], uploads: Mapping[str, Upload]
    ) -> None:
        """Raise JobParameterError (or a DALI UsageError) naming what is missing before the
        job may RUN (called when a PENDING job is run)."""
        ...

    def run(self, context: JobContext) -> None:
        """Do the work; raise JobFailed if nothing could be produced."""
        ...


class JobRunner(Protocol):
    """What a running job needs of the service that runs it (``JobService`` is one;
    a Protocol, so that this module does not import the service that imports it)."""

    stopping: bool  # set when the service is shutting down
    store: JobStore


@dataclass
class JobContext:
    """What a running job sees: its inputs, a place for files, and ways to report."""

    job_id: str
    parameters: list[Parameter]
    uploads: dict[str, Upload]
    job_dir: Path
    base_url: str
    resources: Any
    _service: JobRunner
    _abort: threading.Event = field(default_factory=threading.Event)
    _progress_written: float = field(default=-math.inf, init=False, repr=False)

    def should_stop(self) -> bool:
        """True once the job was aborted, expired or the service is shutting down."""
        return self._abort.is_set() or self._service.stopping

    def set_progress(self, done: int, total: int) -> None:
        """Record how many units of work are done (shown in the job's jobInfo): at most
        every PROGRESS_SECONDS, and always when all are; a catalog job finishes units
        faster than a client polls, and each write waits for the job store's lock."""
        written = time.monotonic()
        if done < total and written - self._progress_written < PROGRESS_SECONDS:
            return
        self._progress_written = written
        self._service.store.update(self.job_id, progress_done=done, progress_total=total)

    def add_results(self, results: Sequence[ResultFile]) -> None:
        """Publish results at once (they appear in the job document while it runs)."""
        self._service.store.add_results(self.job_id, results)

    def put_result(self, result: ResultFile) -> None:
        """Publish a result, or replace the one of the same id (a file rewritten while the
        job runs)."""
        self._service.store.put_result(self.job_id, result)

    @property
    def store(self) -> JobStore:
        """The job store (batch jobs remember stamp outcomes there)."""
        return self._service.store

    @property
    def job_url(self) -> str:
        """The job's absolute URL: its results are served under it (see
        :func:`vo_service.jobs.documents.result_url`)."""
        return f"{self.base_url}/{self.job_id}"
