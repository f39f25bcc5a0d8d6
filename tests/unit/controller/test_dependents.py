"""A task's status names its children in the DAG (issue 13, item 5), against the in-memory apiserver."""

from __future__ import annotations

import asyncio

from qorch.controller.store import TASKS
from support import bodies
from support.kernel import harness


def test_the_status_names_the_tasks_that_depend_on_it_and_follows_edits() -> None:
    """Children created, then one deleted and one re-pointed: status.dependents and dependentsTotal follow."""

    async def main() -> None:
        async with harness() as h:
            h.create(TASKS, bodies.task("root", requires=["gpu"]))
            await h.cycle()  # root gets its first status (no agent: it waits)
            for name in ("b", "a"):
                h.create(TASKS, bodies.task(name, dependsOn=["root"]))
            await h.cycle()
            await h.cycle()
            assert (h.status("root")["dependents"], h.status("root")["dependentsTotal"]) == (["a", "b"], 2)
            del h.api.objects[(TASKS, "ns", "a")]
            h.store.remove_task(("ns", "a"), uid=None)
            body = h.task("b")
            body["spec"]["dependsOn"] = []
            h.create(TASKS, body)
            await h.cycle()
            await h.cycle()
            assert (h.status("root")["dependents"], h.status("root")["dependentsTotal"]) == ([], 0)

    asyncio.run(main())


def test_a_dependents_patch_never_replaces_a_transition_decided_in_the_same_pass() -> None:
    """Review defect: the parent's success and its stale dependents in one pass: the success is written."""

    async def main() -> None:
        async with harness() as h:
            done = bodies.assigned("a", 1, phase="Running", execution=bodies.execution("a", 1, finished=True))
            h.create(TASKS, bodies.task("root", status=done))
            h.create(TASKS, bodies.task("child", dependsOn=["root"]))
            await h.cycle()
            assert h.status("root")["phase"] == "Succeeded"
            await h.cycle()
            assert h.status("root")["dependents"] == ["child"]

    asyncio.run(main())
