"""What the fairy.v1 contract says about jobs beyond its messages (hand-written, not generated).

Which states are terminal (a job in one never changes again, and WatchJob ends there) and how a job id is
minted when the client leaves ``EditRequest.job_id`` empty. The server and every editor front end take
both from here, so there is one answer to each.
"""

from __future__ import annotations

import uuid

from . import fairy_pb2

__all__ = ["TERMINAL_STATES", "TERMINAL_STATE_NAMES", "is_terminal", "new_job_id"]

TERMINAL_STATES = frozenset({fairy_pb2.JOB_STATE_DONE, fairy_pb2.JOB_STATE_FAILED, fairy_pb2.JOB_STATE_CANCELLED})
# The same states by name without the enum prefix ("DONE", "FAILED", "CANCELLED"), as the server's job store
# and the editors' job lists spell them.
TERMINAL_STATE_NAMES = frozenset(fairy_pb2.JobState.Name(state).removeprefix("JOB_STATE_") for state in TERMINAL_STATES)


def is_terminal(state: int) -> bool:
    return state in TERMINAL_STATES


def new_job_id() -> str:
    """A fresh job id: 32 lowercase hex digits (a random UUID), within the server's job id rules."""
    return uuid.uuid4().hex
