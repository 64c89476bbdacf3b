"""A COMMIT sent as SQL escapes the test's transaction: reported, and repaired."""


def test_a_commits_for_real(pg):
    pg.execute("CREATE TABLE leaked (id int)")
    pg.execute("COMMIT")


def test_b_starts_clean(pg):
    assert pg.fetchval("SELECT to_regclass('leaked')") is None
