"""Run the real kubectl, as a user would, against a given kubeconfig."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["Kubectl", "KubectlError"]


class KubectlError(RuntimeError):
    """kubectl exited non-zero; `stderr` holds what it said."""

    def __init__(self, argv: list[str], returncode: int, stdout: str, stderr: str) -> None:
        """Keep the pieces a test wants to assert on."""
        super().__init__(f"kubectl {' '.join(argv)} exited {returncode}: {stderr.strip()}")
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


@dataclass(frozen=True, slots=True)
class Kubectl:
    """A kubectl bound to one binary, kubeconfig and (optionally) namespace."""

    binary: Path
    kubeconfig: Path
    namespace: str | None = None
    timeout: float = 60.0

    def in_namespace(self, namespace: str | None) -> Kubectl:
        """The same kubectl, defaulting to another namespace."""
        return replace(self, namespace=namespace)

    def with_kubeconfig(self, kubeconfig: Path) -> Kubectl:
        """The same kubectl acting as another user."""
        return replace(self, kubeconfig=kubeconfig)

    def run(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run `kubectl ARGS`; raise `KubectlError` on failure when `check`."""
        argv = [f"--kubeconfig={self.kubeconfig}"]
        if self.namespace:
            argv.append(f"--namespace={self.namespace}")
        argv += list(args)
        done = subprocess.run(
            [str(self.binary), *argv],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=self.timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise KubectlError(list(args), done.returncode, done.stdout, done.stderr)
        return done

    def __call__(self, *args: str, stdin: str | None = None) -> str:
        """Run kubectl and return its stdout (raising on failure)."""
        return self.run(*args, stdin=stdin).stdout

    def json(self, *args: str) -> Any:  # noqa: ANN401 - kubectl returns arbitrary JSON
        """Run kubectl with `-o json` and parse the output."""
        return json.loads(self(*args, "-o", "json"))

    def apply(self, manifest: str) -> str:
        """`kubectl apply -f -` with the given YAML."""
        return self("apply", "-f", "-", stdin=manifest)
