"""The embedded default: a local control plane and an in-process operator, for a machine with no cluster.

`EmbeddedCluster.start()` runs, on one thread of its own with its own event loop:
1. the local control plane of `qorch.devcluster` (etcd + kube-apiserver; the
   binaries are built first if missing, as `qorch dev cluster build` does);
2. the bootstrap: the CRDs (from `qorch.api.crd`), namespaces `qorch-system`
   and the caller's, and SchedulingPolicy `default` (`DEFAULT_POLICY`, the
   same settings as manifests/scheduling-policy/default.yaml);
3. the operator (`qorch.controller.runner.operate`, embedded: no signal
   handlers, no metrics or probe ports, no GC tuning), until `stop()`.

Why a thread: the operator's renewals and decisions keep their pace whatever
the caller's event loop does (a long synchronous call there would otherwise
cost the operator its Lease), and the control plane's processes are tied to
that thread with PR_SET_PDEATHSIG, so they die with it, or with the process
however it ends. `stop()` stops the operator (it releases its Lease), then the
control plane, and removes its temp dir; it is safe to call twice and after a
failed start.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

import yaml

from qorch.api import constants, crd
from qorch.controller.kube import ApiError, KubeApi, KubeError, Resource

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["DEFAULT_POLICY", "EmbeddedCluster"]

log = logging.getLogger(__name__)
_CRDS = Resource("apiextensions.k8s.io", "v1", "customresourcedefinitions", namespaced=False)
_NAMESPACES = Resource("", "v1", "namespaces", namespaced=False)
_POLICIES = Resource(constants.GROUP, constants.VERSION, "schedulingpolicies", namespaced=False)
_CONFLICT = 409
_BOOTSTRAP_SECONDS = 60.0

#: SchedulingPolicy `default` as manifests/scheduling-policy/default.yaml writes it (a unit test holds them equal).
DEFAULT_POLICY: dict[str, Any] = {
    "strategy": "quantum",
    "temperature": 0.05,
    "batchSize": 16384,
    "agentGraceSeconds": 30,
    "defaultRetry": {"maxAttempts": 3, "backoffSeconds": 10, "maxBackoffSeconds": 300},
}


class EmbeddedCluster:
    """A control plane and an operator owned by this process, on a thread of their own."""

    def __init__(self, namespace: str) -> None:
        """Nothing starts until `start()`."""
        self.namespace = namespace
        self.identity = f"embedded-{socket.gethostname()}-{os.getpid()}"
        self.kubeconfig: Path | None = None
        self.pids: list[int] = []
        self._thread: threading.Thread | None = None
        self._ready: concurrent.futures.Future[Path] = concurrent.futures.Future()
        self._stopping = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.exit_code: int | None = None

    async def start(self, timeout: float) -> Path:  # noqa: ASYNC109 - a bound on the whole start-up, reported
        """Bring everything up; returns the admin kubeconfig. Raises RuntimeError with the reason."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._main, name="qorch-embedded", daemon=True)
            self._thread.start()
        try:
            return await asyncio.wait_for(asyncio.wrap_future(self._ready), timeout)
        except TimeoutError:
            raise RuntimeError(f"the embedded control plane did not come up within {timeout:g} s") from None

    @property
    def alive(self) -> bool:
        """Whether the thread (and so the operator) still runs."""
        return self._thread is not None and self._thread.is_alive()

    def _main(self) -> None:
        from qorch.devcluster import ControlPlane, build_binaries  # noqa: PLC0415 - only the embedded mode needs it

        plane: ControlPlane | None = None
        try:
            plane = ControlPlane(binaries=build_binaries())
            if self._stopping.is_set():
                return
            plane.start()
            self.pids = plane.pids
            self.exit_code = asyncio.run(self._serve(plane.admin_kubeconfig))
            if self.exit_code:
                log.error("the embedded operator ended with exit code %d", self.exit_code)
        except BaseException as exc:  # handed to start(), which raises it in the caller's loop
            if not self._ready.done():
                self._ready.set_exception(exc)
            else:
                log.exception("the embedded cluster failed")
        finally:
            if plane is not None:
                plane.stop()
            if not self._ready.done():
                self._ready.set_exception(RuntimeError("the embedded cluster was stopped while starting"))

    async def _serve(self, kubeconfig: Path) -> int:
        from qorch.controller.runner import OperatorSettings, operate  # noqa: PLC0415 - the operator, when embedded

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        kopf_log = logging.getLogger("kopf")
        if kopf_log.level == logging.NOTSET:  # kopf says, once, that a thread takes no signals: known
            kopf_log.setLevel(logging.ERROR)
        if self._stopping.is_set():
            return 0
        await _bootstrap(kubeconfig, self.namespace)
        self.kubeconfig = kubeconfig
        self._ready.set_result(kubeconfig)
        settings = OperatorSettings(
            kubeconfig=str(kubeconfig),
            metrics_port=0,
            health_port=0,
            identity=self.identity,
            own_process=False,
        )
        if self._stopping.is_set():
            return 0
        return await operate(settings, stop=self._stop)

    async def stop(self, timeout: float = 60.0) -> None:  # noqa: ASYNC109 - a bound on the shutdown
        """Stop the operator (releasing its Lease) and the control plane. Safe twice and after a failed start."""
        self._stopping.set()
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nothing left to tell
                loop.call_soon_threadsafe(stop.set)
        thread = self._thread
        if thread is not None and thread.is_alive():
            await asyncio.to_thread(thread.join, timeout)
            if thread.is_alive():
                log.warning("the embedded cluster did not stop within %g s", timeout)


async def _bootstrap(kubeconfig: Path, namespace: str) -> None:
    """CRDs (Established), the namespaces, and the default SchedulingPolicy; each step is idempotent."""
    from kubernetes_asyncio import client, config  # noqa: PLC0415

    configuration = client.Configuration()
    await config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    async with client.ApiClient(configuration=configuration) as api_client:
        api = KubeApi(api_client)
        try:
            for text in crd.render().values():
                await _create(api, _CRDS.path(), yaml.safe_load(text))
            for definition in crd.KINDS:
                await _until_established(api, definition.crd_name)
            for name in {constants.OPERATOR_NAMESPACE, namespace}:
                namespace_body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
                await _create(api, _NAMESPACES.path(), namespace_body)
            policy = {
                "apiVersion": constants.API_VERSION,
                "kind": "SchedulingPolicy",
                "metadata": {"name": constants.DEFAULT_POLICY_NAME},
                "spec": DEFAULT_POLICY,
            }
            await _create(api, _POLICIES.path(), policy, retry_not_found=True)
        finally:
            await api.close()


async def _create(api: KubeApi, path: str, body: dict[str, Any], *, retry_not_found: bool = False) -> None:
    """POST, taking 409 as done; a kind just established may 404 for a moment."""
    deadline = time.monotonic() + _BOOTSTRAP_SECONDS
    while True:
        try:
            await api.call("POST", path, body=body)
        except ApiError as exc:
            if exc.status == _CONFLICT:
                return
            if not (retry_not_found and exc.status == 404) or time.monotonic() > deadline:  # noqa: PLR2004
                raise
        except KubeError:
            if time.monotonic() > deadline:
                raise
        else:
            return
        await asyncio.sleep(0.2)


async def _until_established(api: KubeApi, name: str) -> None:
    deadline = time.monotonic() + _BOOTSTRAP_SECONDS
    while time.monotonic() < deadline:
        body = await api.call("GET", _CRDS.path(None, name))
        conditions = (body.get("status") or {}).get("conditions") or ()
        if any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"CRD {name} was not Established within {_BOOTSTRAP_SECONDS:g} s")
