"""The lifecycle rules: pure functions of records and time that say what happens to a task next.

Like kopf's causation step, they only *decide*: the loop feeds them records
from the store and the current time, and writes what they return. Nothing
here awaits, reads a clock, or talks to the API, so every rule is unit-tested
without a cluster (an import contract keeps it that way).

- `cancel`: the user stopped it (`spec.cancel`): before every other rule;
- `redrive`: a dead-lettered task the user redrove (`spec.redrive`) is queued again;
- `gate`: may the task be queued, or must it wait for an approval or a dependency?
- `progress`: what the current attempt's report (or its agent's death) means;
- `liveness`: is an agent alive, judged by Lease changes on our own clock?
- `retry`: after a failed attempt, when (and whether) the next one comes;
- `breaker`: an agent whose attempts keep failing gets no new work for a cool-down;
- `deadline`: a task unfinished at `spec.deadline` missed it (and fails, if it asked to);
- `timeouts`: an attempt never claimed, or running too long with a silent agent, is taken back;
- `admission`: the last check before an assignment is written; an agent whose clearance drops gives work back;
- `writes`: an object whose status writes keep failing (409, 5xx) is decided again ever more slowly.
"""

from qorch.controller.lifecycle import (
    admission,
    breaker,
    cancel,
    deadline,
    gate,
    liveness,
    progress,
    redrive,
    retry,
    timeouts,
    writes,
)

__all__ = [
    "admission",
    "breaker",
    "cancel",
    "deadline",
    "gate",
    "liveness",
    "progress",
    "redrive",
    "retry",
    "timeouts",
    "writes",
]
