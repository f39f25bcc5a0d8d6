"""AuditLog: the writer. Appends signed, chained entries to a file, one per line, fsynced.

Opening an existing log continues its chain: the last line is read, checked
(canonical, well formed, signed by this key, or a key rotation naming it) and
its seq and hash become the next entry's predecessor, so a new leader goes on
where the old one stopped.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature

from qorch.audit.chain import KEY_ROTATION, ZERO_HASH, Anchor, canonical, entry_hash, malformed, sign_entry
from qorch.audit.keys import key_id, raw_public_key

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = ["AuditError", "AuditLog"]

_TAIL_CHUNK = 65536


class AuditError(Exception):
    """The log cannot be continued or written."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _last_line(path: Path) -> bytes | None:
    """The file's last line without its newline, None if empty; AuditError if it does not end in a newline."""
    with path.open("rb") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return None
        buf = b""
        pos = size
        while pos > 0:
            step = min(_TAIL_CHUNK, pos)
            pos -= step
            f.seek(pos)
            buf = f.read(step) + buf
            if buf.count(b"\n") >= 2 or pos == 0:  # noqa: PLR2004 - the last line's start and end
                break
    if not buf.endswith(b"\n"):
        msg = f"{path}: the last line is incomplete (no newline); verify the log and repair it by hand"
        raise AuditError(msg)
    return buf[:-1].rsplit(b"\n", 1)[-1]


class AuditLog:
    """An append-only, hash-chained, Ed25519-signed log of decisions in a file."""

    def __init__(
        self,
        path: Path | str,
        signing_key: Ed25519PrivateKey,
        *,
        clock: Callable[[], str] = _now,
        start: Anchor | None = None,
    ) -> None:
        """Open (and continue, if it exists) the log at `path`, signing with `signing_key`.

        `start`: a new (missing or empty) file is a segment that continues the chain
        after that entry (seq start.seq + 1, prev start.hash) rather than beginning it.
        """
        self.path = Path(path)
        self._key = signing_key
        self._clock = clock
        self._lock = threading.Lock()
        # The head, replaced whole after each fsync: readers (the leader's Lease renewal, on the
        # event loop) take it without the lock, so a slow disk never stalls them.
        self._tip = start if start is not None else Anchor(-1, ZERO_HASH)
        if self.path.exists():
            self._continue()

    @property
    def key_id(self) -> str:
        """The id of the key that signs the next entry."""
        return key_id(self._key.public_key())

    def _continue(self) -> None:
        last = _last_line(self.path)
        if last is None:
            return
        try:
            entry = json.loads(last.decode())
        except (UnicodeDecodeError, ValueError) as e:
            msg = f"{self.path}: the last entry is not JSON ({e})"
            raise AuditError(msg) from None
        if not isinstance(entry, dict) or canonical(entry) != last or malformed(entry) is not None:
            msg = f"{self.path}: the last entry is not a well-formed canonical entry"
            raise AuditError(msg)
        own = self.key_id
        if entry["kind"] == KEY_ROTATION and entry["data"].get("key") == own:
            if entry["data"].get("public_key") != raw_public_key(self._key.public_key()).hex():
                msg = f"{self.path}: the last entry rotates to key {own} but names another public key"
                raise AuditError(msg)
        elif entry["key"] != own:
            msg = (
                f"{self.path}: the chain is signed by key {entry['key']}, not this key ({own}); "
                "rotate to this key with the old one (AuditLog.rotate)"
            )
            raise AuditError(msg)
        else:
            unsigned = {k: v for k, v in entry.items() if k != "sig"}
            try:
                self._key.public_key().verify(bytes.fromhex(entry["sig"]), canonical(unsigned))
            except InvalidSignature:
                msg = f"{self.path}: the last entry's signature does not verify"
                raise AuditError(msg) from None
        self._tip = Anchor(entry["seq"], entry_hash(last))

    def head(self) -> Anchor:
        """The last entry's (seq, hash) once fsynced; (-1, zeros) for an empty log. Never waits for an append."""
        return self._tip

    def anchor(self) -> dict[str, Any]:
        """The head as the small dict an operator stores in the cluster: {"seq": N, "hash": HEX}."""
        return self.head().as_dict()

    def append(
        self,
        kind: str,
        subject: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        *,
        key: Ed25519PrivateKey | None = None,
    ) -> dict[str, Any]:
        """Append one entry, signed (by this log's key unless `key`), flushed and fsynced; returns it."""
        with self._lock:
            return self._append(kind, subject, data, key)

    def _append(
        self,
        kind: str,
        subject: Mapping[str, Any] | None,
        data: Mapping[str, Any] | None,
        key: Ed25519PrivateKey | None,
    ) -> dict[str, Any]:
        """Append under the lock."""
        seq = self._tip.seq + 1
        unsigned: dict[str, Any] = {
            "seq": seq,
            "time": self._clock(),
            "kind": kind,
            "subject": dict(subject or {}),
            "data": dict(data or {}),
            "prev": self._tip.hash,
        }
        entry = sign_entry(unsigned, key or self._key)
        line = canonical(entry)
        with self.path.open("ab") as f:
            size = f.tell()
            try:
                f.write(line + b"\n")
                f.flush()
                os.fsync(f.fileno())
            except OSError as e:
                with contextlib.suppress(OSError):  # leave no torn line for the next entry to chain after
                    f.truncate(size)
                msg = f"{self.path}: cannot append entry {unsigned['seq']}: {e.strerror or e}"
                raise AuditError(msg) from e
        self._tip = Anchor(seq, entry_hash(line))
        return entry

    def rotate(self, new_key: Ed25519PrivateKey) -> dict[str, Any]:
        """Append a key-rotation entry signed by the current key naming `new_key`; later entries use `new_key`."""
        public = new_key.public_key()
        with self._lock:  # no entry slips in between the rotation and the switch
            entry = self._append(
                KEY_ROTATION, {}, {"public_key": raw_public_key(public).hex(), "key": key_id(public)}, None
            )
            self._key = new_key
        return entry
