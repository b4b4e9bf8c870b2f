"""UWS 1.1 execution phases and which of them a job can leave (UWS 1.1 §2.2.3)."""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    """The execution phase of a job, spelled as in the UWS schema."""

    PENDING = "PENDING"
    QUEUED = "QUEUED"
    EXECUTING = "EXECUTING"
    COMPLETED = "COMPLETED"
    ERROR = "ERROR"
    ABORTED = "ABORTED"
    UNKNOWN = "UNKNOWN"
    HELD = "HELD"
    SUSPENDED = "SUSPENDED"
    ARCHIVED = "ARCHIVED"


# Phases in which a job can still change on its own or by a client's RUN; a blocking
# WAIT may only block in these (UWS 1.1 §2.2.1.1).
ACTIVE_PHASES = frozenset({Phase.PENDING, Phase.QUEUED, Phase.EXECUTING})

# Phases a job never leaves (apart from ARCHIVED at destruction).
FINAL_PHASES = frozenset({Phase.COMPLETED, Phase.ERROR, Phase.ABORTED, Phase.ARCHIVED})

# Phases from which a client's RUN starts the job.
RUNNABLE_PHASES = frozenset({Phase.PENDING, Phase.HELD})

# Phases an ABORT moves to ABORTED; ABORT elsewhere is a harmless no-op (DESIGN: 303).
ABORTABLE_PHASES = frozenset(
    {Phase.PENDING, Phase.QUEUED, Phase.EXECUTING, Phase.HELD, Phase.SUSPENDED}
)


def parse_phase(text: str) -> Phase:
    """The phase named by ``text`` (case-insensitive); ValueError for anything else."""
    try:
        return Phase(text.strip().upper())
    except ValueError:
        names = ", ".join(p.value for p in Phase)
        raise ValueError(f"unknown phase {text!r}; use one of {names}") from None
