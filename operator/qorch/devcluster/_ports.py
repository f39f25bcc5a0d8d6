"""Free loopback ports.

A port found free can be taken by someone else before our server binds it; the
control plane therefore retries a failed start on fresh ports instead of
trusting this check.
"""

from __future__ import annotations

import socket

__all__ = ["free_port", "is_free"]


def is_free(port: int) -> bool:
    """Whether 127.0.0.1:port can be bound right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port(preferred: int | None = None) -> int:
    """Return `preferred` if it is free, else a port the kernel picks."""
    if preferred is not None and is_free(preferred):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
