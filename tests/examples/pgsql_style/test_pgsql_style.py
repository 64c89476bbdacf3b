"""A pytest-pgsql test module; only its import line was changed."""

import datetime
import io
from pathlib import Path
from typing import ClassVar

import pytest
import sqlalchemy as sqla
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column

import pytest_pgsandbox.pgsql as pytest_pgsql

HERE = Path(__file__).parent
Y2K_EVE = datetime.datetime(1999, 12, 31, 23, 59, 59, tzinfo=datetime.timezone.utc)


class Base(DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "notes"
    __table_args__: ClassVar[dict[str, str]] = {"schema": "scratch"}
    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[str]


def baseline(db):
    rows = db.session.execute(sqla.text("SELECT id, email, plan FROM accounts ORDER BY id"))
    return [tuple(r) for r in rows]


BASELINE = [(1, "alice.chen@example.com", "pro"), (2, "bob.okafor@example.com", "free")]


@pytest.mark.parametrize("attempt", [1, 2])
def test_postgresql_db_puts_everything_back(postgresql_db, attempt):
    # Each attempt starts from the template, whatever the other one did.
    assert baseline(postgresql_db) == BASELINE
    assert not postgresql_db.is_dirty()
    with postgresql_db.engine.begin() as conn:
        conn.execute(sqla.text("INSERT INTO accounts (email) VALUES ('carmen.ruiz@example.com')"))
        conn.execute(sqla.text("ALTER TABLE accounts ALTER COLUMN plan TYPE varchar(20)"))
        conn.execute(sqla.text("DROP TABLE invoices"))
        conn.execute(sqla.text("SET search_path = pg_catalog"))
        conn.execute(sqla.text("CREATE SCHEMA attempt_schema"))
        conn.execute(
            sqla.text(
                "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET search_path = public', "
                "current_database()); END $$"
            )
        )
    assert postgresql_db.is_dirty()


def test_transacted_db_session_commits_stay_in_the_test(transacted_postgresql_db):
    db = transacted_postgresql_db
    db.session.execute(sqla.text("DELETE FROM invoices"))
    db.session.commit()  # a savepoint: rolled back with the test
    assert db.connection.execute(sqla.text("SELECT count(*) FROM invoices")).scalar() == 0
    db.connection.execute(sqla.text("INSERT INTO invoices (account_id, amount) VALUES (2, 5)"))
    assert db.connection.execute(sqla.text("SELECT count(*) FROM invoices")).scalar() == 1


def test_transacted_db_starts_clean(transacted_postgresql_db):
    db = transacted_postgresql_db
    assert db.connection.execute(sqla.text("SELECT count(*) FROM invoices")).scalar() == 2
    assert db.postgresql_url.startswith("postgresql+psycopg://")


def test_extensions(postgresql_db):
    assert postgresql_db.is_extension_available("hstore")
    assert not postgresql_db.is_extension_available("no_such_extension")
    assert postgresql_db.has_extension("pg_trgm")  # from --pg-extensions, in the template
    assert not postgresql_db.has_extension("hstore")
    assert postgresql_db.install_extension("hstore")
    assert postgresql_db.has_extension("hstore")
    assert postgresql_db.install_extension("hstore", exists_ok=True)
    assert not postgresql_db.install_extension("no_such_extension", if_available=True)
    postgresql_db.create_schema("ext_home")
    assert postgresql_db.install_extension("citext", schema="ext_home")


def test_schemas_and_tables(transacted_postgresql_db):
    db = transacted_postgresql_db
    assert not db.has_schema("scratch")
    db.create_table(Note)  # creates the missing schema too
    assert db.has_schema("scratch")
    assert db.has_table(Note)
    assert db.has_table(Note.__table__)
    assert db.has_table("scratch.notes")
    assert db.has_table("notes")
    assert db.has_table("accounts")
    assert not db.has_table("public.notes")
    db.create_schema("a", "b")
    db.create_schema("a", exists_ok=True)
    assert db.has_schema("a")
    assert db.has_schema("b")
    accounts = db.get_table("accounts")
    assert [c.name for c in accounts.columns] == ["id", "email", "plan", "created_at"]
    assert db.get_table("scratch.notes").schema == "scratch"
    db.session.add(Note(id=1, body="hello"))
    db.session.commit()
    assert db.session.get(Note, 1).body == "hello"


def test_schemas_and_tables_are_gone(transacted_postgresql_db):
    assert not transacted_postgresql_db.has_schema("scratch")
    assert not transacted_postgresql_db.has_table("notes")


def test_quoting_is_safe(postgresql_db):
    evil = 'x"; DROP TABLE accounts; --'
    postgresql_db.create_schema(evil)
    assert postgresql_db.has_schema(evil)
    assert not postgresql_db.has_table(evil)
    assert postgresql_db.has_table("accounts")
    assert not postgresql_db.has_extension("hstore'; DROP TABLE accounts; --")


def test_load_csv(postgresql_db):
    loaded = postgresql_db.load_csv(HERE / "people.csv", "accounts")
    assert loaded == 2
    rows = postgresql_db.session.execute(
        sqla.text("SELECT email, plan FROM accounts WHERE id >= 10 ORDER BY id")
    ).all()
    # As PostgreSQL reads CSV: "" is an empty string (an unquoted empty field is NULL).
    assert rows == [("dmitri.ivanov@example.com", "pro"), ("emeka.eze@example.com", "")]


def test_load_csv_truncate_from_a_file_object(postgresql_db):
    data = io.StringIO("account_id,amount\n2,12.50\n2,7.25\n")
    assert postgresql_db.load_csv(data, "public.invoices", truncate=True) == 2
    total = postgresql_db.session.execute(sqla.text("SELECT sum(amount) FROM invoices"))
    assert total.scalar() == pytest.approx(19.75)


def test_load_csv_names_the_bad_line(postgresql_db):
    data = io.StringIO("account_id,amount\n2,1\n2,lots\n")
    with pytest.raises(sqla.exc.DataError) as excinfo:  # SQLAlchemy's, as in pytest-pgsql
        postgresql_db.load_csv(data, "invoices")
    assert "line 3, column amount" in str(excinfo.value)
    assert "lots" in str(excinfo.value)


def test_run_sql_file(transacted_postgresql_db):
    db = transacted_postgresql_db
    db.run_sql_file(str(HERE / "bump.sql"), plan="enterprise")
    plans = db.connection.execute(sqla.text("SELECT DISTINCT plan FROM accounts")).all()
    assert plans == [("enterprise",)]
    with open(HERE / "bump.sql") as fd:
        db.run_sql_file(fd, plan="free")
    count = db.connection.execute(sqla.text("SELECT count(*) FROM invoices")).scalar()
    assert count == 4


def test_reset_db(transacted_postgresql_db):
    db = transacted_postgresql_db
    db.connection.execute(sqla.text("DELETE FROM invoices"))
    db.reset_db()
    assert db.connection.execute(sqla.text("SELECT count(*) FROM invoices")).scalar() == 2


@pytest_pgsql.freeze_time("1999-12-31 23:59:59")
def test_freeze_time_decorator(postgresql_db):
    assert datetime.datetime.now(datetime.timezone.utc) == Y2K_EVE
    with postgresql_db.engine.begin() as conn:
        conn.execute(sqla.text("INSERT INTO accounts (email) VALUES ('frozen@example.com')"))
        stored = conn.execute(
            sqla.text("SELECT created_at FROM accounts WHERE email = 'frozen@example.com'")
        ).scalar()
        assert stored == Y2K_EVE
        assert conn.execute(sqla.text("SELECT CURRENT_DATE")).scalar() == Y2K_EVE.date()


def test_time_freeze_tick_unfreeze(transacted_postgresql_db):
    db = transacted_postgresql_db
    db.time.freeze("1999-12-31 23:59:59")
    now = db.connection.execute(sqla.text("SELECT now()")).scalar()
    assert now == Y2K_EVE
    db.time.freezer.tick(datetime.timedelta(seconds=1))  # freezegun's factory: both clocks
    db.time.tick(1)  # both clocks
    assert datetime.datetime.now(datetime.timezone.utc) == Y2K_EVE + datetime.timedelta(seconds=2)
    db.connection.commit()  # now() is the transaction's start: look in a new one
    later = db.connection.execute(sqla.text("SELECT now()")).scalar()
    assert later == Y2K_EVE + datetime.timedelta(seconds=2)
    db.time.unfreeze()
    assert datetime.date.today().year > 2000


def test_time_context_manager(transacted_postgresql_db):
    with transacted_postgresql_db.time.freeze("2030-06-01") as freezer:
        assert freezer is not None
        assert datetime.date.today() == datetime.date(2030, 6, 1)
        today = transacted_postgresql_db.connection.execute(sqla.text("SELECT CURRENT_DATE"))
        assert today.scalar() == datetime.date(2030, 6, 1)
    assert datetime.date.today().year < 2030


def test_custom_engine_fixture(jdb):
    assert jdb.engine.dialect._json_serializer is not None
    with jdb.engine.begin() as conn:
        conn.execute(sqla.text("CREATE TABLE docs (body json)"))
        conn.execute(
            sqla.table("docs", sqla.column("body", sqla.JSON)).insert(), [{"body": {"a": 1}}]
        )
    with jdb.engine.connect() as conn:
        assert conn.execute(sqla.text("SELECT body->>'a' FROM docs")).scalar() == "1"
    jdb.create_schema("from_helpers")  # committed: the engine's connections see it
    with jdb.engine.connect() as conn:
        query = "SELECT count(*) FROM pg_namespace WHERE nspname = 'from_helpers'"
        assert conn.execute(sqla.text(query)).scalar() == 1


def test_custom_engine_fixture_starts_clean(jdb):
    assert not jdb.has_table("docs")
    assert not jdb.has_schema("from_helpers")


def test_custom_transacted_fixture(tjdb):
    tjdb.connection.execute(sqla.text("DELETE FROM invoices"))
    tjdb.create_table(Note)
    assert tjdb.has_table(Note)
    assert tjdb.connection.execute(sqla.text("SELECT count(*) FROM invoices")).scalar() == 0


def test_custom_transacted_fixture_starts_clean(tjdb):
    assert not tjdb.has_table(Note)
    assert tjdb.connection.execute(sqla.text("SELECT count(*) FROM invoices")).scalar() == 2


def test_database_uri_and_pg_engine(database_uri, pg_engine):
    assert database_uri.startswith("postgresql+psycopg://")
    engine = sqla.create_engine(database_uri)
    try:
        with engine.connect() as conn:
            assert conn.execute(sqla.text("SELECT count(*) FROM accounts")).scalar() == 2
    finally:
        engine.dispose()


def test_sqlalchemy_freezegun_on_an_engine(jdb):
    freezer = pytest_pgsql.SQLAlchemyFreezegun(jdb.engine)
    with freezer.freeze("1999-12-31 23:59:59"):
        assert freezer.is_frozen
        with jdb.engine.connect() as conn:
            assert conn.execute(sqla.text("SELECT CURRENT_TIMESTAMP")).scalar() == Y2K_EVE
            assert conn.execute(sqla.text("SELECT now()")).scalar() == Y2K_EVE
    assert not freezer.is_frozen
    with jdb.engine.connect() as conn:
        assert conn.execute(sqla.text("SELECT now()")).scalar() > Y2K_EVE
