from typing import Any

from flask import Blueprint
from flask import request

from tasks_app import db
from tasks_app.models import Task

bp = Blueprint("tasks", __name__)


@bp.post("/tasks")
def create() -> tuple[dict[str, Any], int]:
    task = Task(title=request.get_json()["title"])
    db.session.add(task)
    db.session.commit()
    return {"id": task.id, "title": task.title, "done": task.done}, 201


@bp.post("/tasks/<int:task_id>/done")
def finish(task_id: int) -> dict[str, Any]:
    task = db.get_or_404(Task, task_id)
    task.done = True
    db.session.commit()
    return {"id": task.id, "done": task.done}


@bp.get("/tasks")
def open_tasks() -> dict[str, Any]:
    titles = db.session.scalars(db.select(Task.title).where(~Task.done).order_by(Task.id))
    return {"open": list(titles)}
