"""The controller's one door to the Kubernetes API: raw JSON, a timeout on every call, one-line errors.

Why not the generated client's API classes: they turn every response into
models or sanitised dicts (CPU and memory the operator cannot spare at 100k
objects), they have no default timeout (a hung PATCH held the loop forever),
and their exceptions print whole HTTP dumps. This module takes only the
loaded configuration (server, TLS, credentials, token refresh) from the
generated client, and keeps a session of its own: keep-alive connections
sized for the writer, no proxy or netrc lookups per request, orjson for JSON.

What it must never do: retry a write on its own (the caller owns every
decision, so a retried write could land on a newer version), or log a
response body. Every failure is a `KubeError` whose `definite` flag says
whether the request certainly had no effect (a 409 did not write; a reset
connection or a 504 may have).
"""

from __future__ import annotations

import asyncio
import random
import ssl
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, overload
from urllib.parse import quote, urlencode

import aiohttp
import orjson

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    from kubernetes_asyncio.client import ApiClient

__all__ = ["ApiError", "KubeApi", "KubeError", "Resource", "TransportError", "load_config"]

MERGE_PATCH = "application/merge-patch+json"
_USER_AGENT = "qorch-operator"


class KubeError(Exception):
    """A call to the API failed. `definite`: the request certainly changed nothing."""

    status: int | None = None
    definite: bool = False


