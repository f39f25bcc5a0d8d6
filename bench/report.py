"""Writing a benchmark's table into its marked section of docs/benchmarks.md."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path


def render(begin: str, end: str, caption: str, rows: Sequence[tuple[str, str, str, str]]) -> str:
    """A marked markdown section: the caption (command, date, machine), then the results table."""
    lines = [begin, caption, "", "| measure | measured | target | verdict |", "|---|---|---|---|"]
    lines += [f"| {m} | {v} | {t} | {d} |" for m, v, t, d in rows]
    return "\n".join([*lines, end])


def write_section(path: Path, begin: str, end: str, heading: str, text: str) -> None:
    """Replace the text between `begin` and `end` markers, or append it under `heading`."""
    doc = path.read_text()
    if begin in doc:
        doc = doc[: doc.index(begin)] + text + doc[doc.index(end) + len(end) :]
    else:
        doc = doc.rstrip() + f"\n\n## {heading}\n" + text + "\n"
    path.write_text(doc)
