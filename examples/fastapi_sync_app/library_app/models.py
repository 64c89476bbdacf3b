from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field
from sqlmodel import SQLModel


class BookIn(SQLModel):
    title: str = Field(max_length=200)
    author: str = Field(max_length=200)


class Book(BookIn, table=True):
    __tablename__ = "books"

    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime | None = Field(
        default=None, sa_column_kwargs={"server_default": sa.func.now()}
    )
