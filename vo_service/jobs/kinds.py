"""The job kinds this service runs, and how a creating request picks one.

A request with UPLOAD is a catalog batch job (``batch.py``); any other is a SODA async
job (``soda_job.py``), one result per combination of ID x spatial x BAND x TIME. TAP jobs
(``tap_job.py``) are made by the TAP job list, which names their kind itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vo_service.config import Settings
from vo_service.jobs.service import JobKind
from vo_service.jobs.store import Parameter


@dataclass(frozen=True)
class JobResources:
    """What running jobs share: settings, the archive index, the cutout cache and where
    catalog jobs cut (``BatchExecutors``: local threads or a Dask cluster)."""

    settings: Settings
    index: Any
    cache: Any
    executors: Any = None

    def close(self) -> None:
        """Let go of shared connections (the Dask client) at shutdown."""
        if self.executors is not None:
            self.executors.close()


def make_resources(settings: Settings, index: Any, cache: Any = None) -> JobResources:
    """Resources for job kinds; a cutout cache on ``settings.cache_dir`` unless given."""
    if cache is None:
        from vo_service.cache import CutoutCache

        cache = CutoutCache(settings.cache_dir, settings.limits.cache_bytes)
    from vo_service.jobs.remote import BatchExecutors

    return JobResources(settings, index, cache, BatchExecutors(settings))


def choose_kind(parameters: Sequence[Parameter]) -> str:
    """``batch`` when the request uploads a catalog, else ``soda``."""
    return "batch" if any(p.name == "UPLOAD" for p in parameters) else "soda"


def job_kinds(resources: JobResources) -> dict[str, JobKind]:
    """Every kind of job, by name."""
    from vo_service.jobs.batch import BatchJob
    from vo_service.jobs.soda_job import SodaJob
    from vo_service.jobs.tap_job import TapJob

    return {"soda": SodaJob(resources), "batch": BatchJob(resources), "tap": TapJob(resources)}
