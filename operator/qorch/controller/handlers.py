"""kopf wiring: watch events update the indexes and poke the loop; nothing else.

Only `on.event` handlers are registered. They store no progress, no diff-base
and no finalizers, so kopf has no reason to write annotations, `status.kopf`
or finalizers onto user objects (a test checks this after a full run).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import kopf

from qorch.api import constants

if TYPE_CHECKING:
    from collections.abc import Callable

    from qorch.controller.state import ClusterState

__all__ = ["connection_of", "register"]


def register(
    registry: kopf.OperatorRegistry, state: ClusterState, poke: Callable[[], None], connection: kopf.ConnectionInfo
) -> None:
    """Register the login and the watch handlers for every kind the loop reads."""
    group, version = constants.GROUP, constants.VERSION

    # kopf watches with the very credentials the operator's own client loaded (--kubeconfig
    # or in-cluster), so both always talk to the same cluster as the same user.
    def login(**_: object) -> kopf.ConnectionInfo:
        return connection

    kopf.on.login(registry=registry, id="login")(login)

    def handler(apply: Callable[[str, Any], None]) -> Callable[..., None]:
        def on_event(event: dict[str, Any], body: kopf.Body, **_: object) -> None:
            apply(str(event.get("type") or "ADDED"), body)
            state.last_event = time.monotonic()
            poke()

        return on_event

    kopf.on.event(group, version, "agents", registry=registry, id="agents")(handler(state.apply_agent))
    kopf.on.event(group, version, "tasks", registry=registry, id="tasks")(handler(state.apply_task))
    kopf.on.event(group, version, "approvals", registry=registry, id="approvals")(handler(state.apply_approval))
    kopf.on.event(group, version, "schedulingpolicies", registry=registry, id="policy")(handler(state.apply_policy))
    kopf.on.event(
        "coordination.k8s.io",
        "v1",
        "leases",
        registry=registry,
        id="heartbeats",
        when=lambda name, **_: str(name).startswith(constants.AGENT_LEASE_PREFIX),
    )(handler(state.apply_lease))


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
