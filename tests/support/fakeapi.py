"""An in-memory stand-in for the apiserver, for unit tests of the kernel: CAS patches, GETs, injected faults.

Only what the writer and the elector use: GET, PATCH (JSON and merge patches on
/status, compare-and-set on metadata.resourceVersion), PUT, POST. Faults are
callables consulted before (or after) a request is applied, so a test can make a
write time out *after* it landed, the worst case for a controller.
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jsonpatch
import orjson

from qorch.controller.kube import ApiError, KubeError, TransportError

_PATH = re.compile(
    r"^/apis?/(?:[^/]+/)?[^/]+(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?(?:/status)?$"
)
Fault = Callable[[str, str], KubeError | None]


def merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge(out.get(key), value)
    return out


@dataclass
class FakeApi:
    """Objects by (plural, namespace, name); versions from one counter, like etcd's revision."""

    objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    before: list[Fault] = field(default_factory=list)  # may refuse a request before it is applied
    after: list[Fault] = field(default_factory=list)  # may lose the answer of a request that was applied
    calls: list[tuple[str, str]] = field(default_factory=list)
    _versions: itertools.count = field(default_factory=lambda: itertools.count(10_000))

    def put(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        """Store an object as a client would create it; returns it with a fresh version."""
        body = copy.deepcopy(body)
        body["metadata"]["resourceVersion"] = str(next(self._versions))
        meta = body["metadata"]
        self.objects[(plural, meta.get("namespace", ""), meta["name"])] = body
        return copy.deepcopy(body)

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        """The stored object."""
        return copy.deepcopy(self.objects[(plural, namespace, name)])

    async def call(
        self,
        method: str,
        path: str,
        *,
        query: Any = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | None = None,  # noqa: ASYNC109 - the interface of KubeApi.call
        decode: bool = True,
    ) -> Any:
        """One request."""
        del query, timeout, content_type  # JSON and merge patches are told apart by their shape
        self.calls.append((method, path))
        for fault in self.before:
            if (error := fault(method, path)) is not None:
                raise error
        answer = self._apply(method, path, body)
        for fault in self.after:
            if (error := fault(method, path)) is not None:
                raise error
        return answer if decode else orjson.dumps(answer)

    def _create(self, plural: str, namespace: str, body: Any) -> dict[str, Any]:
        """A POST: the object created, or (a SelfSubjectReview) who the caller is."""
        if plural == "selfsubjectreviews":
            return {**body, "status": {"userInfo": {"username": "kubernetes-admin", "groups": ["system:masters"]}}}
        key = (plural, namespace, body["metadata"]["name"])
        if key in self.objects:
            raise ApiError(409, "AlreadyExists", "exists")
        return self.put(plural, {**body, "metadata": {**body["metadata"], "namespace": namespace}})

    def _apply(self, method: str, path: str, body: Any) -> dict[str, Any]:
        match = _PATH.match(path)
        if match is None:
            raise ApiError(404, "NotFound", path)
        key = (match["plural"], match["ns"] or "", match["name"] or "")
        if method == "POST":
            return self._create(key[0], key[1], body)
        current = self.objects.get(key)
        if current is None:
            raise ApiError(404, "NotFound", f"{key} not found")
        if method == "GET":
            return copy.deepcopy(current)
        if method == "PUT":
            wanted = body["metadata"].get("resourceVersion")
            if wanted and wanted != current["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", "the object has been modified")
            return self.put(key[0], body)
        if method == "PATCH":
            patched = jsonpatch.apply_patch(current, body) if isinstance(body, list) else merge(current, body)
            wanted = patched["metadata"].get("resourceVersion")
            if wanted != current["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", "the object has been modified")
            return self.put(key[0], patched)
        raise ApiError(405, "MethodNotAllowed", method)


def once(method: str, plural: str, error: KubeError) -> Fault:
    """A fault that fires on the first matching request only."""
    fired = []

    def fault(m: str, path: str) -> KubeError | None:
        if not fired and m == method and f"/{plural}/" in path + "/":
            fired.append(True)
            return error
        return None

    return fault


def timeout() -> TransportError:
    """What a request that got no answer raises."""
    return TransportError("PATCH: TimeoutError")
