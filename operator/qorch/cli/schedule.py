"""`qorch schedule [FILE|-] [-o FILE]`: schedule one snapshot offline, with no cluster.

Bad input exits 2 with one line naming the offending item; never a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from qorch.scheduler import InstanceError, parse, schedule
from qorch.scheduler.strategies import ScheduleError

__all__ = ["command"]


def command(
    instance: str = typer.Argument("-", help="Instance JSON file, or - for standard input."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the result here instead of stdout."),
) -> None:
    """Schedule one instance ({agents, tasks, policy}) and print assignments, reasons and observables."""
    try:
        text = sys.stdin.read() if instance == "-" else Path(instance).read_text()
    except OSError as exc:
        sys.stderr.write(f"error: cannot read {instance}: {exc.strerror}\n")
        raise typer.Exit(2) from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        sys.stderr.write(f"error: {instance} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}\n")
        raise typer.Exit(2) from None
    except RecursionError:
        sys.stderr.write(f"error: {instance} is nested too deeply to be an instance\n")
        raise typer.Exit(2) from None
    try:
        parsed = parse(doc)
        result = schedule(parsed.snapshot, parsed.tasks, parsed.policy)
    except (InstanceError, ScheduleError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        raise typer.Exit(2) from None
    try:
        rendered = json.dumps(result.to_contract(), indent=2, allow_nan=False) + "\n"
    except ValueError:  # never valid JSON; the input checks should have stopped it
        sys.stderr.write("error: the result holds a number that is not finite; please report this instance\n")
        raise typer.Exit(2) from None
    if output is None:
        sys.stdout.write(rendered)
        return
    try:
        output.write_text(rendered)
    except OSError as exc:
        sys.stderr.write(f"error: cannot write {output}: {exc.strerror} (does its folder exist?)\n")
        raise typer.Exit(2) from None
