"""The scheduler core: pure numpy + stdlib, no kopf and no Kubernetes client.

It is a function of a snapshot, so it runs, is tested and is benchmarked with
no cluster at all. A cycle is `cycle.schedule(snapshot, tasks, policy)`; its
numbered steps live in `queue` (1), `snapshot` (2), `index` (3), `scorers` (4),
`amplitudes` (5), `collapse` and `strategies` (6) and `observables` (7).
"""

from qorch.scheduler.cycle import schedule
from qorch.scheduler.instance import Instance, InstanceError, parse
from qorch.scheduler.policy import Policy
from qorch.scheduler.result import Result
from qorch.scheduler.snapshot import Snapshot
from qorch.scheduler.tasks import TaskBatch

__all__ = ["Instance", "InstanceError", "Policy", "Result", "Snapshot", "TaskBatch", "parse", "schedule"]
