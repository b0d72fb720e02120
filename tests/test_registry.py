"""Every task name has a task function and a store (one registry; no branch on task names)."""

from advpure.config.enums import TaskName
from advpure.tasks.registry import TASK_STORES, TASKS


def test_every_task_is_registered_with_its_store():
    assert set(TASKS) == set(TaskName) == set(TASK_STORES)
    assert set(TASK_STORES.values()) <= {"paths.evaluations", "paths.training"}
