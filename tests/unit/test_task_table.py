"""The queued tasks are one closed list: every name in ``TaskName`` is a registered Celery task,
and no task is registered under another name."""

from services.settings import Settings
from services.task_names import TaskName


def test_celery_registers_exactly_the_task_names(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from worker.app import create_app

    app = create_app(Settings(data_dir=tmp_path))
    registered = {name for name in app.tasks if not name.startswith("celery.")}
    assert registered == {task.value for task in TaskName}


def test_the_inline_follow_up_runs_the_tables_handlers(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The in-worker follow-up looks its work up in the same table the Celery tasks are made
    from: the inline rows (report, delivery) run, the rest (PDFs) go to the queue."""
    from worker.handlers import HANDLERS, INLINE, Handled
    from worker.runtime import WorkerRuntime

    calls: list[tuple[str, int]] = []

    def recording(name: TaskName, follow: list[int]):  # type: ignore[no-untyped-def]
        def handler(rt, argument: int = 0) -> Handled:  # type: ignore[no-untyped-def]
            calls.append((name.value, argument))
            return Handled(follow)

        return handler

    monkeypatch.setitem(HANDLERS, TaskName.REPORT, recording(TaskName.REPORT, [41, 42]))
    monkeypatch.setitem(HANDLERS, TaskName.RENDER, recording(TaskName.RENDER, []))
    runtime = WorkerRuntime(Settings(data_dir=tmp_path), publish=lambda name, args: None)
    pending: list[int] = []
    assert runtime._follow(TaskName.REPORT.value, 5, pending) is True
    assert pending == [41, 42]  # what the report made is followed up next
    assert runtime._follow(TaskName.RENDER.value, 6, pending) is False  # left to the queue
    assert calls == [(TaskName.REPORT.value, 5)]
    assert {TaskName.REPORT, TaskName.DELIVER} == INLINE and set(HANDLERS) == set(TaskName)
