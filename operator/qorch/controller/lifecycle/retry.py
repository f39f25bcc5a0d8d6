"""Rule 4, retry: after a failed attempt, another one after a backoff, or the dead-letter queue.

Backoff doubles from `backoffSeconds` up to `maxBackoffSeconds`, with "equal
jitter" (between half and all of the doubled delay) so that tasks failing
together do not come back together. The jitter is drawn from the attempt's
identity, not from a random source, so a rule gives the same answer twice.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from qorch.api.enums import AttemptOutcome, Reason
from qorch.controller import documents

if TYPE_CHECKING:
    from qorch.controller.documents import StatusChange
    from qorch.controller.records import Retry, TaskRecord

__all__ = ["after_failure", "backoff", "jitter"]


def jitter(task_uid: str, attempt: int) -> float:
    """A stable number in [0, 1) for one attempt."""
    digest = hashlib.blake2b(f"{task_uid}/{attempt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


def backoff(retry: Retry, failed_attempts: int, spread: float) -> float:
    """Seconds to wait after `failed_attempts` failures (0 when retries are immediate)."""
    if retry.backoff_seconds <= 0 or failed_attempts < 1:
        return 0.0
    doubled = min(float(retry.max_backoff_seconds), retry.backoff_seconds * 2.0 ** (failed_attempts - 1))
    return doubled * (0.5 + 0.5 * spread)


def after_failure(task: TaskRecord, *, retry: Retry, now: float, reason: Reason, message: str) -> StatusChange:
    """The current attempt, which started, failed for `reason`: retry it (maybe later), or give up."""
    started = task.counted - task.attempts_before  # a redrive from the dead-letter queue starts a fresh budget
    outcome = AttemptOutcome.LOST if reason is Reason.AGENT_LOST else AttemptOutcome.FAILED
    if started >= retry.max_attempts:
        return documents.dead_lettered(
            task, f"{reason}: {message} ({started} of {retry.max_attempts} attempts made)", outcome=outcome
        )
    delay = backoff(retry, started, jitter(task.uid, task.attempt))
    when = f"in {delay:.1f}s" if delay > 0 else "now"
    return documents.retrying(
        task,
        reason,
        f"{message}; attempt {started + 1} of {retry.max_attempts} {when}",
        at=now + delay if delay > 0 else None,
        outcome=outcome,
    )
