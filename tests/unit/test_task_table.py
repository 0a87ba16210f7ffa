"""The queued tasks are one closed list: every name in ``TaskName`` is a registered Celery task,
and no task is registered under another name."""

from services.kernel.settings import Settings
from services.kernel.task_names import TaskName


def test_celery_registers_exactly_the_task_names(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from worker.app import create_app

    app = create_app(Settings(data_dir=tmp_path))
    registered = {name for name in app.tasks if not name.startswith("celery.")}
    assert registered == {task.value for task in TaskName}


def test_the_inline_follow_up_runs_the_tables_handlers(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The in-worker follow-up looks its work up in the same table the Celery tasks are made
    from: the inline rows (report, delivery) run, the rest (PDFs) go to the queue."""
    from worker.follow_up import follow_one
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
    assert follow_one(runtime, TaskName.REPORT, 5, pending) is True
    assert pending == [41, 42]  # what the report made is followed up next
    assert follow_one(runtime, TaskName.RENDER, 6, pending) is False  # left to the queue
    assert calls == [(TaskName.REPORT.value, 5)]
    assert {TaskName.REPORT, TaskName.DELIVER} == INLINE and set(HANDLERS) == set(TaskName)


def test_every_task_name_fits_the_outbox_column() -> None:
    from services.db.models import TASK_NAME_LENGTH

    assert max(map(len, TaskName)) <= TASK_NAME_LENGTH


def test_every_route_fits_the_route_columns() -> None:
    from services.db.models import ROUTE_LENGTH
    from services.taxonomy.tree import ROUTES

    assert max(map(len, ROUTES)) <= ROUTE_LENGTH
