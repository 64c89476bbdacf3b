"""A small FastAPI service on async SQLAlchemy, with its tests."""
