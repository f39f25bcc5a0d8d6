"""The agent's side of the protocol: claim, refuse and finish attempts, each compare-and-set.

Every write carries the resourceVersion of the body it was decided on. On a
409 the agent reads the task again and decides again: a claim goes ahead
only if the assignment still names it for the same attempt of the same Task
incarnation (uid), and a finish only if that attempt is still current. So an
agent whose assignment was withdrawn never starts it, and a zombie's late
finish never lands on a newer attempt. A write whose outcome is unknown
(timeout, reset) is settled by reading the task back.

Used by the simulated pool of `qorch dev` and by the agent runtime.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from qorch.api import constants, protocol
from qorch.controller.kube import MERGE_PATCH, ApiError, KubeError, Resource

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from qorch.api.protocol import AttemptId
    from qorch.controller.kube import KubeApi

__all__ = ["TASKS", "Attempts", "Claim", "UnsettledClaimError"]

TASKS = Resource(constants.GROUP, constants.VERSION, "tasks")
_CONFLICT, _NOT_FOUND, _TOO_MANY = 409, 404, 429
_TRIES = 5
_LANDED, _LOST, _PENDING = "landed", "lost", "pending"


@dataclass(frozen=True, slots=True)
class Claim:
    """An attempt this agent holds."""

    attempt: AttemptId
    agent: str
    task: str  # the Task's name
    started_at: str


class UnsettledClaimError(KubeError):
    """A claim whose outcome the apiserver never told: it may have landed, or may yet."""

    def __init__(self, claim: Claim, resource_version: str) -> None:
        """Remember the claim and the version it was sent against."""
        super().__init__(f"claim of {claim.attempt} by {claim.agent}: outcome unknown")
        self.claim = claim
        self.resource_version = resource_version


class Attempts:
    """Claims and reports the attempts of one namespace's tasks."""

    def __init__(self, api: KubeApi, namespace: str, *, seen: Callable[[dict[str, Any]], None] | None = None) -> None:
        """Bind to a namespace. `seen` gets every Task body our own writes return (read your writes)."""
        self._api = api
        self._namespace = namespace
        self._seen = seen

    async def _read(self, name: str) -> dict[str, Any] | None:
        try:
            body = await self._api.call("GET", TASKS.path(self._namespace, name))
        except ApiError as exc:
            if exc.status == _NOT_FOUND:
                return None
            raise
        if self._seen is not None:
            self._seen(body)
        return body

    async def _patch(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = await self._api.call(
            "PATCH",
            TASKS.path(self._namespace, name, "status"),
            query={"fieldManager": constants.AGENT_FIELD_MANAGER},
            body=body,
            content_type=MERGE_PATCH,
        )
        if self._seen is not None:
            self._seen(answer)
        return answer

    async def claim(self, task: dict[str, Any], agent: str) -> Claim | None:
        """Claim the attempt `task` assigns to `agent`; None when it is not (or no longer) ours to run.

        Raises `UnsettledClaimError` when, after every try, the apiserver never said whether the
        claim landed: the caller holds the slot and asks `settle` later.
        """
        attempt = protocol.claimable(task, agent)
        if attempt is None:
            return None
        # One startedAt for the whole claim: a try whose answer was lost is recognised by it.
        claim = Claim(attempt, agent, str(task["metadata"]["name"]), protocol.timestamp())
        body: dict[str, Any] | None = task
        pending: str | None = None  # the version of a claim that may yet land
        for tries in range(_TRIES):
            if body is None or protocol.claimable(body, agent) != attempt:
                return None
            version = str(body["metadata"]["resourceVersion"])
            try:
                answered = await self._send(claim, version)
            except KubeError as exc:
                if pending is not None:  # an earlier try may still land: the question stays open
                    raise UnsettledClaimError(claim, pending) from exc
                raise
            if answered is not None:
                return claim if answered == _LANDED else None
            await _backoff(tries)
            try:
                outcome, body = await self._settle(claim, version)
            except KubeError as exc:
                raise UnsettledClaimError(claim, version) from exc
            if outcome == _LANDED:
                return claim
            # Pending: the same patch goes again (idempotent). Lost: decided again on the fresh body.
            pending = version if outcome == _PENDING else None
        if pending is not None:
            raise UnsettledClaimError(claim, pending)
        return None

    async def _send(self, claim: Claim, version: str) -> str | None:
        """One compare-and-set claim: landed, lost (the task is gone), or None (a conflict, or no answer)."""
        try:
            await self._patch(claim.task, _claim_patch(claim, version))
        except ApiError as exc:
            if exc.status == _NOT_FOUND:
                return _LOST
            if exc.status not in (_CONFLICT, _TOO_MANY) and exc.definite:
                raise
        except KubeError:
            pass  # the claim may have landed: the task says whether
        else:
            return _LANDED
        return None

    async def settle(self, unsettled: UnsettledClaimError) -> bool | None:
        """Whether an unsettled claim landed: True, False (it never will), or None (still unknown)."""
        claim, version = unsettled.claim, unsettled.resource_version
        try:
            outcome, _ = await self._settle(claim, version)
            if outcome == _PENDING:  # not applied yet: the same patch again, so the question gets an answer
                answered = await self._send(claim, version)
                outcome, _ = (answered, None) if answered is not None else await self._settle(claim, version)
        except KubeError:
            return None
        return {_LANDED: True, _LOST: False}.get(outcome)

    async def _settle(self, claim: Claim, version: str) -> tuple[str, dict[str, Any] | None]:
        """Read the task back after a claim patched on `version` whose answer was lost.

        Landed when the task shows our startedAt. Lost (it never will land) when the
        task moved past `version`, so the precondition can no longer hold, or is gone.
        Otherwise pending: the patch may yet be applied, and sending the same patch
        again is safe (same version, same startedAt).
        """
        fresh = await self._read(claim.task)
        if fresh is None:
            return _LOST, None
        if _landed(fresh, claim.attempt, claim.agent, claim.started_at):
            return _LANDED, fresh
        if str(fresh["metadata"]["resourceVersion"]) != version:
            return _LOST, fresh
        return _PENDING, fresh

    async def refuse(self, task: dict[str, Any], agent: str, *, reason: str, message: str) -> bool:
        """Decline the attempt `task` assigns to `agent` without running it."""
        attempt = protocol.claimable(task, agent)
        if attempt is None:
            return False
        patch = protocol.refuse_patch(
            attempt,
            agent=agent,
            resource_version=task["metadata"]["resourceVersion"],
            reason=reason,
            message=message,
        )
        try:
            await self._patch(str(task["metadata"]["name"]), patch)
        except KubeError:
            return False  # the operator re-decides on its own; a lost refusal costs nothing
        return True

    async def finish(
        self, claim: Claim, *, result: str = "", error: str = "", known: Mapping[str, Any] | None = None
    ) -> bool:
        """Report the end of a claimed attempt; False when it is no longer current (nothing written).

        `known`, the task as the caller's watch last saw it, saves the read when it is
        fresh; when it is not, compare-and-set refuses the patch and the task is read.
        Raises KubeError when the apiserver could not be reached for every try: the
        report is still owed, and the caller tries again later.
        """
        failure: KubeError | None = None
        for tries in range(_TRIES):
            if tries:
                await _backoff(tries - 1)
            fresh = known if not tries and _still_current(known, claim) else None
            try:
                body = fresh if fresh is not None else await self._read(claim.task)
            except KubeError as exc:
                failure = exc
                continue
            if body is not None and _landed(body, claim.attempt, claim.agent, claim.started_at, finished=True):
                return True  # an earlier try whose answer we lost did land
            if body is None or protocol.current(body, claim.agent) != claim.attempt:
                return False  # withdrawn (the agent was judged lost), or a recreated Task
            patch = protocol.finish_patch(
                claim.attempt,
                agent=claim.agent,
                resource_version=body["metadata"]["resourceVersion"],
                started_at=claim.started_at,
                result=result,
                error=error,
            )
            try:
                await self._patch(claim.task, patch)
            except ApiError as exc:
                if exc.status not in (_CONFLICT, _NOT_FOUND) and exc.definite:
                    raise
                failure = exc
            except KubeError as exc:
                failure = exc  # read back on the next round: a landed finish makes the attempt not current
            else:
                return True
        raise failure or KubeError(f"finish of {claim.attempt}: no answer after {_TRIES} tries")


def _still_current(known: Mapping[str, Any] | None, claim: Claim) -> bool:
    """Whether a watched body shows the claimed attempt current (else the task is read first)."""
    if known is None or known["metadata"].get("uid") != claim.attempt.task_uid:
        return False
    return protocol.current(known, claim.agent) == claim.attempt


def _claim_patch(claim: Claim, version: str) -> dict[str, Any]:
    return protocol.claim_patch(claim.attempt, agent=claim.agent, resource_version=version, now=claim.started_at)


async def _backoff(tries: int) -> None:
    """0.1 s, 0.2 s, 0.4 s … with jitter, so many agents retrying do not retry in step."""
    await asyncio.sleep(min(0.1 * 2**tries, 2.0) * (0.5 + random.random()))  # noqa: S311 - jitter, not secrets


def _landed(body: Mapping[str, Any], attempt: AttemptId, agent: str, started: str, *, finished: bool = False) -> bool:
    """Whether our own claim (or finish), recognised by its startedAt, is what the task now shows."""
    if str(body["metadata"].get("uid")) != attempt.task_uid:
        return False
    execution = (body.get("status") or {}).get("execution") or {}
    return (
        int(execution.get("attempt") or 0) == attempt.attempt
        and execution.get("agent") == agent
        and execution.get("startedAt") == started
        and (not finished or bool(execution.get("finishedAt")))
    )
