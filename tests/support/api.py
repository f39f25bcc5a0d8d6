"""A small synchronous API reader for e2e tests: the kubeconfig's own credentials, JSON in and out.

kubectl costs a process per call; samplers that read every few hundred
milliseconds use this instead.
"""

from __future__ import annotations

import base64
import json
import ssl
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml


class Api:
    """GETs against the cluster a kubeconfig points at."""

    def __init__(self, kubeconfig: Path) -> None:
        """Read the server, the CA and the client certificate from `kubeconfig`."""
        config = yaml.safe_load(kubeconfig.read_text())
        context = next(c for c in config["contexts"] if c["name"] == config["current-context"])["context"]
        cluster = next(c for c in config["clusters"] if c["name"] == context["cluster"])["cluster"]
        user = next(u for u in config["users"] if u["name"] == context["user"])["user"]
        folder = Path(tempfile.mkdtemp(prefix="qorch-test-api-"))
        cert, key, ca = folder / "c.crt", folder / "c.key", folder / "ca.crt"
        cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
        key.write_bytes(base64.b64decode(user["client-key-data"]))
        ca.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
        self._tls = ssl.create_default_context(cafile=str(ca))
        self._tls.load_cert_chain(str(cert), str(key))
        self._server = str(cluster["server"]).rstrip("/")

    def get(self, path: str) -> dict[str, Any]:
        """GET a path, decoded; a 429 (storage still initializing) or a read that timed out is tried again.

        A test polls with these reads: one slow answer from an apiserver loaded on purpose
        (the cold start at full size) is no verdict on the operator.
        """
        for _ in range(20):
            try:
                with urllib.request.urlopen(self._server + path, context=self._tls, timeout=30) as resp:  # noqa: S310
                    return json.loads(resp.read())
            except urllib.error.HTTPError as exc:
                if exc.code != 429:
                    raise
                time.sleep(float(exc.headers.get("Retry-After") or 1))
            except (TimeoutError, urllib.error.URLError) as exc:
                if isinstance(exc, urllib.error.URLError) and not isinstance(exc.reason, TimeoutError):
                    raise
                time.sleep(1)
        raise AssertionError(f"GET {path}: the apiserver kept answering 429 or timing out")

    def tasks(self, namespace: str) -> list[dict[str, Any]]:
        """Every Task of a namespace."""
        return self.get(f"/apis/qorch.io/v1alpha1/namespaces/{namespace}/tasks")["items"]

    def agents(self, namespace: str) -> list[dict[str, Any]]:
        """Every Agent of a namespace."""
        return self.get(f"/apis/qorch.io/v1alpha1/namespaces/{namespace}/agents")["items"]

    def send(self, method: str, path: str, body: Any, content_type: str = "application/json") -> dict[str, Any]:
        """Send a body; the decoded answer."""
        request = urllib.request.Request(  # noqa: S310
            self._server + path, data=json.dumps(body).encode(), method=method, headers={"Content-Type": content_type}
        )
        with urllib.request.urlopen(request, context=self._tls, timeout=30) as resp:  # noqa: S310
            return json.loads(resp.read())

    def phases(self, namespace: str) -> dict[str, str]:
        """Task name -> phase ('' before the first status)."""
        return {t["metadata"]["name"]: (t.get("status") or {}).get("phase", "") for t in self.tasks(namespace)}

    def count(self, namespace: str, phase: str) -> int:
        """How many Tasks of a namespace are in `phase`."""
        return sum(1 for value in self.phases(namespace).values() if value == phase)
