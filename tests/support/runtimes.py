"""Agent runtimes as real processes (`qorch agent run`) with handlers that log every call."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

HANDLERS = """
import asyncio, json, os, time
from qorch.agent import Handlers, ProviderError

handlers = Handlers()

def _log(task, event="called"):
    with open(os.environ["HANDLER_LOG"], "a") as out:
        line = {"task": task.name, "attempt": task.attempt, "agent": task.agent, "input": dict(task.input)}
        out.write(json.dumps({**line, "event": event}) + "\\n")

@handlers.on("code")
async def code(task):
    _log(task)
    try:
        await asyncio.sleep(float(task.input.get("sleep", "0")))
    except asyncio.CancelledError:
        _log(task, "cancelled")
        raise
    if task.input.get("fail") == "yes":
        raise ValueError("asked to fail\\nover two lines")
    if task.input.get("fail_on") == task.agent:
        raise RuntimeError(f"{task.agent} fails this kind of task")
    if task.input.get("rate_limited_on") and task.agent.startswith(task.input["rate_limited_on"]):
        raise ProviderError("RateLimited", "429 Too Many Requests")
    if task.input.get("fail_attempt") == str(task.attempt):
        raise RuntimeError(f"attempt {task.attempt} fails, as asked")
    _log(task, "finished")
    return {"echo": task.goal, "agent": task.agent, "num": task.input.get("num", "")}

@handlers.on("bad-result")
async def unserialisable(task):
    _log(task)
    return {object(): "a key JSON cannot hold"}

@handlers.on("sync")
def blocking(task):
    _log(task)
    time.sleep(0.2)
    return "done in a thread"
"""


class Runtime:
    """One `qorch agent run` process."""

    def __init__(
        self,
        workdir: Path,
        kubeconfig: Path,
        namespace: str,
        name: str,
        *extra: str,
        handlers: str = "demo_handlers:handlers",
    ) -> None:
        """Start it, with the handlers module written into `workdir` (its working directory).

        `handlers` is the `module:attribute` it serves: by default the logging handlers above;
        `qorch.agent.demo:handlers` runs every capability.
        """
        (workdir / "demo_handlers.py").write_text(HANDLERS)
        self.log = workdir / f"{name}.log"
        self.calls = workdir / f"{name}-calls.jsonl"
        argv = [
            sys.executable, "-m", "qorch.cli", "agent", "run", handlers,
            f"--name={name}", f"--namespace={namespace}", f"--kubeconfig={kubeconfig}",
            "--renew-seconds=1", *extra,
        ]  # fmt: skip
        env = {**os.environ, "HANDLER_LOG": str(self.calls)}
        with self.log.open("wb") as out:
            self.popen = subprocess.Popen(argv, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT)

    def handled(self, event: str = "called") -> list[dict[str, Any]]:
        """Every handler call so far (or every cancellation a handler saw, with event="cancelled")."""
        if not self.calls.exists():
            return []
        lines = [json.loads(line) for line in self.calls.read_text().splitlines() if line.strip()]
        return [line for line in lines if line.get("event", "called") == event]

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30) -> int:
        """Signal and reap; the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        return self.popen.wait(timeout=timeout)

    def tail(self) -> str:
        """The end of its log."""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])
