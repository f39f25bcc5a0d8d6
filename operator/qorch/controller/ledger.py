"""The ledger of writes in flight: which objects are busy, and which agent slots are spoken for.

A write is decided on one version of an object. From the moment it is
decided until the store has seen a *different* version of that object (the
echo of our write, or somebody else's change that made it fail), the object is
busy: deciding it again would act on a view we know to be stale. An
assignment also reserves a slot on its agent for that time, because the
agent's load in the store does not show the assignment until the echo.

Outcomes, and what each keeps:
- written: busy until the echo (or a GET) shows the new version;
- refused (409, 404, 422...): nothing was written; busy, without a slot,
  until the store moves past the version (409) or a cool-down ends;
- unknown (a timeout, a reset, a 5xx): the write may have landed. The slot
  stays reserved until the echo or a GET settles it. Releasing it early is
  how one leader overfilled an agent. For an assignment, a GET that still
  shows the version the write was decided on settles the *task* (it is
  decided again at once: compare-and-set lets only one of the two writes,
  decided on the same version, land), but the *slot* stays held until the
  apiserver can no longer be working on the request (`in_flight_limit` after
  the last try went unanswered): until then the write may yet land and fill
  it. Holding the task itself that long delayed its retry by a minute.

Every entry carries a deadline; when it passes, the writer GETs the object to
settle it. So no entry outlives the truth, and the ledger never grows without
bound: the loop stops deciding while it holds `limit` entries.
"""

from __future__ import annotations

import enum
import heapq
import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from qorch.controller.records import Key

__all__ = ["Entry", "Ledger", "State"]


class State(enum.Enum):
    """Where one write stands."""

    QUEUED = "queued"  # decided, not sent yet: a newer decision on the same version may replace it
    IN_FLIGHT = "in-flight"
    WRITTEN = "written"  # answered 2xx; waiting to see the echo
    REFUSED = "refused"  # certainly not written; waiting for a newer version or the cool-down
    UNKNOWN = "unknown"  # may or may not have landed


@dataclass(slots=True)
class Entry:
    """One decided write."""

    plural: str
    key: Key
    decided_on: str  # resourceVersion the decision read
    reserve: Key | None  # agent whose slot this write takes
    state: State = State.QUEUED
    written: str = ""  # resourceVersion our write produced
    due: float = 0.0  # monotonic time after which a GET settles it
    unanswered: float = 0.0  # monotonic time the last try went unanswered (it was sent before)
    checks: int = 0  # GETs made so far


def _newer(version: str, than: str) -> bool:
    """Whether resourceVersion `version` is newer than `than` (etcd's are increasing integers)."""
    try:
        return int(version) > int(than)
    except ValueError:
        return False


@dataclass(slots=True)
class Hold:
    """An agent's slot kept for an assignment that may still land on top of version `decided_on`."""

    marker: tuple[str, Key]  # (plural, key) of the object written
    agent: Key
    decided_on: str
    ended: bool = False


_ORDER = itertools.count()  # ties in the holds' heap break by age, never by comparing holds


@dataclass(slots=True)
class Ledger:
    """Open writes by (plural, key), and reserved slots by agent."""

    settle_after: float = 15.0  # a written entry with no echo after this long is checked with a GET
    unknown_after: float = 1.0  # first check of an unknown outcome
    in_flight_limit: float = 65.0  # the apiserver ends any request within 60 s (--request-timeout)
    limit: int = 50_000
    entries: dict[tuple[str, Key], Entry] = field(default_factory=dict)
    reserved: dict[Key, int] = field(default_factory=dict)
    # Slots kept after their entry settled, for assignments that may yet land: a heap by end, and by object.
    held: list[tuple[float, int, Hold]] = field(default_factory=list)
    holds: dict[tuple[str, Key], list[Hold]] = field(default_factory=dict)
    # Told when a reservation ends: a slot may have opened without the store changing
    # (a refused, dropped or superseded assignment), and parked tasks must hear of it.
    released: Callable[[Key], None] | None = None

    def __len__(self) -> int:
        """Open entries."""
        return len(self.entries)

    def busy(self, plural: str, key: Key) -> bool:
        """Whether a write on this object was sent and is unsettled (deciding now would read a stale view).

        A write still waiting in the writer's queue does not make its object busy: a newer
        decision on the same version replaces it (`open` with `replace`).
        """
        entry = self.entries.get((plural, key))
        return entry is not None and entry.state is not State.QUEUED

    def queued(self, plural: str, key: Key) -> bool:
        """Whether a write on this object waits in the writer's queue, not sent yet."""
        entry = self.entries.get((plural, key))
        return entry is not None and entry.state is State.QUEUED

    def slots(self, agent: Key) -> int:
        """Slots reserved on `agent` by assignments not yet seen in the store."""
        return self.reserved.get(agent, 0)

    def open(self, plural: str, key: Key, decided_on: str, reserve: Key | None, now: float) -> Entry | None:
        """Record a decided write; None when one was sent and is unsettled (never two in flight at once).

        A write of the same object still queued, decided on the same version or an older one,
        is replaced: decided on an older version, it could only fail its compare-and-set, and
        keeping it would drop the newer decision (a transition lost until that write had
        failed and been settled).
        """
        held = self.entries.get((plural, key))
        if held is not None:
            if held.state is not State.QUEUED:
                return None
            if held.decided_on != decided_on and not _newer(decided_on, held.decided_on):
                return None
            self.close(held)  # superseded before it was sent: its worker will skip it
        entry = Entry(plural, key, decided_on, reserve, due=now + self.settle_after)
        self.entries[(plural, key)] = entry
        if reserve is not None:
            self.reserved[reserve] = self.reserved.get(reserve, 0) + 1
        return entry

    def _release(self, entry: Entry, *, freed: bool = True) -> None:
        if entry.reserve is not None:
            self._free(entry.reserve, announce=freed)
            entry.reserve = None

    def _free(self, agent: Key, *, announce: bool) -> None:
        left = self.reserved.get(agent, 0) - 1
        if left > 0:
            self.reserved[agent] = left
        else:
            self.reserved.pop(agent, None)
        if announce and self.released is not None:
            self.released(agent)

    def close(self, entry: Entry, *, freed: bool = True) -> None:
        """Forget an entry (its object's truth is in the store now).

        `freed=False` when the store now shows the assignment itself (our echo): the
        slot moved from the reservation to the agent's load, nothing opened.
        """
        if self.entries.get((entry.plural, entry.key)) is entry:
            del self.entries[(entry.plural, entry.key)]
        self._release(entry, freed=freed)

    def is_open(self, entry: Entry) -> bool:
        """Whether `entry` is still the open one for its object."""
        return self.entries.get((entry.plural, entry.key)) is entry

    # ------------------------------------------------------------------ outcomes
    def written(self, entry: Entry, version: str, now: float) -> None:
        """The apiserver accepted the write and answered with the new version."""
        if self.is_open(entry):
            entry.state, entry.written, entry.due = State.WRITTEN, version, now + self.settle_after

    def refused(self, entry: Entry, now: float, *, hold: float) -> None:
        """Nothing was written. Free the slot; stay busy until a newer version or `hold` seconds."""
        if self.is_open(entry):
            self._release(entry)
            entry.state, entry.due = State.REFUSED, now + hold

    def unknown(self, entry: Entry, now: float) -> None:
        """The write may have landed: keep the slot until the truth is known."""
        if self.is_open(entry):
            entry.state, entry.unanswered = State.UNKNOWN, now
            entry.due = now + self.unknown_after * (2 ** min(entry.checks, 5))

    # ------------------------------------------------------------------ settling
    def observe(self, plural: str, key: Key, version: str | None) -> bool:
        """The store saw `version` of an object (None: deleted). Returns True for our own echo."""
        if (plural, key) in self.holds:
            self._moved_on(plural, key, version)
        entry = self.entries.get((plural, key))
        if entry is None:
            return False
        if version is not None and version == entry.decided_on:
            return False  # a replay of the version we decided on: nothing settled
        echo = version is not None and version == entry.written
        self.close(entry, freed=not echo)
        return echo

    def sending(self, entry: Entry) -> bool:
        """The writer takes the entry's write out of its queue: False when it was superseded meanwhile."""
        if not self.is_open(entry):
            return False
        entry.state = State.IN_FLIGHT
        return True

    def hold_slot(self, entry: Entry, now: float) -> None:
        """An unanswered write reads as not landed: settle it, but keep an assignment's slot while it may yet land.

        The slot moves from the entry to `held` until `in_flight_limit` after the last
        unanswered try, so the task is decided again at once while its agent cannot be
        filled twice meanwhile.
        """
        if entry.state is not State.UNKNOWN or entry.reserve is None:
            return
        final = entry.unanswered + self.in_flight_limit
        if now < final:
            hold = Hold((entry.plural, entry.key), entry.reserve, entry.decided_on)
            heapq.heappush(self.held, (final, next(_ORDER), hold))
            self.holds.setdefault((entry.plural, entry.key), []).append(hold)
            entry.reserve = None  # the count in `reserved` stays until the hold ends

    def release_held(self, now: float) -> None:
        """End the holds whose request can no longer land (each freed slot is announced)."""
        while self.held and self.held[0][0] <= now:
            _, _, hold = heapq.heappop(self.held)
            if not hold.ended:
                self._end_hold(hold)

    def _moved_on(self, plural: str, key: Key, version: str | None) -> None:
        """A version newer than a held write's base: it landed (the store counts it now) or never will."""
        for hold in list(self.holds.get((plural, key), ())):
            if version is None or version != hold.decided_on:  # else a replay of the base: still in doubt
                self._end_hold(hold)

    def _end_hold(self, hold: Hold) -> None:
        """Free the slot (announced) and forget the hold; its heap entry is skipped when it comes up."""
        hold.ended = True
        others = [h for h in self.holds.pop(hold.marker, ()) if h is not hold]
        if others:
            self.holds[hold.marker] = others
        self._free(hold.agent, announce=True)

    def due(self, now: float) -> list[Entry]:
        """Entries whose deadline passed: the writer must GET them."""
        return [e for e in self.entries.values() if e.due <= now and e.state not in (State.IN_FLIGHT, State.QUEUED)]

    def checked(self, entry: Entry) -> None:
        """A GET has read the object and the store was told what it read: the entry is settled.

        Either the version moved (the store now holds it, our write's effect included
        if it landed), or it did not (an unknown or refused write did not land).
        """
        self.close(entry)

    def check_failed(self, entry: Entry, now: float) -> None:
        """The GET itself failed: try again later, keeping whatever the entry holds."""
        if self.is_open(entry):
            entry.checks += 1
            entry.due = now + min(30.0, self.unknown_after * (2 ** min(entry.checks, 5)))

    @property
    def full(self) -> bool:
        """Whether the loop must stop deciding until writes settle."""
        return len(self.entries) >= self.limit