class ApiError(KubeError):
    """The apiserver answered with an error status."""

    def __init__(self, status: int, reason: str, message: str, retry_after: float | None = None) -> None:
        """Keep the status, the reason word and the server's one-line message."""
        super().__init__(f"{status} {reason}: {message}" if message else f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after
        # 5xx may have been committed before the error (a 504 after etcd wrote); everything
        # else was refused before any change, 429 included.
        self.definite = status < 500  # noqa: PLR2004 - HTTP's own boundary


class TransportError(KubeError):
    """No answer: a timeout, a reset, a refused connection. The request may or may not have landed."""


@dataclass(frozen=True, slots=True)
class Resource:
    """A kind's REST coordinates."""

    group: str
    version: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        """`/apis/<group>/<version>[/namespaces/<ns>]/<plural>[/<name>[/<subresource>]]`."""
        root = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if namespace is not None and self.namespaced:
            root += f"/namespaces/{quote(namespace, safe='')}"
        root += f"/{self.plural}"
        if name is not None:
            root += f"/{quote(name, safe='')}"
            if subresource:
                root += f"/{subresource}"
        return root


def _message(payload: bytes) -> str:
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return payload[:200].decode(errors="replace").strip()
    return str(body.get("message", ""))[:500] if isinstance(body, dict) else ""


def _tls(configuration: Any) -> ssl.SSLContext:  # noqa: ANN401 - kubernetes_asyncio's Configuration is untyped
    """The TLS context a loaded kubeconfig (or in-cluster config) describes, as the generated client builds it."""
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, keyfile=configuration.key_file)
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class KubeApi:
    """Requests against one apiserver, with the loaded client's configuration and credentials."""

    def __init__(self, client: ApiClient, *, timeout: float = 10.0, connections: int = 64) -> None:
        """Take the configuration and auth of `client`; `timeout` bounds every call."""
        self._client = client
        configuration = client.configuration
        self._host = str(configuration.host).rstrip("/")
        self._tls_context = _tls(configuration) if self._host.startswith("https") else None
        self._server_name = configuration.tls_server_name
        self._connections = connections
        self._own: aiohttp.ClientSession | None = None
        self.timeout = timeout

    @property
    def _session(self) -> aiohttp.ClientSession:
        if self._own is None or self._own.closed:
            self._own = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._tls_context or False, limit=self._connections),
                trust_env=False,
                read_bufsize=2**21,  # watch lines of large objects
                json_serialize=lambda o: orjson.dumps(o).decode(),
            )
        return self._own

    async def close(self) -> None:
        """Close the connections."""
        if self._own is not None:
            await self._own.close()

    async def _headers(self, content_type: str | None) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": _USER_AGENT}
        if content_type:
            headers["Content-Type"] = content_type
        await self._client.update_params_for_auth(headers, [], ["BearerToken"])
        return headers

    def _url(self, path: str, query: Mapping[str, object] | None) -> str:
        if not query:
            return self._host + path
        flat = {k: ("true" if v is True else "false" if v is False else v) for k, v in query.items() if v is not None}
        return f"{self._host}{path}?{urlencode(flat)}"

    @overload
    async def call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, object] | None = ...,
        body: object = ...,
        content_type: str = ...,
        timeout: float | None = ...,  # noqa: ASYNC109
        decode: Literal[True] = ...,
    ) -> dict[str, Any]: ...

    @overload
    async def call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, object] | None = ...,
        body: object = ...,
        content_type: str = ...,
        timeout: float | None = ...,  # noqa: ASYNC109
        decode: Literal[False],
    ) -> bytes: ...

    async def call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, object] | None = None,
        body: object = None,
        content_type: str = "application/json",
        timeout: float | None = None,  # noqa: ASYNC109 - a per-request HTTP timeout, not a cancel scope
        decode: bool = True,
    ) -> dict[str, Any] | bytes:
        """One request; the decoded JSON answer (raw bytes when `decode` is False), or a `KubeError`."""
        data = None if body is None else orjson.dumps(body)
        headers = await self._headers(content_type if data is not None else None)
        limit = aiohttp.ClientTimeout(total=timeout or self.timeout)
        try:
            async with self._session.request(
                method,
                self._url(path, query),
                data=data,
                headers=headers,
                timeout=limit,
                server_hostname=self._server_name,
            ) as resp:
                payload = await resp.read()
                if resp.status >= 300:  # noqa: PLR2004 - HTTP's own boundary
                    raise _api_error(resp, payload)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TransportError(f"{method} {path}: {type(exc).__name__} {exc}".strip()) from None
        if not decode:
            return payload
        decoded = orjson.loads(payload) if payload else {}
        return decoded if isinstance(decoded, dict) else {}

    @asynccontextmanager
    async def stream(
        self,
        path: str,
        *,
        query: Mapping[str, object],
        timeout: float,  # noqa: ASYNC109 - the watch's HTTP timeout, not a cancel scope
        idle: float | None = None,
    ) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        """A watch: yields each JSON line as a dict until the server ends the stream (or is silent `idle` s)."""
        headers = await self._headers(None)
        limit = aiohttp.ClientTimeout(total=timeout, sock_connect=self.timeout, sock_read=idle)
        try:
            resp = await self._session.get(
                self._url(path, query), headers=headers, timeout=limit, server_hostname=self._server_name
            )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TransportError(f"WATCH {path}: {type(exc).__name__} {exc}".strip()) from None
        try:
            if resp.status >= 300:  # noqa: PLR2004
                raise _api_error(resp, await resp.read())

            async def lines() -> AsyncIterator[dict[str, Any]]:
                try:
                    async for line in resp.content:
                        if line.strip():
                            yield orjson.loads(line)
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    raise TransportError(f"WATCH {path}: {type(exc).__name__} {exc}".strip()) from None

            yield lines()
        finally:
            resp.release()
            resp.close()


def _api_error(resp: aiohttp.ClientResponse, payload: bytes) -> ApiError:
    retry_after: float | None = None
    header = resp.headers.get("Retry-After")
    if header:
        try:
            retry_after = float(header)
        except ValueError:
            retry_after = None
    return ApiError(resp.status, resp.reason or "", _message(payload), retry_after)


async def sleep_backoff(attempt: int, *, base: float = 0.5, cap: float = 30.0) -> None:
    """Full-jitter exponential backoff (AWS's), so replicas retrying together spread out."""
    await asyncio.sleep(random.uniform(0, min(cap, base * 2 ** min(attempt, 16))))  # noqa: S311 - jitter, not crypto


async def load_config(kubeconfig: str | None) -> None:
    """Load credentials: the kubeconfig file given, else in-cluster, else $KUBECONFIG or ~/.kube/config."""
    from kubernetes_asyncio import config  # noqa: PLC0415 - the client's config module, loaded when needed

    if kubeconfig:
        await config.load_kube_config(config_file=kubeconfig)
        return
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        await config.load_kube_config()
