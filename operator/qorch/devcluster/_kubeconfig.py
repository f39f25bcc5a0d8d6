"""Kubeconfig files with embedded certificates, one per user."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from pathlib import Path

    from qorch.devcluster._pki import KeyPair

__all__ = ["with_token", "write"]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def write(path: Path, *, server: str, ca_pem: bytes, user: str, creds: KeyPair) -> Path:
    """Write a kubeconfig for `user` at `path` (mode 0600) and return the path."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "qorch-dev",
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)},
            },
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": _b64(creds.cert_pem),
                    "client-key-data": _b64(creds.key_pem),
                },
            },
        ],
        "contexts": [{"name": f"qorch-dev-{user}", "context": {"cluster": "qorch-dev", "user": user}}],
        "current-context": f"qorch-dev-{user}",
        "preferences": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def with_token(path: Path, *, admin: Path, user: str, token: str) -> Path:
    """Write a kubeconfig with `admin`'s server and CA and `token` as its only credential (mode 0600)."""
    [cluster] = yaml.safe_load(admin.read_text())["clusters"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": cluster["name"], "user": user}}],
        "current-context": user,
    }
    path.touch(mode=0o600)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
