"""A loopback fault proxy in front of a kube-apiserver, for fault tests with real processes.

The process under test gets a kubeconfig pointing at the proxy (plain HTTP on
127.0.0.1); the proxy forwards every request to the real apiserver with the
credentials of an upstream kubeconfig, and streams watches through. A test
adds `Fault`s that match requests by method and path, and decides what
happens to them:

- `reset`: the connection is closed before anything is forwarded;
- `hang`: the request is held (until the fault is cleared or `seconds` pass),
  then the connection is closed;
- `status`: the apiserver is never asked; an error Status with that code comes
  back (a 503 or a 500, as during an etcd leader change; a 409; a 429 with
  `retry_after` as its Retry-After header);
- `delay`: the request is held `seconds`, then forwarded (added latency);
- `lost`: the request is forwarded and *applied*, then the answer is thrown
  away and the connection closed: the write landed, the client cannot know;
- `gone`: a watch gets a single `410 Gone` ERROR event, as when its
  resourceVersion was compacted away (the client must list again).

It runs its own event loop on a thread, so a synchronous test drives it.
What it must never do: alter a request it forwards, or hold a lock while the
upstream is slow (each request is its own task).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import ssl
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Self

import aiohttp
import yaml
from aiohttp import web

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["Fault", "FaultProxy"]

Action = Literal["reset", "hang", "status", "lost", "gone", "delay"]
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "content-encoding"}


@dataclass
class Fault:
    """Which requests to disturb, and how."""

    action: Action
    method: str | None = None  # GET, PATCH, ...; None: any
    path: str = ""  # a substring of the path, e.g. "/leases/qorch-operator"
    watch: bool | None = None  # only watches (True), only plain requests (False), or both
    times: int | None = None  # fire this many times, then stop (None: until removed)
    status: int = 503
    seconds: float = 3600.0  # how long `hang` holds a request (`delay`: how long before forwarding)
    retry_after: float | None = None  # `status`: a Retry-After header, in seconds
    hits: int = 0
    _released: asyncio.Event | None = field(default=None, repr=False)

    def matches(self, method: str, path: str, watch: bool) -> bool:
        """Whether this fault applies to the request."""
        if self.times is not None and self.hits >= self.times:
            return False
        if self.method is not None and self.method != method:
            return False
        if self.watch is not None and self.watch != watch:
            return False
        return self.path in path


def _files(kubeconfig: Path, folder: Path) -> tuple[str, ssl.SSLContext]:
    """The upstream server and a TLS context with the kubeconfig's client certificate."""
    config = yaml.safe_load(kubeconfig.read_text())
    context = next(c for c in config["contexts"] if c["name"] == config["current-context"])["context"]
    cluster = next(c for c in config["clusters"] if c["name"] == context["cluster"])["cluster"]
    user = next(u for u in config["users"] if u["name"] == context["user"])["user"]
    cert, key, ca = folder / "client.crt", folder / "client.key", folder / "ca.crt"
    cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
    key.write_bytes(base64.b64decode(user["client-key-data"]))
    ca.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
    tls = ssl.create_default_context(cafile=str(ca))
    tls.load_cert_chain(str(cert), str(key))
    return str(cluster["server"]).rstrip("/"), tls


