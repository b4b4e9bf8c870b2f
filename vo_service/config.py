"""Settings of a vo-service instance, read from a TOML file and environment variables.

Precedence, lowest first: built-in defaults, the TOML file (``--config`` or
``VO_SERVICE_CONFIG``), then ``VO_SERVICE_*`` environment variables. Every setting is
documented in the README ("Configuration").
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

ENV_PREFIX = "VO_SERVICE_"
EXECUTORS = ("local", "processes", "dask")  # where catalog jobs cut (Settings.executor)


@dataclass(frozen=True)
class Limits:
    """Limits that protect the service from requests that would exhaust it."""

    max_upload_rows: int = 10_000
    max_upload_columns: int = 1_000
    max_upload_bytes: int = 50 * 1024 * 1024
    max_cutout_pixels: int = 4096 * 4096
    max_sync_concurrency: int = 16
    # Working memory of the sync cutouts running at once (estimated from their pixel
    # boxes before any pixel is read); beyond it 503 + Retry-After.
    sync_memory_bytes: int = 2 * 1024**3
    max_queued_jobs: int = 64
    job_workers: int = 2
    max_job_workers: int = 16
    wait_cap_seconds: float = 55.0
    default_execution_duration: int = 3600
    default_destruction_days: float = 7.0
    cache_bytes: int = 2 * 1024**3
    # The cutout cache leaves this much free on its file system: it evicts, and refuses
    # (503 ServiceUnavailable) a file that would still not fit.
    cache_min_free_bytes: int = 64 * 1024**2
    # A file of this size kept in state_dir/jobs and deleted when the disk is full, so that
    # the job database can still record failed, aborted and deleted jobs (0: none).
    state_reserve_bytes: int = 16 * 1024**2
    maxrec_default: int = 10_000
    # Per owner (token holder; everyone shares the anonymous owner when auth is off):
    # unfinished jobs (PENDING, QUEUED, EXECUTING, HELD) and bytes of kept results.
    # 0 means no limit.
    max_jobs_per_owner: int = 32
    max_result_bytes_per_owner: int = 20 * 1024**3
    # Half-sent requests: the request head must arrive within header_timeout_seconds; a
    # body may pause at most body_timeout_seconds between two pieces. Then 408, closed.
    header_timeout_seconds: float = 30.0
    body_timeout_seconds: float = 60.0


@dataclass(frozen=True)
class Settings:
    """Everything an instance needs to know about its data, state and public face."""

    data_roots: tuple[Path, ...] = ()
    state_dir: Path = Path("state")
    base_url: str | None = None
    authority: str = "vo-service.example"
    mapping_file: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    # Server processes answering HTTP on host:port over the same state directory (each
    # with its own event loop and GIL); one of them runs the jobs.
    workers: int = 1
    # Where the per-image batches of catalog jobs run: "processes" (worker processes of
    # this machine, ``worker_processes`` of them; 0: one per CPU core), "local" (threads of
    # this process) or "dask" (a dask.distributed cluster at ``scheduler``, e.g.
    # tcp://host:8786).
    executor: str = "processes"
    scheduler: str | None = None
    worker_processes: int = 0
    # Bearer tokens: a TOML file {sha256 hex of token = owner name} and/or
    # "owner1:token1,owner2:token2" (VO_SERVICE_TOKENS). None of both = no authentication.
    tokens_file: Path | None = None
    tokens: str | None = field(default=None, repr=False)  # secrets: never in logs
    # TAP UPLOAD=name,http(s)://...: the service would fetch URLs for its clients; off by
    # default (inline uploads, param:<part>, always work).
    tap_upload_urls: bool = False
    limits: Limits = field(default_factory=Limits)

    @property
    def index_path(self) -> Path:
        """The SQLite archive index."""
        return self.state_dir / "index.sqlite"

    @property
    def cache_dir(self) -> Path:
        """Cached cutouts and their SQLite index."""
        return self.state_dir / "cache"

    @property
    def jobs_dir(self) -> Path:
        """UWS job database and job result files."""
        return self.state_dir / "jobs"


def _coerce(value: str, like: object) -> object:
    """Convert an environment string to the type of the default it replaces."""
    if isinstance(like, bool):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    if isinstance(like, int):
        return int(value)
    if isinstance(like, float):
        return float(value)
    return value


def _settings_from_mapping(values: Mapping[str, object], base: Settings) -> Settings:
    """Apply a mapping of setting names (TOML keys, lower case) to ``base``."""
    changes: dict[str, object] = {}
    limit_changes: dict[str, object] = {}
    for key, value in values.items():
        if key == "limits":
            if not isinstance(value, Mapping):
                raise ValueError("[limits] must be a table")
            limit_changes.update(value)
        elif key == "data_roots":
            roots = value.split(os.pathsep) if isinstance(value, str) else value
            changes[key] = tuple(Path(r).expanduser() for r in roots if str(r))
        elif key in {"state_dir", "mapping_file", "tokens_file"}:
            changes[key] = Path(str(value)).expanduser() if value else None
        elif key in {f.name for f in fields(Settings)}:
            changes[key] = value
        else:
            raise ValueError(f"unknown setting {key!r}")
    limit_names = {f.name for f in fields(Limits)}
    unknown = set(limit_changes) - limit_names
    if unknown:
        raise ValueError(f"unknown limit(s): {', '.join(sorted(unknown))}")
    if limit_changes:
        changes["limits"] = replace(base.limits, **limit_changes)
    workers = changes.get("workers", base.workers)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a whole number of processes >= 1, got {workers!r}")
    if changes.get("executor", base.executor) not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(map(repr, EXECUTORS))}, "
                         f"got {changes['executor']!r}")
    processes = changes.get("worker_processes", base.worker_processes)
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 0:
        raise ValueError("worker_processes must be a whole number >= 0 (0: one per CPU "
                         f"core), got {processes!r}")
    return replace(base, **changes)


def load_settings(
    config_file: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read settings from defaults, an optional TOML file and the environment.

    Environment variables are ``VO_SERVICE_<NAME>`` for top-level settings (``DATA_ROOTS``
    is a list separated by ``os.pathsep``) and ``VO_SERVICE_LIMIT_<NAME>`` for limits.
    """
    environ = os.environ if environ is None else environ
    settings = Settings()
    config_file = config_file or environ.get(ENV_PREFIX + "CONFIG")
    if config_file:
        with open(config_file, "rb") as handle:
            settings = _settings_from_mapping(tomllib.load(handle), settings)

    env_values: dict[str, object] = {}
    env_limits: dict[str, object] = {}
    defaults = Settings()
    for f in fields(Settings):
        raw = environ.get(ENV_PREFIX + f.name.upper())
        if raw is not None and f.name != "limits":
            like = getattr(defaults, f.name)
            env_values[f.name] = raw if f.name in {"data_roots", "state_dir", "mapping_file",
                                                   "tokens_file"} \
                else _coerce(raw, like if like is not None else "")
    for f in fields(Limits):
        raw = environ.get(ENV_PREFIX + "LIMIT_" + f.name.upper())
        if raw is not None:
            env_limits[f.name] = _coerce(raw, getattr(defaults.limits, f.name))
    if env_limits:
        env_values["limits"] = env_limits
    return _settings_from_mapping(env_values, settings)


def settings_to_json(settings: Settings) -> str:
    """``settings`` as JSON that :func:`settings_from_json` reads back equal (how
    ``serve --workers N`` hands them to its worker processes)."""
    return json.dumps(asdict(settings),
                      default=lambda value: str(value) if isinstance(value, Path) else value)


def settings_from_json(text: str) -> Settings:
    """The settings written by :func:`settings_to_json`."""
    return _settings_from_mapping(json.loads(text), Settings())
