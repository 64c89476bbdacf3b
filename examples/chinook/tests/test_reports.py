"""Reports a music store runs, checked against the rows the template was seeded with."""

from __future__ import annotations

import itertools
from collections import Counter
from collections import defaultdict
from decimal import Decimal

from chinook.data import LINES_PER_INVOICE
from chinook.data import N_ALBUMS
from chinook.data import N_ARTISTS
from chinook.data import N_CUSTOMERS
from chinook.data import N_INVOICES
from chinook.data import N_TRACKS
from chinook.data import Store
from chinook.data import is_video
from psycopg import sql


def test_every_table_holds_the_generated_rows(pg, store: Store):
    counts = {
        table: pg.fetchval(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
        for table, _rows in store.tables()
    }
    assert counts == {table: len(rows) for table, rows in store.tables()}
    assert (counts["artist"], counts["album"], counts["track"]) == (N_ARTISTS, N_ALBUMS, N_TRACKS)
    assert (counts["customer"], counts["invoice"]) == (N_CUSTOMERS, N_INVOICES)
    cycles, rest = divmod(N_INVOICES, len(LINES_PER_INVOICE))
    assert counts["invoice_line"] == cycles * sum(LINES_PER_INVOICE) + sum(LINES_PER_INVOICE[:rest])
    # no artist without an album, no album without a track
    lonely_artists = pg.fetchall(
        "SELECT artist_id FROM artist WHERE NOT EXISTS "
        "(SELECT FROM album WHERE album.artist_id = artist.artist_id)"
    )
    empty_albums = pg.fetchall(
        "SELECT album_id FROM album WHERE NOT EXISTS "
        "(SELECT FROM track WHERE track.album_id = album.album_id)"
    )
    assert (lonely_artists, empty_albums) == ([], [])


GENRE_REVENUE = """
WITH revenue AS (
    SELECT g.name AS genre, sum(l.unit_price * l.quantity) AS revenue
    FROM invoice_line AS l
    JOIN track AS t USING (track_id)
    JOIN genre AS g USING (genre_id)
    GROUP BY g.name
)
SELECT genre,
       revenue,
       rank() OVER (ORDER BY revenue DESC) AS rank,
       sum(revenue) OVER (ORDER BY revenue DESC, genre) AS running_total,
       sum(revenue) OVER () AS grand_total
FROM revenue
ORDER BY revenue DESC, genre
"""


def test_top_selling_genres_by_revenue(pg, store: Store):
    rows = pg.fetchall(GENRE_REVENUE)

    genre_of_track = {t.track_id: t.genre_id for t in store.track}
    genre_name = {g.genre_id: g.name for g in store.genre}
    revenue: dict[str, Decimal] = defaultdict(Decimal)
    for line in store.invoice_line:
        revenue[genre_name[genre_of_track[line.track_id]]] += line.unit_price * line.quantity
    expected = sorted(revenue.items(), key=lambda item: (-item[1], item[0]))

    assert [(genre, amount) for genre, amount, *_ in rows] == expected
    ranks = [1 + sum(other > amount for other in revenue.values()) for _, amount in expected]
    assert [row[2] for row in rows] == ranks
    assert [row[3] for row in rows] == list(itertools.accumulate(a for _, a in expected))
    grand_total = sum(i.total for i in store.invoice)
    assert {row[4] for row in rows} == {grand_total}
    assert pg.fetchval("SELECT sum(total) FROM invoice") == grand_total
    assert rows[0][0] == "Rock"  # the heaviest genre among the generated albums


CUSTOMERS_PER_MANAGER = """
WITH RECURSIVE team (manager_id, member_id, depth) AS (
    SELECT employee_id, employee_id, 0 FROM employee
    UNION ALL
    SELECT team.manager_id, e.employee_id, team.depth + 1
    FROM team
    JOIN employee AS e ON e.reports_to = team.member_id
)
SELECT m.employee_id,
       m.title,
       max(team.depth) AS levels_below,
       count(c.customer_id) AS customers
FROM team
JOIN employee AS m ON m.employee_id = team.manager_id
LEFT JOIN customer AS c ON c.support_rep_id = team.member_id
GROUP BY m.employee_id, m.title
ORDER BY m.employee_id
"""


def test_customers_per_support_employee_through_the_hierarchy(pg, store: Store):
    rows = pg.fetchall(CUSTOMERS_PER_MANAGER)

    reports: dict[int, list[int]] = defaultdict(list)
    for e in store.employee:
        if e.reports_to is not None:
            reports[e.reports_to].append(e.employee_id)

    def team(boss: int, depth: int = 0) -> list[tuple[int, int]]:
        return [(boss, depth)] + [m for r in reports[boss] for m in team(r, depth + 1)]

    supported = Counter(c.support_rep_id for c in store.customer)
    expected = []
    for e in store.employee:
        members = team(e.employee_id)
        levels = max(depth for _, depth in members)
        expected.append((e.employee_id, e.title, levels, sum(supported[m] for m, _ in members)))
    assert rows == expected

    by_title = {title: customers for _, title, _, customers in rows}
    assert by_title["General Manager"] == N_CUSTOMERS  # everyone reports up to the top
    assert by_title["Sales Manager"] == N_CUSTOMERS  # all support agents are in sales
    assert by_title["IT Manager"] == 0
    assert max(levels for _, _, levels, _ in rows) == 2


def test_invoice_totals_equal_the_sum_of_their_lines(pg, store: Store):
    wrong = pg.fetchall(
        """
        SELECT i.invoice_id, i.total, sum(l.unit_price * l.quantity)
        FROM invoice AS i
        LEFT JOIN invoice_line AS l USING (invoice_id)
        GROUP BY i.invoice_id
        HAVING i.total IS DISTINCT FROM sum(l.unit_price * l.quantity)
        """
    )
    assert wrong == []
    # each line is charged at its track's price
    mispriced = pg.fetchall(
        "SELECT l.invoice_line_id FROM invoice_line AS l JOIN track AS t USING (track_id) "
        "WHERE l.unit_price <> t.unit_price"
    )
    assert mispriced == []
    # the best customers by lifetime spend
    top = pg.fetchall(
        """
        SELECT c.customer_id, c.first_name || ' ' || c.last_name, sum(i.total) AS spent
        FROM customer AS c
        JOIN invoice AS i USING (customer_id)
        GROUP BY c.customer_id
        ORDER BY spent DESC, c.customer_id
        LIMIT 5
        """
    )
    spent: dict[int, Decimal] = defaultdict(Decimal)
    for invoice in store.invoice:
        spent[invoice.customer_id] += invoice.total
    name = {c.customer_id: f"{c.first_name} {c.last_name}" for c in store.customer}
    best = sorted(spent.items(), key=lambda item: (-item[1], item[0]))[:5]
    assert top == [(cid, name[cid], amount) for cid, amount in best]


PLAYLISTS = """
SELECT p.name, count(t.track_id) AS tracks, coalesce(sum(t.milliseconds), 0) AS ms
FROM playlist AS p
LEFT JOIN playlist_track AS pt USING (playlist_id)
LEFT JOIN track AS t USING (track_id)
GROUP BY p.playlist_id
ORDER BY p.playlist_id
"""


def test_playlists_and_what_they_hold(pg, store: Store):
    rows = pg.fetchall(PLAYLISTS)

    ms = {t.track_id: t.milliseconds for t in store.track}
    held: dict[int, list[int]] = defaultdict(list)
    for row in store.playlist_track:
        held[row.playlist_id].append(row.track_id)
    expected = [
        (p.name, len(held[p.playlist_id]), sum(ms[t] for t in held[p.playlist_id]))
        for p in store.playlist
    ]
    assert rows == expected
    empty = {name for name, tracks, _ in rows if tracks == 0}
    assert empty == {"Movies", "Audiobooks"}

    # "Music" holds exactly the audio tracks: nothing missing, nothing extra
    audio = {t.track_id for t in store.track if not is_video(t.media_type_id)}
    music = pg.fetchall(
        "SELECT pt.track_id FROM playlist_track AS pt JOIN playlist AS p USING (playlist_id) "
        "WHERE p.name = 'Music' ORDER BY pt.track_id"
    )
    assert [track_id for (track_id,) in music] == sorted(audio)
    # "Classical" holds nothing but classical music and opera
    genres = pg.fetchall(
        """
        SELECT DISTINCT g.name
        FROM playlist AS p
        JOIN playlist_track AS pt USING (playlist_id)
        JOIN track AS t USING (track_id)
        JOIN genre AS g USING (genre_id)
        WHERE p.name = 'Classical'
        ORDER BY g.name
        """
    )
    assert [g for (g,) in genres] == ["Classical", "Opera"]
