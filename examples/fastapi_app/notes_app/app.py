"""The service: its engine comes from DATABASE_URL, as in production.

No `from __future__ import annotations`: FastAPI reads the local Session alias at runtime.
"""

import os
from collections.abc import AsyncIterator
from typing import Annotated
from typing import Any

from fastapi import Depends
from fastapi import FastAPI
from sqlalchemy import func
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine

from notes_app.models import Note


def make_app(database_url: str | None = None) -> FastAPI:
    engine = create_async_engine(database_url or os.environ["DATABASE_URL"])
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    app = FastAPI()
    app.state.engine = engine

    async def get_session() -> AsyncIterator[AsyncSession]:
        async with sessions() as session:
            yield session

    app.state.get_session = get_session
    Session = Annotated[AsyncSession, Depends(get_session)]

    @app.post("/notes", status_code=201)
    async def create(body: dict[str, Any], session: Session) -> Any:
        note = Note(title=body["title"])
        session.add(note)
        await session.commit()
        return {"id": note.id, "title": note.title, "created_at": note.created_at.isoformat()}

    @app.get("/notes/count")
    async def count(session: Session) -> Any:
        return {"count": await session.scalar(select(func.count()).select_from(Note))}

    return app
