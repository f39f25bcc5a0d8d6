"""Ed25519 keys for the audit log: PEM files in, PEM files out, a short id per public key.

The operator reads its signing key from a Secret-mounted PEM file (PKCS#8); a
verifier needs only the public key (SubjectPublicKeyInfo PEM).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "AuditKeyError",
    "generate_keypair",
    "key_id",
    "load_private_key",
    "load_public_key",
    "public_key_from_hex",
    "raw_public_key",
]


class AuditKeyError(Exception):
    """A key file is missing, unreadable or not an Ed25519 key."""


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    """The 32 raw bytes of a public key."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    """The key's id: the first 16 hex digits of the SHA-256 of its raw bytes."""
    return hashlib.sha256(raw_public_key(key)).hexdigest()[:16]


def public_key_from_hex(text: str) -> Ed25519PublicKey:
    """A public key from 64 lowercase hex digits (as a key-rotation entry names it); ValueError if not one."""
    if len(text) != 64 or text != text.lower():  # noqa: PLR2004 - 32 bytes
        msg = "not 64 lowercase hex digits"
        raise ValueError(msg)
    return Ed25519PublicKey.from_public_bytes(bytes.fromhex(text))


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        msg = f"{what} {path}: no such file"
        raise AuditKeyError(msg) from None
    except OSError as e:
        msg = f"{what} {path}: {e.strerror or e}"
        raise AuditKeyError(msg) from None


def load_private_key(path: Path | str) -> Ed25519PrivateKey:
    """An unencrypted Ed25519 private key from a PEM file; AuditKeyError otherwise."""
    path = Path(path)
    data = _read(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        msg = f"private key {path}: not an unencrypted PEM private key ({e})"
        raise AuditKeyError(msg) from None
    if not isinstance(key, Ed25519PrivateKey):
        msg = f"private key {path}: not an Ed25519 key"
        raise AuditKeyError(msg)
    return key


def load_public_key(path: Path | str) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file; AuditKeyError otherwise."""
    path = Path(path)
    data = _read(path, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        msg = f"public key {path}: not a PEM public key ({e})"
        raise AuditKeyError(msg) from None
    if not isinstance(key, Ed25519PublicKey):
        msg = f"public key {path}: not an Ed25519 key"
        raise AuditKeyError(msg)
    return key


def generate_keypair(private_path: Path | str, public_path: Path | str) -> Ed25519PrivateKey:
    """Write a new key pair: the private key (PKCS#8 PEM, mode 0600) and its public key (PEM).

    Refuses to overwrite an existing private key file.
    """
    private_path, public_path = Path(private_path), Path(public_path)
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        msg = f"private key {private_path}: already exists"
        raise AuditKeyError(msg) from None
    except OSError as e:
        msg = f"private key {private_path}: {e.strerror or e}"
        raise AuditKeyError(msg) from None
    with os.fdopen(fd, "wb") as f:
        f.write(private_pem)
    try:
        public_path.write_bytes(public_pem)
    except OSError as e:
        msg = f"public key {public_path}: {e.strerror or e}"
        raise AuditKeyError(msg) from None
    return key
