"""The ledger: busy objects, reserved slots, and how each outcome settles."""

from __future__ import annotations

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
    assert ledger.sending(entry, 0.0)
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
    assert not ledger.sending(old, 0.0)
    assert ledger.reserved == {AGENT: 1}
    assert ledger.open("tasks", TASK, "6", AGENT, now=0.0) is None  # another version: the queued one stands


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
    ledger.sending(entry, 0.0)
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
