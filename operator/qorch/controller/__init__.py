"""The operator: kopf wiring, indexes, leader election, the scheduling loop, status writes.

Only the Lease holder decides; every status write is compare-and-set. The
scheduler core it calls is pure (`qorch.scheduler`).
"""

from qorch.controller.runner import OperatorSettings, run

__all__ = ["OperatorSettings", "run"]
