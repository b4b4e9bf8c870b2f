"""The UWS job lifecycle: create, run on a pool of job slots, abort, wait, expire, recover.

HTTP lives in ``protocols/uws.py``; what a job *does* lives in job kinds (``soda_job.py``,
``batch.py``). A kind validates its parameters at creation and later runs in a worker
thread with a ``JobContext`` that reports progress and results and says when to stop.

Several server processes may share one job store (``serve --workers N``): every process
creates, changes and waits on jobs; only the holder of the runner lock
(``coordination.py``) runs, recovers and sweeps them. Each process looks for changes the
others made every ``WATCH_SECONDS``: the runner for jobs to start, aborts and new execution
durations, every process for phase changes that end a blocking WAIT.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import secrets
import shutil
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from vo_service.config import Settings
from vo_service.engine.executors import LocalExecutor
from vo_service.errors import storage_failure
from vo_service.jobs.context import (
    JobContext,
    JobFailed,
    JobKind,
    JobParameterError,
    OwnerLimitError,
)
from vo_service.jobs.coordination import RunnerLock, StoreChanges
from vo_service.jobs.job_coverage import COVERAGE_RESULT, draw_job_coverage
from vo_service.jobs.job_files import (
    Upload,
    load_uploads,
    remove_result_files,
    remove_uploads,
    result_location,
    save_uploads,
)
from vo_service.jobs.phases import (
    ABORTABLE_PHASES,
    ACTIVE_PHASES,
    RUNNABLE_PHASES,
    Phase,
)
from vo_service.jobs.reserve import SpaceReserve
from vo_service.jobs.stamp_directory import find_result
from vo_service.jobs.store import (
    JobRecord,
    JobStore,
    Parameter,
    ResultFile,
    format_time,
    now,
    parse_time,
)

log = logging.getLogger(__name__)
__all__ = ["JobContext", "JobFailed", "JobKind", "JobParameterError", "JobService",
           "OwnerLimitError", "Upload"]

# Jobs that count against an owner's max_jobs_per_owner.
UNFINISHED_PHASES = (Phase.PENDING, Phase.QUEUED, Phase.EXECUTING, Phase.HELD, Phase.SUSPENDED)
# A job interrupted by a restart this many times is failed instead of re-queued, so that
# a job that kills the process cannot loop forever.
MAX_ATTEMPTS = 2
SWEEP_SECONDS = 60.0
# How often a process looks for job changes made by the other server processes: the delay
# before the runner starts a job queued elsewhere, and at most before a WAIT answered
# elsewhere notices a phase change.
WATCH_SECONDS = 0.05
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
        self.reserve = SpaceReserve.of_state(settings)
        self.store = JobStore(settings.jobs_dir, self.reserve)
        self.kinds = dict(kinds)
        self.choose_kind = choose_kind
        self.resources = resources
        self.stopping = False
        self._slots = LocalExecutor(self.limits.job_workers, name="vo-uws")
        self._aborts: dict[str, threading.Event] = {}
        self._timers: dict[str, threading.Timer] = {}
        self._timed: dict[str, int] = {}  # the execution duration each timer enforces
        # blocking WAITs: job id -> {their event: the phase they wait to change}
        self._waiters: dict[str, dict[asyncio.Event, Phase]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._runner_lock = RunnerLock(settings.jobs_dir / "runner.lock")
        self._changes = StoreChanges(settings.jobs_dir / "jobs.sqlite")
        self._guard = threading.Lock()

    # -- lifecycle --------------------------------------------------------------------

    @property
    def is_runner(self) -> bool:
        """Whether this process runs the jobs (holds the runner lock)."""
        return self._runner_lock.held

    async def start(self) -> None:
        """Startup hook: become the runner if no other process is (then recover jobs a
        previous process left running and start the sweep); watch the others' changes."""
        self._loop = asyncio.get_running_loop()
        if self._runner_lock.acquire():
            self.recover()
            self._sweep_logged()
            self._sweeper = asyncio.create_task(self._sweep_forever())
        self._watcher = asyncio.create_task(self._watch_forever())

    async def stop(self) -> None:
        """Shutdown hook: stop jobs at their next check (they resume after a restart)."""
        self.stopping = True
        for task in (self._watcher, self._sweeper):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for timer in list(self._timers.values()):
            timer.cancel()
        drained = False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.to_thread(self._slots.shutdown, True, cancel_futures=True), 30
            )
            drained = True
        close = getattr(self.resources, "close", None)
        if close is not None:
            await asyncio.to_thread(close)
        if self.store.flush_unsaved():
            log.error("%d job changes could not be written (the disk is full); those jobs "
                      "are resumed or failed again at the next start", len(self.store.unsaved))
        if drained:  # else the lock goes with the process, once its job threads ended
            self._runner_lock.release()
        self._changes.close()
        self.store.close()

    def recover(self) -> None:
        """Re-queue jobs that were QUEUED or EXECUTING when the last process ended; a job
        that cannot be re-queued for lack of space ends in ERROR saying so."""
        for job in self.store.list(phases=[Phase.QUEUED, Phase.EXECUTING]):
            try:
                self._recover(job)
            except Exception as exc:
                if storage_failure(exc) is None:
                    raise
                self.store.change_phase(
                    job.job_id, Phase.ERROR, only_from=[Phase.QUEUED, Phase.EXECUTING],
                    end_time=format_time(now()), error_type="transient",
                    error_message=failure_message(job.job_id, exc))

    def _recover(self, job: JobRecord) -> None:
        if job.phase is Phase.EXECUTING and job.attempts >= MAX_ATTEMPTS:
            self.store.change_phase(
                job.job_id, Phase.ERROR, only_from=[Phase.EXECUTING],
                end_time=format_time(now()), error_type="fatal",
                error_message=f"Error: the service restarted {job.attempts} times while "
                "this job was executing; it was stopped. Create it again, perhaps "
                "with fewer targets.",
            )
            return
        self.store.clear_results(job.job_id)
        self._forget_cached_bundle(job.job_id)
        remove_result_files(self.store.job_dir(job.job_id))
        self.store.change_phase(
            job.job_id, Phase.QUEUED, only_from=[job.phase],
            start_time=None, progress_done=0, progress_total=0,
        )
        log.info("re-queued job %s after a restart", job.job_id)
        self._submit(job.job_id)

    def sweep(self) -> None:
        """Write job changes a full disk refused, destroy jobs whose destruction time has
        passed (with their files), forget orphans, and make the space reserve again."""
        unsaved = self.store.flush_unsaved()
        for job_id in self.store.expired(format_time(now())):
            self.delete(job_id)
        with self._guard:
            running = list(self._aborts)
        self.store.forget_orphans(running)
        if (cache := self._cache()) is not None:  # links of jobs deleted while they ran
            for group in cache.linked_groups():
                if group not in running and self.store.get(group) is None:
                    cache.forget_linked(group)
        self.store.forget_stamp_outcomes(OUTCOME_DAYS * 86400)
        if not unsaved:
            self.reserve.fill()

    def _sweep_logged(self) -> None:
        try:
            self.sweep()
        except Exception as exc:  # keep sweeping; a failed sweep is retried next time
            if storage_failure(exc) is None:
                log.exception("job sweep failed")
            else:
                log.warning("job sweep stopped: %s", exc)

    async def _watch_forever(self) -> None:
        """Take over as runner when the runner's process ended; follow the store's changes
        made by other processes (jobs to start, aborts, phase changes for WAITs)."""
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            try:
                if not self.is_runner and self._runner_lock.acquire():
                    log.info("process %d takes over running the jobs", os.getpid())
                    await asyncio.to_thread(self.recover)
                    self._sweeper = asyncio.create_task(self._sweep_forever())
                if self._changes.changed():
                    phases = await asyncio.to_thread(self._follow_changes, list(self._waiters))
                    self._wake_changed(phases)
            except Exception:  # keep watching; the next round retries
                log.exception("following the job store failed")

    def _follow_changes(self, waited: list[str]) -> dict[str, Phase | None]:
        """Start queued jobs and stop aborted or deleted ones (runner only); the phases of
        the ``waited`` jobs (None: deleted)."""
        if self.is_runner and not self.stopping:
            for job in self.store.list(phases=[Phase.QUEUED]):
                self._submit(job.job_id)
            with self._guard:
                running = dict(self._aborts)
            for job_id, flag in running.items():
                job = self.store.get(job_id)
                if job is None or job.phase not in (Phase.QUEUED, Phase.EXECUTING):
                    flag.set()  # aborted or deleted through another process
                elif self._timed.get(job_id, job.execution_duration) != job.execution_duration:
                    self._retime(job)  # EXECUTIONDURATION changed through another process
        phases: dict[str, Phase | None] = {}
        for job_id in waited:
            job = self.store.get(job_id)
            phases[job_id] = None if job is None else job.phase
        return phases

    def _wake_changed(self, phases: Mapping[str, Phase | None]) -> None:
        """Wake the WAITs whose job left the phase they wait on."""
        for job_id, phase in phases.items():
            for changed, waited_phase in list(self._waiters.get(job_id, {}).items()):
                if phase != waited_phase:
                    changed.set()

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            await asyncio.to_thread(self._sweep_logged)

    # -- client actions ---------------------------------------------------------------

    def create(
        self, parameters: Sequence[Parameter], uploads: Mapping[str, tuple[str | None, bytes]],
        *, base_url: str, run_id: str | None = None, owner_id: str | None = None,
        ready: bool = False,
        kind: str | None = None,
    ) -> JobRecord:
        """Validate and store a new PENDING job (of ``kind``, else chosen from the
        parameters); JobParameterError (or a DALI UsageError) for a bad value,
        OwnerLimitError if its owner already has too many jobs or result bytes. With
        ``ready`` (RUN in the creating request) it must also be complete."""
        self.check_owner_limits(owner_id)
        if not self.reserve.fill():  # the disk is (nearly) full: no new work
            raise OSError(errno.ENOSPC, "the disk of the job directory has no room for the "
                          "space reserve of the job database; no new jobs until space is freed")
        kind_name = kind or self.choose_kind(parameters)
        kind = self.kinds[kind_name]
        job_id = secrets.token_hex(8)
        job_dir = self.store.job_dir(job_id)
        try:  # a half-saved upload (full disk) goes too
            saved = save_uploads(job_dir, uploads)
            estimate = kind.validate(parameters, saved)
            if ready:
                kind.check_ready(parameters, saved)
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

    def replace_parameters(
        self, job_id: str, parameters: Sequence[Parameter],
        uploads: Mapping[str, tuple[str | None, bytes]] | None = None,
    ) -> None:
        """New parameters (and uploaded files, replacing those of the same part name) for a
        PENDING job, each value checked like at creation; completeness waits for RUN."""
        job_dir = self.store.job_dir(job_id)
        before = load_uploads(job_dir)
        added = save_uploads(job_dir, uploads or {})
        job = self.store.get(job_id)
        # a TAP job stays one: its kind comes from the job list that made it
        kind_name = "tap" if job is not None and job.kind == "tap" else self.choose_kind(
            parameters)
        try:
            self.kinds[kind_name].validate(parameters, {**before, **added})
        except BaseException:
            remove_uploads(added)
            raise
        remove_uploads({name: upload for name, upload in before.items() if name in added})
        self.store.replace_parameters(job_id, parameters)
        self.store.update(job_id, kind=kind_name)

    def run(self, job_id: str) -> None:
        """PENDING/HELD -> QUEUED (HELD if the queue is full); elsewhere a no-op.

        A PENDING job must be complete: its kind's ``check_ready`` raises a UsageError
        naming what is missing, and the job stays PENDING.
        """
        job = self.store.get(job_id)
        if job is None or job.phase not in RUNNABLE_PHASES:
            return
        if job.phase is Phase.PENDING:
            self.kinds[job.kind].check_ready(self.store.parameters(job_id),
                                             load_uploads(self.store.job_dir(job_id)))
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
        """Abort the job if it runs, then forget it and its files (its stamps in the
        cutout cache too: they lie in its bundle)."""
        self.abort(job_id)
        self._forget_cached_bundle(job_id)
        self.store.delete(job_id)
        self._notify(job_id)

    def _cache(self) -> Any:
        """The cutout cache the jobs share, if any."""
        return getattr(self.resources, "cache", None)

    def _forget_cached_bundle(self, job_id: str) -> None:
        """Let the cutout cache drop the job's bundle, which it links its new stamps from
        (:meth:`vo_service.cache.CutoutCache.put_linked`)."""
        if (cache := self._cache()) is not None:
            cache.forget_linked(job_id)

    def result_file(self, job_id: str, result_id: str) -> tuple[ResultFile, Path] | None:
        """A result and the file holding it (whole, or its byte range); None if there is
        no such result or its file is gone. A catalog job's MOC is drawn from its manifest
        on its first request (:func:`vo_service.jobs.job_coverage.draw_job_coverage`)."""
        result = find_result(self.store, job_id, result_id)
        if result is None:
            return None
        job_dir = self.store.job_dir(job_id)
        if result_id == COVERAGE_RESULT and not result.size:
            try:
                size = draw_job_coverage(job_dir, self.resources.index)
            except FileNotFoundError:  # the job was deleted meanwhile
                return None
            result = replace(result, size=size)
            self.store.set_result_size(job_id, result_id, size)
        path = result_location(job_dir, result)
        return None if path is None else (result, path)

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
        if job is not None:
            self._retime(job)

    def _retime(self, job: JobRecord) -> None:
        """Restart the timer of a job running here for its current execution duration."""
        if job.start_time:
            # a running job keeps its start: the new limit counts from there
            elapsed = (now() - parse_time(job.start_time)).total_seconds()
            self._start_timer(job.job_id, max(0.0, job.execution_duration - elapsed),
                              job.execution_duration, replacing=True)

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
        self._waiters.setdefault(job_id, {})[changed] = job.phase
        try:
            current = self.store.get(job_id)
            if current is None or current.phase != job.phase:
                return current
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout)
        finally:
            waiters = self._waiters.get(job_id)
            if waiters is not None:
                waiters.pop(changed, None)
                if not waiters:
                    self._waiters.pop(job_id, None)
        return self.store.get(job_id)

    # -- execution --------------------------------------------------------------------

    def _submit(self, job_id: str) -> None:
        """Hand a QUEUED job to a job slot, once; elsewhere than in the runner a no-op (the
        runner finds the job in the store)."""
        if not self.is_runner:
            return
        flag = threading.Event()
        with self._guard:
            if job_id in self._aborts:
                return
            self._aborts[job_id] = flag
        self._slots.submit(self._execute, job_id, flag)

    def _execute(self, job_id: str, flag: threading.Event) -> None:
        try:
            self._execute_job(job_id, flag)
        except Exception as exc:  # the machinery failed: fail the job instead of leaving it
            storage = storage_failure(exc) is not None  # e.g. no room to record EXECUTING
            self.store.change_phase(
                job_id, Phase.ERROR, only_from=[Phase.QUEUED, Phase.EXECUTING],
                end_time=format_time(now()), error_type="transient" if storage else "fatal",
                error_message=failure_message(job_id, exc) if storage
                else "Error: internal failure while running the job",
            )
            if not storage:
                log.exception("job %s crashed", job_id)
            self._notify(job_id)
        finally:
            with self._guard:
                self._aborts.pop(job_id, None)
                self._timed.pop(job_id, None)
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
            self._start_timer(job_id, job.execution_duration, job.execution_duration)
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
            if flag.is_set() and self.store.get(job_id) is None:
                # deleted while it ran: its row and folder went under its feet, as asked
                log.info("job %s was deleted while it ran (%s: %s)", job_id,
                         type(failure).__name__, failure)
                return
            outcome, message = Phase.ERROR, failure_message(job_id, failure)
        if self.stopping and not flag.is_set():
            # left EXECUTING on purpose: recover() re-queues it at the next start; a clean
            # shutdown is not counted as a failed attempt (if the disk lets us say so)
            with contextlib.suppress(sqlite3.OperationalError):
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

    def _start_timer(self, job_id: str, seconds: float, duration: int, *,
                     replacing: bool = False) -> None:
        """Abort the job in ``seconds``, enforcing an execution duration of ``duration``;
        ``replacing``: only if a timer of the job runs, which is cancelled."""
        timer = threading.Timer(seconds, self._exceeded, (job_id,))
        timer.daemon = True
        with self._guard:
            if replacing:
                running = self._timers.get(job_id)
                if running is None:
                    return
                running.cancel()
            self._timers[job_id] = timer
            self._timed[job_id] = duration
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
