"""The engine is made when the module is imported, and every request gets a session on it
through the get_db dependency: the layout of FastAPI's SQL tutorial and its full-stack
template."""

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends
from sqlmodel import Session
from sqlmodel import create_engine

from library_app.config import database_url

engine = create_engine(database_url())


def get_db() -> Iterator[Session]:
    with Session(engine) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_db)]
