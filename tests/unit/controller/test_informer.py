"""The informer resumes a broken watch after the last event it applied (reviewer finding 9)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

from qorch.controller.informer import Informer
from qorch.controller.kube import ApiError, Resource, TransportError

TASKS = Resource("qorch.io", "v1alpha1", "tasks")


def obj(name: str, version: int) -> dict[str, Any]:
    """A minimal object at a version."""
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": str(version)}}


class Recorder:
    """A sink that remembers what it was told."""

    def __init__(self) -> None:
        """Nothing seen yet."""
        self.upserts: list[str] = []

    def upsert(self, body: Mapping[str, Any], *, listed: bool = False) -> None:
        """Remember the version."""
        del listed
        self.upserts.append(body["metadata"]["resourceVersion"])

    def delete(self, body: Mapping[str, Any]) -> None:
        """Not used here."""

    def begin_list(self, namespace: str | None) -> None:
        """Not used here."""

    def end_list(self, namespace: str | None) -> None:
        """Not used here."""


class BreakingApi:
    """Lists at version 10; the first watch delivers two events and then the connection resets.

    With `gone_first`, the first watch is instead refused at its start with 410 Gone.
    """

    def __init__(self, *, gone_first: bool = False) -> None:
        """Remember each list and each watch's starting version."""
        self.gone_first = gone_first
        self.lists = 0
        self.watched_from: list[str] = []
        self.idle: list[float | None] = []

    async def call(self, method: str, path: str, **_: Any) -> dict[str, Any]:
        """The list."""
        del method, path
        self.lists += 1
        return {"items": [obj("a", 5)], "metadata": {"resourceVersion": "10"}}

    @contextlib.asynccontextmanager
    async def stream(
        self,
        path: str,
        *,
        query: Mapping[str, Any],
        timeout: float,  # noqa: ASYNC109 - the interface of KubeApi.stream
        idle: float | None = None,
    ) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        """A watch; the first one breaks (or is refused), the others hang."""
        del path, timeout
        self.watched_from.append(str(query["resourceVersion"]))
        self.idle.append(idle)
        first = len(self.watched_from) == 1
        if first and self.gone_first:
            raise ApiError(410, "Expired", "too old resource version")

        async def events() -> AsyncIterator[dict[str, Any]]:
            if first:
                yield {"type": "MODIFIED", "object": obj("a", 11)}
                yield {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "14"}}}
                yield {"type": "MODIFIED", "object": obj("a", 15)}
                raise TransportError("WATCH: connection reset")
            await asyncio.Event().wait()
            yield {}

        yield events()


def test_a_broken_watch_resumes_after_the_last_event_applied() -> None:
    """Not from the version the broken watch started at: that would replay (or 410 on) what was seen."""
    api = BreakingApi()
    sink = Recorder()

    async def scenario() -> None:
        informer = Informer(api, TASKS, sink, namespace="ns")  # type: ignore[arg-type]
        runner = asyncio.create_task(informer.run())
        while len(api.watched_from) < 2:  # noqa: ASYNC110 - polling a fake
            await asyncio.sleep(0.01)
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner

    asyncio.run(scenario())
    assert api.watched_from == ["10", "15"]
    assert sink.upserts == ["5", "11", "15"]
    assert all(idle is not None and idle > 0 for idle in api.idle)  # a silent watch is given up on


def test_a_watch_refused_with_410_at_its_start_lists_again() -> None:
    """Reviewer: not the same too-old version again and again."""
    api = BreakingApi(gone_first=True)

    async def scenario() -> None:
        informer = Informer(api, TASKS, Recorder(), namespace="ns")  # type: ignore[arg-type]
        runner = asyncio.create_task(informer.run())
        while len(api.watched_from) < 2:  # noqa: ASYNC110 - polling a fake
            await asyncio.sleep(0.01)
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner

    asyncio.run(asyncio.wait_for(scenario(), 5))
    assert api.lists == 2