class FaultProxy:
    """Forwards to the apiserver, disturbing the requests its faults match."""

    def __init__(self, upstream_kubeconfig: Path) -> None:
        """Read the upstream's address and credentials; nothing listens until `start()`."""
        self._folder = Path(tempfile.mkdtemp(prefix="qorch-faultproxy-"))
        self._upstream, self._tls = _files(upstream_kubeconfig, self._folder)
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = 0
        self.requests = 0
        self._open: dict[int, web.Request] = {}  # requests being forwarded (watches stay here for long)

    # ------------------------------------------------------------------ the test's side
    @property
    def url(self) -> str:
        """Where clients connect."""
        return f"http://127.0.0.1:{self.port}"

    def kubeconfig(self, path: Path) -> Path:
        """Write a kubeconfig that talks to the apiserver through this proxy."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "proxied", "cluster": {"server": self.url}}],
            "users": [{"name": "proxied", "user": {}}],
            "contexts": [{"name": "proxied", "context": {"cluster": "proxied", "user": "proxied"}}],
            "current-context": "proxied",
        }
        path.write_text(yaml.safe_dump(config))
        return path

    def add(self, fault: Fault) -> Fault:
        """Start disturbing matching requests."""
        with self._lock:
            self._faults.append(fault)
        return fault

    def remove(self, fault: Fault) -> None:
        """Stop a fault; requests it holds (`hang`) are let go (their connections closed)."""
        with self._lock:
            if fault in self._faults:
                self._faults.remove(fault)
        released = fault._released  # noqa: SLF001 - our own bookkeeping
        if released is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(released.set)

    def clear(self) -> None:
        """Remove every fault."""
        for fault in list(self._faults):
            self.remove(fault)

    def sever(self, path: str = "") -> None:
        """Close every forwarded connection whose path contains `path` (watches included), now."""
        loop = self._loop
        if loop is None:
            return

        done = threading.Event()

        def close() -> None:
            for request in list(self._open.values()):
                if path in request.path and request.transport is not None:
                    request.transport.close()
            done.set()

        loop.call_soon_threadsafe(close)
        done.wait(5)

    @contextlib.contextmanager
    def fault(self, fault: Fault) -> Any:  # noqa: ANN401 - a context manager yielding the fault
        """`with proxy.fault(Fault(...)):` disturbs for the block only."""
        self.add(fault)
        try:
            yield fault
        finally:
            self.remove(fault)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Self:
        """Listen on a free loopback port, on a thread of its own."""
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            loop.run_until_complete(self._serve())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
            loop.close()

        self._thread = threading.Thread(target=serve, name="faultproxy", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fault proxy did not start")
        return self

    def stop(self) -> None:
        """Stop listening and close every connection."""
        if self._loop is None:
            return
        self.clear()
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop = None

    def __enter__(self) -> Self:
        """Start."""
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        """Stop."""
        self.stop()

    async def _serve(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self._tls, limit=0), auto_decompress=False
        )
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server  # noqa: SLF001 - aiohttp keeps the bound socket here
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    # ------------------------------------------------------------------ requests
    def _match(self, method: str, path: str, watch: bool) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path, watch):
                    fault.hits += 1
                    return fault
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        watch = request.query.get("watch") in ("1", "true")
        fault = self._match(request.method, request.path, watch)
        if fault is not None and fault.action in ("reset", "hang"):
            if fault.action == "hang":
                fault._released = fault._released or asyncio.Event()  # noqa: SLF001
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(fault._released.wait(), fault.seconds)  # noqa: SLF001
            return self._abort(request)
        if fault is not None and fault.action == "status":
            body = {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "code": fault.status,
                "reason": "InternalError",
                "message": "injected by the fault proxy",
            }
            headers = {} if fault.retry_after is None else {"Retry-After": f"{fault.retry_after:g}"}
            return web.json_response(body, status=fault.status, headers=headers)
        if fault is not None and fault.action == "delay":
            await asyncio.sleep(fault.seconds)
        if fault is not None and fault.action == "gone" and watch:
            response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
            await response.prepare(request)
            event = {
                "type": "ERROR",
                "object": {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "code": 410,
                    "reason": "Expired",
                    "message": "too old resource version (injected)",
                },
            }
            await response.write(json.dumps(event).encode() + b"\n")
            await response.write_eof()
            return response
        return await self._forward(request, lost=fault is not None and fault.action == "lost")

    @staticmethod
    def _abort(request: web.Request) -> web.StreamResponse:
        if request.transport is not None:
            request.transport.close()
        return web.Response(status=502)  # never reaches the client: its connection is gone

    async def _forward(self, request: web.Request, *, lost: bool) -> web.StreamResponse:
        assert self._session is not None  # noqa: S101 - started before serving
        self._open[id(request)] = request
        try:
            return await self._relay(request, lost=lost)
        finally:
            self._open.pop(id(request), None)

    async def _relay(self, request: web.Request, *, lost: bool) -> web.StreamResponse:
        assert self._session is not None  # noqa: S101 - started before serving
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        data = await request.read()
        try:
            upstream = await self._session.request(
                request.method,
                self._upstream + request.path_qs,
                headers=headers,
                data=data or None,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            )
        except (aiohttp.ClientError, OSError):
            return self._abort(request)
        async with upstream:
            if lost:
                await upstream.read()  # applied upstream; the answer goes nowhere
                return self._abort(request)
            # The body goes through as sent (not decompressed), so its Content-Encoding must too:
            # a gzipped list (the apiserver compresses large answers) would otherwise reach the
            # client as undecodable bytes.
            response = web.StreamResponse(
                status=upstream.status,
                headers={
                    k: v
                    for k, v in upstream.headers.items()
                    if k.lower() not in _HOP_HEADERS or k.lower() == "content-encoding"
                },
            )
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
            except (aiohttp.ClientError, ConnectionResetError, OSError):
                return self._abort(request)
            return response
