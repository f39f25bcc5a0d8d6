"""A lean informer: list, then watch, one resource in one scope, on the event loop.

It does what client-go's reflector does and nothing more: a paged LIST hands
the store a complete picture (so objects deleted while nobody watched are
dropped), a WATCH from that list's resourceVersion streams changes, bookmarks
keep the version fresh, and a `410 Gone` (the version was compacted away)
starts a new LIST. Any other failure backs off with jitter and resumes the
watch from the last version seen.

Why not kopf for these kinds: kopf's per-object machinery (a worker and a
queue per object, a processing pipeline per event) is built for handlers,
and for Tasks and Leases the operator only needs records; kopf's watcher also
emits no DELETED for objects removed during a re-list gap.

What it must never do: run a sink on a thread (the store is single-threaded by
design) or hog the loop; it yields every few hundred events so the leader's
renewals and the writer keep their turn.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from qorch.controller import metrics
from qorch.controller.kube import ApiError, KubeError, sleep_backoff

if TYPE_CHECKING:
    from qorch.controller.kube import KubeApi, Resource
    from qorch.controller.store import Sink

__all__ = ["Informer"]

log = logging.getLogger(__name__)
_GONE = 410
_YIELD_EVERY = 200


class _ExpiredError(Exception):
    """The watch's resourceVersion is too old: list again."""


class Informer:
    """Keeps one sink in step with one resource in one namespace (or the whole cluster)."""

    def __init__(
        self,
        api: KubeApi,
        resource: Resource,
        sink: Sink,
        *,
        namespace: str | None = None,
        name_prefix: str = "",
        field_selector: str = "",
        page_size: int = 500,
        watch_seconds: int = 290,
        idle_seconds: float = 150.0,
    ) -> None:
        """Configure; nothing happens until `run()`."""
        self._api = api
        self._resource = resource
        self._sink = sink
        self._namespace = namespace
        self._prefix = name_prefix
        self._fields = field_selector or None  # the apiserver filters (an agent watches only its own tasks)
        self._page_size = page_size
        self._watch_seconds = watch_seconds
        self._idle_seconds = idle_seconds  # the apiserver sends a bookmark about every minute
        self.synced = asyncio.Event()
        self.lists = 0
        self.resource_version = ""
        self.label = f"{resource.plural}{'/' + namespace if namespace else ''}"

    async def run(self) -> None:
        """List and watch until cancelled; never raises."""
        failures = 0
        listed = False
        while True:
            try:
                if not listed:
                    await self._list()
                    listed = True
                    self.synced.set()
                await self._watch()
                failures = 0
            except _ExpiredError:
                log.info("watch of %s expired; listing again", self.label)
                listed = False
            except KubeError as exc:  # resumes from the last version applied, not the last watch's start
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:
                    log.warning("watch of %s failed (%d in a row): %s", self.label, failures, exc)
                await sleep_backoff(failures, base=0.2, cap=10.0)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in a sink must not end the watch for good
                failures += 1
                log.exception("informer %s: unexpected error; listing again", self.label)
                listed = False
                await sleep_backoff(failures, base=0.2, cap=10.0)

    def _mine(self, body: dict[str, Any]) -> bool:
        return not self._prefix or str(body["metadata"]["name"]).startswith(self._prefix)

    async def _list(self) -> None:
        path = self._resource.path(self._namespace)
        started = time.perf_counter()
        token: str | None = None
        count = 0
        self._sink.begin_list(self._namespace)
        while True:
            try:
                page = await self._api.call(
                    "GET",
                    path,
                    query={"limit": self._page_size, "continue": token, "fieldSelector": self._fields},
                    timeout=60.0,
                )
            except ApiError as exc:
                if exc.status == _GONE and token:  # the continue token expired: start over
                    self._sink.begin_list(self._namespace)
                    token, count = None, 0
                    continue
                raise
            for item in page.get("items") or ():
                if self._mine(item):
                    self._sink.upsert(item, listed=True)
                    count += 1
            meta = page.get("metadata") or {}
            token = meta.get("continue") or None
            await asyncio.sleep(0)  # let the loop breathe between pages
            if token is None:
                version = str(meta.get("resourceVersion", ""))
                break
        self._sink.end_list(self._namespace)
        self.lists += 1
        self.resource_version = version
        metrics.INFORMER_LISTS.labels(self._resource.plural).inc()
        log.info("listed %d %s in %.2fs", count, self.label, time.perf_counter() - started)

    async def _watch(self) -> None:
        """Watch from `resource_version`, which follows every event applied (so a broken watch resumes there)."""
        query = {
            "watch": True,
            "resourceVersion": self.resource_version,
            "allowWatchBookmarks": True,
            "timeoutSeconds": self._watch_seconds,
            "fieldSelector": self._fields,
        }
        seen = 0
        try:
            async with self._stream(query) as events:
                async for event in events:
                    applied = self._apply(event, seen)
                    if applied != seen and applied % _YIELD_EVERY == 0:
                        await asyncio.sleep(0)  # let renewals and writes have the loop now and then
                    seen = applied
        except ApiError as exc:
            if exc.status == _GONE:  # refused at the start: the version is too old to watch from
                raise _ExpiredError from None
            raise

    def _stream(self, query: dict[str, Any]) -> Any:  # noqa: ANN401 - an async context manager
        return self._api.stream(
            self._resource.path(self._namespace),
            query=query,
            timeout=self._watch_seconds + 30,
            idle=self._idle_seconds,  # a watch that went silent (no event, no bookmark) is stalled
        )

    def _apply(self, event: dict[str, Any], seen: int) -> int:
        """Hand one watch event to the sink; returns the count of objects applied so far."""
        kind = event.get("type")
        body = event.get("object") or {}
        if kind == "ERROR":
            if body.get("code") == _GONE:
                raise _ExpiredError
            raise ApiError(int(body.get("code") or 500), str(body.get("reason", "")), str(body.get("message")))
        if kind != "BOOKMARK" and self._mine(body):
            if kind == "DELETED":
                self._sink.delete(body)
            else:
                self._sink.upsert(body)
        version = (body.get("metadata") or {}).get("resourceVersion")
        if version:  # applied: a watch broken from here on resumes after this event
            self.resource_version = str(version)
        if kind == "BOOKMARK":
            return seen
        metrics.WATCH_EVENTS.labels(self._resource.plural).inc()
        return seen + 1
