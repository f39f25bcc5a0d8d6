"""kopf wiring for the human-rate kinds: Approvals and the SchedulingPolicy.

kopf remains the operator framework for the kinds people write by hand. Its
handlers here are `async`, so kopf runs them on the event loop, never on a
thread next to the store; they only feed the store and poke the loop. No
progress storage, diff-base or finalizers are used, so kopf writes nothing
onto user objects. Tasks, Agents and Leases, where kopf's per-object machinery
would be the cost, come through `informer` instead.

kopf's watcher emits no DELETED for objects removed while it re-lists, so
`sweep()` LISTs these kinds now and then and drops what is gone.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import kopf

from qorch.api import constants
from qorch.controller.kube import KubeError, Resource
from qorch.controller.store import APPROVALS, POLICIES

if TYPE_CHECKING:
    from collections.abc import Callable

    from qorch.controller.kube import KubeApi
    from qorch.controller.records import Key
    from qorch.controller.store import ClusterState

__all__ = ["APPROVAL_KINDS", "connection_of", "register", "sweep"]

log = logging.getLogger(__name__)
APPROVAL_KINDS = Resource(constants.GROUP, constants.VERSION, APPROVALS)
POLICY_KINDS = Resource(constants.GROUP, constants.VERSION, POLICIES, namespaced=False)


def register(
    registry: kopf.OperatorRegistry, state: ClusterState, poke: Callable[[], None], connection: kopf.ConnectionInfo
) -> None:
    """Register the login and the event handlers."""
    group, version = constants.GROUP, constants.VERSION

    # kopf watches with the very credentials the operator's own client loaded (--kubeconfig
    # or in-cluster), so both always talk to the same cluster as the same user.
    def login(**_: object) -> kopf.ConnectionInfo:
        return connection

    kopf.on.login(registry=registry, id="login")(login)

    def handler(plural: str) -> Callable[..., Any]:
        sink = state.sink(plural)

        async def on_event(event: dict[str, Any], body: kopf.Body, **_: object) -> None:
            raw = {"metadata": dict(body.metadata), "spec": dict(body.spec), "status": dict(body.status)}
            meta = raw["metadata"]
            state.touch(plural, (str(meta.get("namespace", "")), str(meta["name"])))
            if event.get("type") == "DELETED":
                sink.delete(raw)
            else:
                sink.upsert(raw)
            poke()

        return on_event

    kopf.on.event(group, version, APPROVALS, registry=registry, id="approvals")(handler(APPROVALS))
    kopf.on.event(group, version, POLICIES, registry=registry, id="policy")(handler(POLICIES))


async def sweep(api: KubeApi, state: ClusterState, namespaces: tuple[str, ...]) -> None:
    """LIST Approvals and the policy; load what kopf has not delivered yet and drop what is gone.

    An event that arrived after the LIST began is newer than the LIST: it wins.
    """
    started = state.clock()
    listed: set[tuple[str, str]] = set()
    for namespace in namespaces or (None,):
        listed |= await _list_approvals(api, state, namespace, started)
    dropped = state.sweep(APPROVALS, listed, started)
    if dropped:
        log.info("dropped %d Approvals deleted while unwatched", dropped)
    await _read_policy(api, state, started)


async def _list_approvals(api: KubeApi, state: ClusterState, namespace: str | None, started: float) -> set[Key]:
    listed: set[Key] = set()
    approvals = state.sink(APPROVALS)
    token = None
    while True:
        page = await api.call("GET", APPROVAL_KINDS.path(namespace), query={"limit": 500, "continue": token})
        for item in page.get("items") or ():
            key = (str(item["metadata"]["namespace"]), str(item["metadata"]["name"]))
            listed.add(key)
            if not state.seen_since(APPROVALS, key, started):
                approvals.upsert(item)
        token = (page.get("metadata") or {}).get("continue") or None
        if token is None:
            return listed


async def _read_policy(api: KubeApi, state: ClusterState, started: float) -> None:
    try:
        policy = await api.call("GET", POLICY_KINDS.path(None, constants.DEFAULT_POLICY_NAME))
    except KubeError as exc:
        if getattr(exc, "status", None) != 404:  # noqa: PLR2004
            raise
        policy = None
    if state.seen_since(POLICIES, ("", constants.DEFAULT_POLICY_NAME), started):
        return
    if policy is None:
        state.sink(POLICIES).delete({"metadata": {"name": constants.DEFAULT_POLICY_NAME}})
    else:
        state.sink(POLICIES).upsert(policy)


def connection_of(configuration: Any) -> kopf.ConnectionInfo:  # noqa: ANN401 - kubernetes_asyncio is untyped
    """Kopf's view of a loaded kubernetes_asyncio Configuration (cert files or a bearer token)."""
    token = (configuration.api_key or {}).get("BearerToken") or (configuration.api_key or {}).get("authorization")
    scheme, _, value = str(token or "").partition(" ")
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        scheme=scheme if value else None,
        token=value or None,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )
