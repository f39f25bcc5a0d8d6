"""The ledger: busy objects, reserved slots, and how each outcome settles."""

from __future__ import annotations

import pytest

from qorch.controller.ledger import Ledger

TASK = ("ns", "t")
AGENT = ("ns", "a")


def test_an_open_write_makes_the_object_busy_and_takes_a_slot() -> None:
    """Decided on version 5 with a reservation: one slot held; once sent, busy, and no second write for it."""
    ledger = Ledger()
    entry = ledger.open("tasks", TASK, "5", AGENT, now=0.0)
    assert entry is not None
    assert ledger.slots(AGENT) == 1
    assert ledger.queued("tasks", TASK)
    assert ledger.sending(entry)
    assert ledger.busy("tasks", TASK)
    assert ledger.open("tasks", TASK, "5", AGENT, now=0.0) is None


def test_a_queued_write_is_replaced_by_a_newer_decision() -> None:
    """Not sent yet: a new decision on the same version replaces it, slot and all; the old one is never sent."""
    ledger = Ledger()
    old = ledger.open("tasks", TASK, "5", ("ns", "b"), now=0.0)
    assert old is not None
    assert not ledger.busy("tasks", TASK)
    new = ledger.open("tasks", TASK, "5", AGENT, now=0.0)
    assert new is not None
    assert not ledger.sending(old)
    assert ledger.reserved == {AGENT: 1}
    assert ledger.open("tasks", TASK, "4", AGENT, now=0.0) is None  # an older version: the queued one stands
    newer = ledger.open("tasks", TASK, "6", AGENT, now=0.0)  # a newer one: the queued one could only conflict
    assert newer is not None
    assert not ledger.sending(new)
    assert ledger.reserved == {AGENT: 1}


def test_the_echo_settles_and_is_recognised_as_ours() -> None:
    """The store sees the version our write produced: settled, slot released, echo reported."""
    ledger = Ledger()
    entry = ledger.open("tasks", TASK, "5", AGENT, now=0.0)
    assert entry is not None
    ledger.written(entry, "6", now=0.1)
    entry.written = "6"
    assert ledger.observe("tasks", TASK, "6") is True
    assert not ledger.busy("tasks", TASK)
    assert ledger.slots(AGENT) == 0


def test_a_replay_of_the_decided_version_settles_nothing() -> None:
    """A re-list delivering version 5 again leaves the write open."""
    ledger = Ledger()
    entry = ledger.open("tasks", TASK, "5", AGENT, now=0.0)
    assert entry is not None
    ledger.sending(entry)
    assert ledger.observe("tasks", TASK, "5") is False
    assert ledger.busy("tasks", TASK)


def test_an_unknown_outcome_keeps_the_slot_until_the_truth_is_known() -> None:
    """Defect 9: a timeout or 5xx keeps the reservation; the next cycle cannot fill that slot again."""
    ledger = Ledger(unknown_after=1.0)
    entry = ledger.open("tasks", TASK, "5", AGENT, now=0.0)
    assert entry is not None
    ledger.unknown(entry, now=0.0)
    assert ledger.slots(AGENT) == 1
    assert ledger.busy("tasks", TASK)
    assert ledger.due(0.5) == []
    assert ledger.due(1.5) == [entry]
    ledger.checked(entry)  # the GET has told the store the truth
    assert ledger.slots(AGENT) == 0
    assert not ledger.busy("tasks", TASK)


def test_a_refused_write_frees_the_slot_but_stays_busy_until_a_newer_version() -> None:
    """A 409: nothing was written, so the slot goes back; deciding again waits for the newer version."""
    ledger = Ledger()
    entry = ledger.open("tasks", TASK, "5", AGENT, now=0.0)
    assert entry is not None
    ledger.refused(entry, now=0.0, hold=5.0)
    assert ledger.slots(AGENT) == 0
    assert ledger.busy("tasks", TASK)
    assert ledger.observe("tasks", TASK, "7") is False
    assert not ledger.busy("tasks", TASK)


def test_a_deleted_object_settles_its_entry() -> None:
    """The object went away: its entry and slot are gone too (bookkeeping never outlives objects)."""
    ledger = Ledger()
    ledger.open("tasks", TASK, "5", AGENT, now=0.0)
    ledger.observe("tasks", TASK, None)
    assert len(ledger) == 0
    assert ledger.reserved == {}


def test_a_failed_check_backs_off_and_keeps_everything() -> None:
    """The GET itself failed: try later, keep the slot."""
    ledger = Ledger(unknown_after=1.0)
    entry = ledger.open("tasks", TASK, "5", AGENT, now=0.0)
    assert entry is not None
    ledger.unknown(entry, now=0.0)
    ledger.check_failed(entry, now=1.0)
    assert ledger.slots(AGENT) == 1
    assert entry.due > 1.0
    assert ledger.due(1.0) == []


def test_the_ledger_reports_full_at_its_limit() -> None:
    """Bounded: the loop stops deciding while `limit` writes are open."""
    ledger = Ledger(limit=2)
    ledger.open("tasks", ("ns", "1"), "1", None, now=0.0)
    assert not ledger.full
    ledger.open("tasks", ("ns", "2"), "1", None, now=0.0)
    assert ledger.full


def test_an_unanswered_assignment_holds_its_slot_a_request_lifetime_after_its_last_try() -> None:
    """Reviewer: throttled tries before the last one must not shorten the hold (it counts from the last try)."""
    freed: list[tuple[str, str]] = []
    ledger = Ledger(in_flight_limit=65.0, released=freed.append)
    entry = ledger.open("tasks", TASK, "5", AGENT, now=0.0)
    assert entry is not None
    ledger.sending(entry)
    ledger.unknown(entry, now=45.0)  # 429s until 45 s, then a try that got no answer
    ledger.hold_slot(entry, now=70.0)  # a GET shows it did not land (yet)
    ledger.checked(entry)
    assert not ledger.busy("tasks", TASK)  # the task is decided again at once ...
    assert ledger.slots(AGENT) == 1  # ... but its agent's slot stays spoken for
    ledger.release_held(now=109.0)
    assert (ledger.slots(AGENT), freed) == (1, [])
    ledger.release_held(now=110.0)
    assert (ledger.slots(AGENT), freed) == (0, [AGENT])


def test_an_unanswered_assignment_past_its_request_lifetime_is_not_held() -> None:
    """A GET after the apiserver gave up on the request frees the slot with the entry."""
    ledger = Ledger(in_flight_limit=65.0)
    entry = ledger.open("tasks", TASK, "5", AGENT, now=0.0)
    assert entry is not None
    ledger.sending(entry)
    ledger.unknown(entry, now=1.0)
    ledger.hold_slot(entry, now=66.0)
    ledger.checked(entry)
    assert (ledger.slots(AGENT), ledger.held, ledger.holds) == (0, [], {})


def test_an_unanswered_write_that_reserves_nothing_is_not_held() -> None:
    """Compare-and-set makes deciding it again safe; only a slot needs the wait."""
    ledger = Ledger()
    entry = ledger.open("agents", AGENT, "5", None, now=0.0)
    assert entry is not None
    ledger.sending(entry)
    ledger.unknown(entry, now=1.0)
    ledger.hold_slot(entry, now=2.0)
    assert ledger.held == []


def test_only_a_reservation_that_frees_a_slot_is_announced() -> None:
    """Our own echo moves the slot into the agent's load (nothing opened); a refusal frees it."""
    freed: list[tuple[str, str]] = []
    ledger = Ledger(released=freed.append)
    echoed = ledger.open("tasks", TASK, "5", AGENT, now=0.0)
    assert echoed is not None
    ledger.sending(echoed)
    ledger.written(echoed, "6", now=0.1)
    echoed.written = "6"
    assert ledger.observe("tasks", TASK, "6") is True
    assert freed == []
    refused = ledger.open("tasks", ("ns", "u"), "7", AGENT, now=0.0)
    assert refused is not None
    ledger.sending(refused)
    ledger.refused(refused, now=0.2, hold=5.0)
    assert freed == [AGENT]


@pytest.mark.parametrize("landed", [True, False], ids=["it-landed", "another-write-landed"])
def test_a_held_slot_is_freed_as_soon_as_the_object_moves_past_the_version_it_was_decided_on(landed: bool) -> None:
    """Review finding E1: once any newer version is seen, the held write either landed or never will.

    Landed, the store counts the task on its agent now; not, compare-and-set keeps it out for
    good. Either way the slot is free at once, not 65 s later (a one-agent task waited that long).
    """
    freed: list[tuple[str, str]] = []
    ledger = Ledger(in_flight_limit=65.0, released=freed.append)
    entry = ledger.open("tasks", TASK, "5", AGENT, now=0.0)
    assert entry is not None
    ledger.sending(entry)
    ledger.unknown(entry, now=1.0)
    ledger.hold_slot(entry, now=2.0)
    ledger.checked(entry)
    ledger.observe("tasks", TASK, "5")  # a replay of the base version: still in doubt
    assert ledger.slots(AGENT) == 1
    ledger.observe("tasks", TASK, "6" if landed else "7")
    assert (ledger.slots(AGENT), freed, ledger.holds) == (0, [AGENT], {})
    ledger.release_held(now=100.0)  # its heap entry ends nothing twice
    assert (ledger.slots(AGENT), freed) == (0, [AGENT])
