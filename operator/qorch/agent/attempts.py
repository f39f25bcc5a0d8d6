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

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from qorch.api import constants, protocol
from qorch.controller.kube import MERGE_PATCH, ApiError, KubeError, Resource

if TYPE_CHECKING:
    from qorch.api.protocol import AttemptId
    from qorch.controller.kube import KubeApi

__all__ = ["TASKS", "Attempts", "Claim"]

TASKS = Resource(constants.GROUP, constants.VERSION, "tasks")
_CONFLICT, _NOT_FOUND = 409, 404
_TRIES = 5


@dataclass(frozen=True, slots=True)
class Claim:
    """An attempt this agent holds."""

    attempt: AttemptId
    agent: str
    task: str  # the Task's name
    started_at: str


class Attempts:
    """Claims and reports the attempts of one namespace's tasks."""

    def __init__(self, api: KubeApi, namespace: str) -> None:
        """Bind to a namespace."""
        self._api = api
        self._namespace = namespace

    async def _read(self, name: str) -> dict[str, Any] | None:
        try:
            return await self._api.call("GET", TASKS.path(self._namespace, name))
        except ApiError as exc:
            if exc.status == _NOT_FOUND:
                return None
            raise

    async def _patch(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._api.call(
            "PATCH",
            TASKS.path(self._namespace, name, "status"),
            query={"fieldManager": constants.AGENT_FIELD_MANAGER},
            body=body,
            content_type=MERGE_PATCH,
        )

    async def claim(self, task: dict[str, Any], agent: str) -> Claim | None:
        """Claim the attempt `task` assigns to `agent`; None when it is not (or no longer) ours to run."""
        attempt = protocol.claimable(task, agent)
        body: dict[str, Any] | None = task
        for _ in range(_TRIES):
            if attempt is None or body is None or protocol.claimable(body, agent) != attempt:
                return None
            claim, body = await self._try_claim(body, attempt, agent)
            if claim is not None:
                return claim
        return None

    async def _try_claim(
        self, body: dict[str, Any], attempt: AttemptId, agent: str
    ) -> tuple[Claim | None, dict[str, Any] | None]:
        """One compare-and-set claim; on any doubt, the task read back says what happened."""
        name = str(body["metadata"]["name"])
        started = protocol.timestamp()
        patch = protocol.claim_patch(
            attempt, agent=agent, resource_version=body["metadata"]["resourceVersion"], now=started
        )
        try:
            await self._patch(name, patch)
        except ApiError as exc:
            if exc.status == _NOT_FOUND:
                return None, None
            if exc.status != _CONFLICT and exc.definite:
                raise
        except KubeError:
            pass  # the claim may have landed: the task says whether
        else:
            return Claim(attempt, agent, name, started), body
        fresh = await self._read(name)
        if fresh is not None and _landed(fresh, attempt, agent, started):
            return Claim(attempt, agent, name, started), fresh
        return None, fresh

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

    async def finish(self, claim: Claim, *, result: str = "", error: str = "") -> bool:
        """Report the end of a claimed attempt; False when it is no longer current (nothing written)."""
        for _ in range(_TRIES):
            try:
                body = await self._read(claim.task)
            except KubeError:
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
                if exc.status in (_CONFLICT, _NOT_FOUND) or not exc.definite:
                    continue
                raise
            except KubeError:
                continue  # read back on the next round: a landed finish makes the attempt not current
            return True
        return False


def _landed(body: dict[str, Any], attempt: AttemptId, agent: str, started: str, *, finished: bool = False) -> bool:
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
