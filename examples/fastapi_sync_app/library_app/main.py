"""No `from __future__ import annotations`: FastAPI reads the annotations at runtime."""

from fastapi import FastAPI
from fastapi import HTTPException
from sqlmodel import select

from library_app.db import SessionDep
from library_app.models import Book
from library_app.models import BookIn

app = FastAPI()


@app.post("/books", status_code=201)
def add_book(book: BookIn, session: SessionDep) -> Book:
    row = Book.model_validate(book)
    session.add(row)
    session.commit()
    session.refresh(row)
    return row


@app.get("/books")
def list_books(session: SessionDep) -> list[Book]:
    return list(session.exec(select(Book).order_by(Book.id)))


@app.get("/books/{book_id}")
def get_book(book_id: int, session: SessionDep) -> Book:
    book = session.get(Book, book_id)
    if book is None:
        raise HTTPException(status_code=404, detail="no such book")
    return book
