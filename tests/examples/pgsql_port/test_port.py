"""pytest-pgsql's behaviours, one test each, on pytest_pgsandbox.pgsql."""

import datetime
import io

import pytest
import sqlalchemy as sqla
import sqlalchemy.exc as sa_exc

import pytest_pgsandbox.pgsql as pytest_pgsql
from pytest_pgsandbox.pgsql import database
from pytest_pgsandbox.pgsql import errors

UTC = datetime.timezone.utc
PARENT = sqla.Table(
    "parent",
    sqla.MetaData(),
    sqla.Column("id", sqla.Integer, primary_key=True),
    schema="ledger",
)
CHILD = sqla.Table(
    "child",
    sqla.MetaData(),
    sqla.Column("id", sqla.Integer, primary_key=True),
    sqla.Column("parent_id", sqla.ForeignKey(PARENT.c.id)),
)


def test_both_fixtures_share_one_database(postgresql_db, transacted_postgresql_db):
    with postgresql_db.engine.connect() as conn:
        conn.execute(sqla.text("CREATE TABLE shared_note (body text)"))
        conn.execute(sqla.text("INSERT INTO shared_note VALUES ('seen by both')"))
        conn.commit()
    seen = transacted_postgresql_db.connection.execute(sqla.text("SELECT body FROM shared_note"))
    assert seen.scalar() == "seen by both"
    assert postgresql_db.postgresql_url == transacted_postgresql_db.postgresql_url


def test_the_shared_database_starts_clean_again(either_db):
    assert not either_db.has_table("shared_note")
    assert not either_db.is_dirty()


def test_modules_carry_pytest_pgsqls_names():
    assert database.PostgreSQLTestDB is pytest_pgsql.PostgreSQLTestDB
    assert pytest_pgsql.time.SQLAlchemyFreezegun is pytest_pgsql.SQLAlchemyFreezegun
    assert pytest_pgsql.ext.create_engine_fixture is pytest_pgsql.create_engine_fixture
    assert issubclass(errors.DatabaseIsDirtyError, errors.DatabaseRestoreFailedError)


def test_run_sql_file_returns_a_sqlalchemy_result(either_db):
    result = either_db.run_sql_file(io.StringIO("SELECT 40 + :n"), n=2)
    assert isinstance(result, sqla.engine.CursorResult)
    assert result.scalar() == 42


def test_a_duplicate_row_in_a_csv_is_an_integrity_error(either_db):
    either_db.create_table(PARENT)
    data = "id\n1\n1\n"
    with pytest.raises(sa_exc.IntegrityError) as excinfo:
        either_db.load_csv(io.StringIO(data), PARENT)
    assert "line 3" in str(excinfo.value)


def test_truncating_a_referenced_table_without_cascade(transacted_postgresql_db):
    db = transacted_postgresql_db
    db.create_table(PARENT, CHILD)
    with pytest.raises(sa_exc.NotSupportedError) as excinfo:
        db.load_csv(io.StringIO("id\n1\n"), PARENT, truncate=True)
    message = str(excinfo.value)
    assert "cascade=True" in message
    assert "line of the file" not in message
    db.rollback()  # takes the tables back too: the test's transaction
    db.create_table(PARENT, CHILD)
    assert db.load_csv(io.StringIO("id\n1\n"), PARENT, truncate=True, cascade=True) == 1


def test_extension_errors_are_sqlalchemys(either_db):
    with pytest.raises(sa_exc.DataError):  # no such extension name can exist
        either_db.install_extension('x"; DROP TABLE users; --')
    either_db.rollback()
    assert either_db.install_extension("pg_trgm") is True
    with pytest.raises(sa_exc.ProgrammingError):
        either_db.install_extension("pg_trgm")
    either_db.rollback()
    assert either_db.install_extension("pg_trgm", exists_ok=True) is True


def test_has_table_refuses_other_types_with_pytest_pgsqls_message(either_db):
    with pytest.raises(TypeError) as excinfo:
        either_db.has_table(0)
    assert str(excinfo.value) == "Expected str, SQLAlchemy Table, or declarative model, got 'int'."


def test_a_snapshot_on_an_instance_built_by_hand(transacted_postgresql_db):
    connection = transacted_postgresql_db.connection
    url = transacted_postgresql_db.postgresql_url
    snapshot = database.create_database_snapshot(connection)
    assert "public" in snapshot["schemas"]
    db = database.TransactedPostgreSQLTestDB(url, connection, restore_state=snapshot)
    assert not db.is_dirty()
    db.create_schema("scratch")
    assert db.is_dirty()
    db.restore_to_snapshot()
    assert not db.has_schema("scratch")
    assert not db.is_dirty()


@pytest.mark.parametrize("cls", [database.PostgreSQLTestDB, database.TransactedPostgreSQLTestDB])
def test_without_a_snapshot(transacted_postgresql_db, cls):
    db = cls(transacted_postgresql_db.postgresql_url, transacted_postgresql_db.connection)
    with pytest.raises(errors.NoSnapshotAvailableError):
        db.restore_to_snapshot()
    db.reset_db()  # only rolls back: nothing to restore to


def test_reset_db_after_a_commit_sent_as_sql(transacted_postgresql_db):
    db = transacted_postgresql_db
    db.connection.execute(sqla.text("CREATE SCHEMA committed_by_mistake; COMMIT"))
    with pytest.raises(errors.DatabaseIsDirtyError):
        db.reset_db()
    db.connection.execute(sqla.text("DROP SCHEMA committed_by_mistake; COMMIT"))


def test_the_commit_did_not_outlive_its_test(transacted_postgresql_db):
    assert not transacted_postgresql_db.has_schema("committed_by_mistake")


def test_freezer_tick_moves_the_database_clock_over_midnight(either_db):
    with either_db.time.freeze("1999-12-31 23:59:59") as freezer:
        freezer.tick()
        now = either_db.session.execute(sqla.text("SELECT NOW()")).scalar()
        assert now == datetime.datetime(2000, 1, 1, tzinfo=UTC)
        assert datetime.date.today() == datetime.date(2000, 1, 1)


def test_a_freezer_on_the_session(either_db):
    freezer = pytest_pgsql.SQLAlchemyFreezegun(either_db.session)
    with freezer.freeze("2000-01-01"):
        assert either_db.session.execute(sqla.text("SELECT CURRENT_DATE")).scalar() == (
            datetime.date(2000, 1, 1)
        )
    assert datetime.date.today().year > 2000


def test_timeofday_reads_as_pytest_pgsql_wrote_it(either_db):
    with either_db.time.freeze("2099-12-31 23:59:59.123"):
        text = either_db.session.execute(sqla.text("SELECT timeofday()")).scalar()
    assert text == "2099-12-31 23:59:59.123000 +0000"


def test_freeze_time_names_the_test_and_the_count():
    @pytest_pgsql.freeze_time("1999-12-31")
    def lonely():
        pass

    with pytest.raises(RuntimeError) as excinfo:
        lonely()
    assert str(excinfo.value).endswith("'lonely' has 0.")


def test_pg_engine_alone_has_a_database(pg_engine):
    with pg_engine.connect() as conn:
        query = "SELECT count(*) FROM pg_extension WHERE extname = 'btree_gist'"
        assert conn.execute(sqla.text(query)).scalar() == 1
