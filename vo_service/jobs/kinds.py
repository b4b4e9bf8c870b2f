"""The job kinds this service runs, and how a job's parameters pick one.

A job with SERIES is a time-series job (``timeseries_job.py``). A job with UPLOAD is a
catalog batch job (``batch.py``), and so is one being built up with
catalog-job parameters only (``SIZE``, ``BANDNAME``…: its UPLOAD may come later with
``POST …/parameters``); any other is a SODA async job (``soda_job.py``), one result per
combination of ID x spatial x BAND x TIME. The kind is chosen again whenever the
parameters change. TAP jobs (``tap_job.py``) are made by the TAP job list, which names
their kind itself.
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

        cache = CutoutCache(settings.cache_dir, settings.limits.cache_bytes,
                            min_free_bytes=settings.limits.cache_min_free_bytes)
    from vo_service.jobs.remote import BatchExecutors

    return JobResources(settings, index, cache, BatchExecutors(settings))


# Parameters only a SODA job has; a job with none of them and a catalog-job parameter is
# a catalog job waiting for its UPLOAD.
SODA_ONLY = {"ID", "POS", "CIRCLE", "POLYGON", "BAND", "TIME", "POL"}


def choose_kind(parameters: Sequence[Parameter]) -> str:
    """``batch`` when the job uploads a catalog, or has catalog-job parameters and no SODA
    ones; else ``soda``."""
    from vo_service.jobs.batch_params import MULTI_VALUED, SINGLE_VALUED

    names = {p.name.upper() for p in parameters}
    if "SERIES" in names:  # a time series (its UPLOAD is an ephemeris, not a catalog)
        return "timeseries"
    if "UPLOAD" in names or (names & (MULTI_VALUED | SINGLE_VALUED) - {"RESPONSEFORMAT"}
                             and not names & SODA_ONLY):
        return "batch"
    return "soda"


def job_kinds(resources: JobResources) -> dict[str, JobKind]:
    """Every kind of job, by name."""
    from vo_service.jobs.batch import BatchJob
    from vo_service.jobs.soda_job import SodaJob
    from vo_service.jobs.tap_job import TapJob
    from vo_service.jobs.timeseries_job import TimeSeriesJob

    return {"soda": SodaJob(resources), "batch": BatchJob(resources),
            "timeseries": TimeSeriesJob(resources), "tap": TapJob(resources)}
