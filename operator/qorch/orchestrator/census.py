"""What `get_system_status()` reads: informer sinks the running orchestrator keeps fresh.

Each sink holds only what the status reports (a phase per object, or one
object), so `get_system_status()` is a few dict reads, with no I/O.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

    from qorch.controller.store import Sink

__all__ = ["UNOBSERVED", "Latest", "PhaseCensus", "Tee"]

UNOBSERVED = "Unobserved"  # no status.phase yet: the operator has not written this object


class PhaseCensus:
    """The phase of every object of one kind in one namespace."""

    def __init__(self) -> None:
        """Empty until the informer lists."""
        self.phases: dict[str, str] = {}
        self._listing: set[str] = set()

    def upsert(self, body: Mapping[str, Any], *, listed: bool = False) -> None:
        """Record the object's phase."""
        name = str(body["metadata"]["name"])
        self.phases[name] = str((body.get("status") or {}).get("phase") or UNOBSERVED)
        if listed:
            self._listing.add(name)

    def delete(self, body: Mapping[str, Any]) -> None:
        """Forget it."""
        self.phases.pop(str(body["metadata"]["name"]), None)

    def begin_list(self, namespace: str | None) -> None:
        """A full list starts."""
        del namespace
        self._listing = set()

    def end_list(self, namespace: str | None) -> None:
        """Drop what the list did not show."""
        del namespace
        self.phases = {n: p for n, p in self.phases.items() if n in self._listing}

    def by_phase(self) -> dict[str, int]:
        """Objects per phase, most common first."""
        return dict(Counter(self.phases.values()).most_common())


class Latest:
    """One object (the informer is field-selected to its name); None while there is none."""

    def __init__(self) -> None:
        """Nothing seen yet."""
        self.body: dict[str, Any] | None = None
        self._listed = False

    def upsert(self, body: Mapping[str, Any], *, listed: bool = False) -> None:
        """The object as it is now."""
        self.body = dict(body)
        self._listed = self._listed or listed

    def delete(self, body: Mapping[str, Any]) -> None:
        """It is gone."""
        del body
        self.body = None

    def begin_list(self, namespace: str | None) -> None:
        """A full list starts."""
        del namespace
        self._listed = False

    def end_list(self, namespace: str | None) -> None:
        """The list did not show it: it is gone."""
        del namespace
        if not self._listed:
            self.body = None


class Tee:
    """One informer feeding several sinks (the Tasks go to the census and to the agent fleet)."""

    def __init__(self, *sinks: Sink) -> None:
        """Feed these, in order."""
        self.sinks = list(sinks)

    def upsert(self, body: Mapping[str, Any], *, listed: bool = False) -> None:
        """To every sink."""
        for sink in self.sinks:
            sink.upsert(body, listed=listed)

    def delete(self, body: Mapping[str, Any]) -> None:
        """To every sink."""
        for sink in self.sinks:
            sink.delete(body)

    def begin_list(self, namespace: str | None) -> None:
        """To every sink."""
        for sink in self.sinks:
            sink.begin_list(namespace)

    def end_list(self, namespace: str | None) -> None:
        """To every sink."""
        for sink in self.sinks:
            sink.end_list(namespace)
