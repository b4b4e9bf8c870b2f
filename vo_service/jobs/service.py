"""The UWS job lifecycle: create, run on a pool of job slots, abort, wait, expire, recover.

HTTP lives in ``protocols/uws.py``; what a job *does* lives in job kinds (``soda_job.py``,
``batch.py``). A kind validates its parameters at creation and later runs in a worker
thread with a ``JobContext`` that reports progress and results and says when to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shutil
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from vo_service.config import Settings
from vo_service.jobs.context import (
    JobContext,
    JobFailed,
    JobKind,
    JobParameterError,
    OwnerLimitError,
)
from vo_service.jobs.executors import LocalExecutor
from vo_service.jobs.job_files import Upload, load_uploads, remove_result_files, save_uploads
from vo_service.jobs.phases import (
    ABORTABLE_PHASES,
    ACTIVE_PHASES,
    RUNNABLE_PHASES,
    Phase,
)
from vo_service.jobs.store import (
    JobRecord,
    JobStore,
    Parameter,
    format_time,
    now,
    parse_time,
)
from vo_service.protocols.dali import storage_failure

log = logging.getLogger(__name__)
__all__ = ["JobContext", "JobFailed", "JobKind", "JobParameterError", "JobService",
           "OwnerLimitError", "Upload"]

# Jobs that count against an owner's max_jobs_per_owner.
UNFINISHED_PHASES = (Phase.PENDING, Phase.QUEUED, Phase.EXECUTING, Phase.HELD, Phase.SUSPENDED)
# A job interrupted by a restart this many times is failed instead of re-queued, so that
# a job that kills the process cannot loop forever.
MAX_ATTEMPTS = 2
SWEEP_SECONDS = 60.0
# How long the outcome of a batch stamp (status, pixel box) is remembered.
OUTCOME_DAYS = 30


def failure_message(job_id: str, failure: Exception) -> str:
    """The errorSummary of a job that raised ``failure``, logged.

    A failing disk or state directory (full, read-only, no permission; classified as the
    HTTP handler does) is ``ServiceUnavailable``: the job may work once the operators fixed
    it. Anything else is a bug, reported with its exception type.
    """
    problem = storage_failure(failure)
    if problem is not None:
        log.error("job %s: storage failure: %s", job_id, failure)
        return (f"ServiceUnavailable: the service could not write the job's files ({problem}), "
                "retry later")
    log.error("job %s failed", job_id, exc_info=failure)
    return f"Error: {type(failure).__name__}: {failure}"


class JobService:
    """Owns the job store, the pool of job slots and the waiters of blocking requests."""

    def __init__(
        self, settings: Settings, kinds: Mapping[str, JobKind],
        choose_kind: Callable[[Sequence[Parameter]], str], resources: Any = None,
    ) -> None:
        self.settings = settings
        self.limits = settings.limits
        self.store = JobStore(settings.jobs_dir)
        self.kinds = dict(kinds)
        self.choose_kind = choose_kind
        self.resources = resources
        self.stopping = False
        self._slots = LocalExecutor(self.limits.job_workers, name="vo-uws")
        self._aborts: dict[str, threading.Event] = {}
        self._timers: dict[str, threading.Timer] = {}
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._guard = threading.Lock()

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Startup hook: recover jobs a previous process left running, start the sweep."""
        self._loop = asyncio.get_running_loop()
        self.recover()
        self.sweep()
        self._sweeper = asyncio.create_task(self._sweep_forever())

    async def stop(self) -> None:
        """Shutdown hook: stop jobs at their next check (they resume after a restart)."""
        self.stopping = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for timer in list(self._timers.values()):
            timer.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.to_thread(self._slots.shutdown, True, cancel_futures=True), 30
            )
        close = getattr(self.resources, "close", None)
        if close is not None:
            await asyncio.to_thread(close)
        self.store.close()

    def recover(self) -> None:
        """Re-queue jobs that were QUEUED or EXECUTING when the last process ended."""
        for job in self.store.list(phases=[Phase.QUEUED, Phase.EXECUTING]):
            if job.phase is Phase.EXECUTING and job.attempts >= MAX_ATTEMPTS:
                self.store.change_phase(
                    job.job_id, Phase.ERROR, only_from=[Phase.EXECUTING],
                    end_time=format_time(now()), error_type="fatal",
                    error_message=f"Error: the service restarted {job.attempts} times while "
                    "this job was executing; it was stopped. Create it again, perhaps "
                    "with fewer targets.",
                )
                continue
            self.store.clear_results(job.job_id)
            remove_result_files(self.store.job_dir(job.job_id))
            self.store.change_phase(
                job.job_id, Phase.QUEUED, only_from=[job.phase],
                start_time=None, progress_done=0, progress_total=0,
            )
            log.info("re-queued job %s after a restart", job.job_id)
            self._submit(job.job_id)

    def sweep(self) -> None:
        """Destroy jobs whose destruction time has passed, with their files."""
        for job_id in self.store.expired(format_time(now())):
            self.delete(job_id)
        with self._guard:
            running = list(self._aborts)
        self.store.forget_orphans(running)
        self.store.forget_stamp_outcomes(OUTCOME_DAYS * 86400)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            try:
                await asyncio.to_thread(self.sweep)
            except Exception:  # keep sweeping; a failed sweep is retried next time
                log.exception("job sweep failed")

    # -- client actions ---------------------------------------------------------------

    def create(
        self, parameters: Sequence[Parameter], uploads: Mapping[str, tuple[str | None, bytes]],
        *, base_url: str, run_id: str | None = None, owner_id: str | None = None,
        kind: str | None = None,
    ) -> JobRecord:
        """Validate and store a new PENDING job (of ``kind``, else chosen from the
        parameters); JobParameterError if it cannot run, OwnerLimitError if its owner
        already has too many jobs or result bytes."""
        self.check_owner_limits(owner_id)
        kind_name = kind or self.choose_kind(parameters)
        kind = self.kinds[kind_name]
        job_id = secrets.token_hex(8)
        job_dir = self.store.job_dir(job_id)
        saved = save_uploads(job_dir, uploads)
        try:
            estimate = kind.validate(parameters, saved)
        except BaseException:
            shutil.rmtree(job_dir, ignore_errors=True)
            raise
        created = now()
        job = JobRecord(
            job_id=job_id, kind=kind_name, phase=Phase.PENDING,
            creation_time=format_time(created),
            execution_duration=self.limits.default_execution_duration,
            destruction=format_time(created + timedelta(days=self.limits.default_destruction_days)),
            base_url=base_url.rstrip("/"), run_id=run_id, owner_id=owner_id,
            quote=format_time(created + timedelta(seconds=estimate)) if estimate else None,
        )
        self.store.create(job, parameters)
        log.info("job %s created: kind=%s runid=%s parameters=%d", job_id, kind_name, run_id,
                 len(parameters))
        return job

    def check_owner_limits(self, owner_id: str | None) -> None:
        """Raise OwnerLimitError when ``owner_id`` may not create another job now."""
        unfinished, result_bytes = self.store.owner_usage(owner_id, UNFINISHED_PHASES)
        who = f"owner {owner_id!r}" if owner_id else "the anonymous owner"
        most_jobs = self.limits.max_jobs_per_owner
        most_bytes = self.limits.max_result_bytes_per_owner
        if most_jobs and unfinished >= most_jobs:
            raise OwnerLimitError(
                f"{who} has {unfinished} unfinished jobs, the most allowed is {most_jobs}; "
                "wait for some to finish, or abort or delete some (DELETE /async/<job id>)")
        if most_bytes and result_bytes >= most_bytes:
            raise OwnerLimitError(
                f"the results of {who} take {result_bytes / 1e6:.1f} MB, the most allowed is "
                f"{most_bytes / 1e6:.1f} MB; delete finished jobs you no longer need "
                "(DELETE /async/<job id>) before creating more")

    def replace_parameters(self, job_id: str, parameters: Sequence[Parameter]) -> None:
        """New parameters for a PENDING job, validated like at creation."""
        uploads = load_uploads(self.store.job_dir(job_id))
        job = self.store.get(job_id)
        # a TAP job stays one: its kind comes from the job list that made it
        kind_name = "tap" if job is not None and job.kind == "tap" else self.choose_kind(
            parameters)
        self.kinds[kind_name].validate(parameters, uploads)
        self.store.replace_parameters(job_id, parameters)
        self.store.update(job_id, kind=kind_name)

    def run(self, job_id: str) -> None:
        """PENDING/HELD -> QUEUED (HELD if the queue is full); elsewhere a no-op."""
        job = self.store.get(job_id)
        if job is None or job.phase not in RUNNABLE_PHASES:
            return
        if self.store.count([Phase.QUEUED]) >= self.limits.max_queued_jobs:
            self.store.change_phase(job_id, Phase.HELD, only_from=RUNNABLE_PHASES)
        elif self.store.change_phase(job_id, Phase.QUEUED, only_from=RUNNABLE_PHASES):
            self._submit(job_id)
        self._notify(job_id)

    def abort(self, job_id: str, message: str | None = None) -> None:
        """Any unfinished phase -> ABORTED, keeping results; finished jobs are left alone."""
        changes: dict[str, object] = {"end_time": format_time(now())}
        if message:
            changes.update(error_type="fatal", error_message=message)
        if self.store.change_phase(job_id, Phase.ABORTED, only_from=ABORTABLE_PHASES, **changes):
            self._notify(job_id)
        with self._guard:
            flag = self._aborts.get(job_id)
        if flag is not None:
            flag.set()

    def delete(self, job_id: str) -> None:
        """Abort the job if it runs, then forget it and its files."""
        self.abort(job_id)
        self.store.delete(job_id)
        self._notify(job_id)

    def set_destruction(self, job_id: str, text: str) -> None:
        """New destruction time, clamped to the configured maximum from now."""
        wanted = parse_time(text)
        latest = now() + timedelta(days=self.limits.default_destruction_days)
        self.store.update(job_id, destruction=format_time(min(wanted, latest)))

    def set_execution_duration(self, job_id: str, seconds: int) -> None:
        """New execution duration; 0 (unlimited) or too long becomes the maximum."""
        ceiling = self.limits.default_execution_duration
        if seconds < 0:
            raise JobParameterError("EXECUTIONDURATION must be a non-negative integer")
        clamped = ceiling if seconds == 0 or seconds > ceiling else seconds
        self.store.update(job_id, execution_duration=clamped)
        job = self.store.get(job_id)
        with self._guard:
            running = self._timers.get(job_id)
        if job is not None and running is not None and job.start_time:
            # a running job keeps its start: the new limit counts from there
            running.cancel()
            elapsed = (now() - parse_time(job.start_time)).total_seconds()
            self._start_timer(job_id, max(0.0, clamped - elapsed))

    async def wait(self, job_id: str, seconds: float, phase: Phase | None) -> JobRecord | None:
        """Block until the job's phase changes, at most ``seconds`` (UWS 1.1 §2.2.1.1).

        Returns at once if the job is not active or not in ``phase``; ``seconds < 0`` means
        as long as allowed (capped by settings.limits.wait_cap_seconds).
        """
        job = self.store.get(job_id)
        if job is None or job.phase not in ACTIVE_PHASES or (phase and job.phase != phase):
            return job
        cap = self.limits.wait_cap_seconds
        timeout = cap if seconds < 0 else min(seconds, cap)
        changed = asyncio.Event()
        self._waiters.setdefault(job_id, set()).add(changed)
        try:
            current = self.store.get(job_id)
            if current is None or current.phase != job.phase:
                return current
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout)
        finally:
            waiters = self._waiters.get(job_id)
            if waiters is not None:
                waiters.discard(changed)
                if not waiters:
                    self._waiters.pop(job_id, None)
        return self.store.get(job_id)

    # -- execution --------------------------------------------------------------------

    def _submit(self, job_id: str) -> None:
        flag = threading.Event()
        with self._guard:
            self._aborts[job_id] = flag
        self._slots.submit(self._execute, job_id, flag)

    def _execute(self, job_id: str, flag: threading.Event) -> None:
        try:
            self._execute_job(job_id, flag)
        except Exception:  # a bug in the machinery: fail the job instead of leaving it
            log.exception("job %s crashed", job_id)
            self.store.change_phase(
                job_id, Phase.ERROR, only_from=[Phase.QUEUED, Phase.EXECUTING],
                end_time=format_time(now()), error_type="fatal",
                error_message="Error: internal failure while running the job",
            )
            self._notify(job_id)
        finally:
            with self._guard:
                self._aborts.pop(job_id, None)
                timer = self._timers.pop(job_id, None)
            if timer is not None:
                timer.cancel()

    def _execute_job(self, job_id: str, flag: threading.Event) -> None:
        job = self.store.get(job_id)
        if job is None or flag.is_set() or self.stopping:
            return
        if not self.store.change_phase(
            job_id, Phase.EXECUTING, only_from=[Phase.QUEUED],
            start_time=format_time(now()), attempts=job.attempts + 1,
        ):
            return
        self._notify(job_id)
        if job.execution_duration > 0:
            self._start_timer(job_id, job.execution_duration)
        context = JobContext(
            job_id=job_id, parameters=self.store.parameters(job_id),
            uploads=load_uploads(self.store.job_dir(job_id)), job_dir=self.store.job_dir(job_id),
            base_url=job.base_url, resources=self.resources, _service=self, _abort=flag,
        )
        context.job_dir.mkdir(parents=True, exist_ok=True)
        outcome, message = Phase.COMPLETED, None
        try:
            self.kinds[job.kind].run(context)
        except JobFailed as failure:
            outcome, message = Phase.ERROR, str(failure)
        except Exception as failure:
            outcome, message = Phase.ERROR, failure_message(job_id, failure)
        if self.stopping and not flag.is_set():
            # left EXECUTING on purpose: recover() re-queues it at the next start; a clean
            # shutdown is not counted as a failed attempt
            self.store.update(job_id, attempts=job.attempts)
            return
        transient = bool(message) and message.startswith("ServiceUnavailable:")
        finished = self.store.change_phase(
            job_id, outcome, only_from=[Phase.EXECUTING], end_time=format_time(now()),
            error_type=("transient" if transient else "fatal") if message else None,
            error_message=message,
        )
        log.info("job %s (runid=%s) %s%s", job_id, job.run_id,
                 outcome.value if finished else "stopped after abort",
                 f": {message}" if message else "")
        self._notify(job_id)

    def _start_timer(self, job_id: str, seconds: float) -> None:
        timer = threading.Timer(seconds, self._exceeded, (job_id,))
        timer.daemon = True
        with self._guard:
            self._timers[job_id] = timer
        timer.start()

    def _exceeded(self, job_id: str) -> None:
        job = self.store.get(job_id)
        if job is not None:
            self.abort(job_id, f"Error: the job exceeded its execution duration of "
                       f"{job.execution_duration} s and was aborted; results so far are kept")

    def _notify(self, job_id: str) -> None:
        """Wake every blocking WAIT on this job (callable from any thread)."""
        if self._loop is None or self._loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._wake, job_id)

    def _wake(self, job_id: str) -> None:
        for changed in self._waiters.get(job_id, ()):
            changed.set()
