"""Baseline data: loaded once into the template, so every test starts with these users."""

USERS = [
    ("Alice Chen", "alice.chen@example.com"),
    ("Bob Okafor", "bob.okafor@example.com"),
    ("Carmen Ruiz", "carmen.ruiz@example.com"),
    ("Dmitri Volkov", "dmitri.volkov@example.com"),
    ("Emma Larsen", "emma.larsen@example.com"),
]


def seed(conn):
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO users (name, email) VALUES (%s, %s)", USERS)
