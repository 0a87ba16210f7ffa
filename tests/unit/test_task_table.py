"""The queued tasks are one closed list: every name in ``TaskName`` is a registered Celery task,
and no task is registered under another name."""

from services.settings import Settings
from services.task_names import TaskName


def test_celery_registers_exactly_the_task_names(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from worker.app import create_app

    app = create_app(Settings(data_dir=tmp_path))
    registered = {name for name in app.tasks if not name.startswith("celery.")}
    assert registered == {task.value for task in TaskName}
