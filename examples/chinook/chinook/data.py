"""The store's rows, generated: the same data on every run, from one fixed random seed.

This is not the original Chinook data set, only data of its shape and about its size. The
tests call :func:`generate` too, to work out in Python what the SQL must return.
"""

from __future__ import annotations

import datetime as dt
import functools
import random
from dataclasses import dataclass
from dataclasses import fields
from decimal import Decimal
from typing import NamedTuple

from chinook.words import ADJECTIVES
from chinook.words import CITIES
from chinook.words import FIRST_NAMES
from chinook.words import LAST_NAMES
from chinook.words import NOUNS
from chinook.words import STREETS

SEED = 1729
N_ARTISTS = 250
N_ALBUMS = 350
N_TRACKS = 3000
N_CUSTOMERS = 60
N_INVOICES = 400
LINES_PER_INVOICE = (1, 2, 2, 4, 6, 9, 14)  # invoice n has LINES_PER_INVOICE[n % 7] lines
FIRST_INVOICE = dt.datetime(2021, 1, 4, 9, 0)
AUDIO_PRICE = Decimal("0.99")
VIDEO_PRICE = Decimal("1.99")

# (name, weight among albums): the genres of the original, weighted roughly as it is.
MUSIC_GENRES = (
    ("Rock", 130),
    ("Jazz", 13),
    ("Metal", 37),
    ("Alternative & Punk", 33),
    ("Rock And Roll", 2),
    ("Blues", 8),
    ("Latin", 58),
    ("Reggae", 6),
    ("Pop", 5),
    ("Soundtrack", 4),
    ("Bossa Nova", 2),
    ("Easy Listening", 2),
    ("Heavy Metal", 3),
    ("R&B/Soul", 6),
    ("Electronica/Dance", 3),
    ("World", 3),
    ("Hip Hop/Rap", 4),
    ("Alternative", 4),
    ("Classical", 8),
    ("Opera", 1),
)
VIDEO_GENRES = ("Science Fiction", "TV Shows", "Sci Fi & Fantasy", "Drama", "Comedy")
# (name, weight among albums, is video)
MEDIA_TYPES = (
    ("MPEG audio file", 80, False),
    ("Protected AAC audio file", 8, False),
    ("Protected MPEG-4 video file", 6, True),
    ("Purchased AAC audio file", 2, False),
    ("AAC audio file", 2, False),
)
# (title, reports to: an index into this tuple, counted from 1)
ORG_CHART = (
    ("General Manager", None),
    ("Sales Manager", 1),
    ("Sales Support Agent", 2),
    ("Sales Support Agent", 2),
    ("Sales Support Agent", 2),
    ("IT Manager", 1),
    ("IT Staff", 6),
    ("IT Staff", 6),
)
SUPPORT_TITLE = "Sales Support Agent"


class Artist(NamedTuple):
    artist_id: int
    name: str


class Album(NamedTuple):
    album_id: int
    title: str
    artist_id: int


class Genre(NamedTuple):
    genre_id: int
    name: str


class MediaType(NamedTuple):
    media_type_id: int
    name: str


class Track(NamedTuple):
    track_id: int
    name: str
    album_id: int
    media_type_id: int
    genre_id: int
    composer: str | None
    milliseconds: int
    bytes: int
    unit_price: Decimal


class Playlist(NamedTuple):
    playlist_id: int
    name: str


class PlaylistTrack(NamedTuple):
    playlist_id: int
    track_id: int


class Employee(NamedTuple):
    employee_id: int
    last_name: str
    first_name: str
    title: str
    reports_to: int | None
    birth_date: dt.datetime
    hire_date: dt.datetime
    address: str
    city: str
    state: str
    country: str
    postal_code: str
    phone: str
    fax: str
    email: str


class Customer(NamedTuple):
    customer_id: int
    first_name: str
    last_name: str
    company: str | None
    address: str
    city: str
    state: str | None
    country: str
    postal_code: str | None
    phone: str
    fax: str | None
    email: str
    support_rep_id: int


class Invoice(NamedTuple):
    invoice_id: int
    customer_id: int
    invoice_date: dt.datetime
    billing_address: str
    billing_city: str
    billing_state: str | None
    billing_country: str
    billing_postal_code: str | None
    total: Decimal


class InvoiceLine(NamedTuple):
    invoice_line_id: int
    invoice_id: int
    track_id: int
    unit_price: Decimal
    quantity: int


@dataclass(frozen=True)
class Store:
    """Every table's rows; the fields are in an order that satisfies the foreign keys."""

    artist: tuple[Artist, ...]
    album: tuple[Album, ...]
    genre: tuple[Genre, ...]
    media_type: tuple[MediaType, ...]
    track: tuple[Track, ...]
    playlist: tuple[Playlist, ...]
    playlist_track: tuple[PlaylistTrack, ...]
    employee: tuple[Employee, ...]
    customer: tuple[Customer, ...]
    invoice: tuple[Invoice, ...]
    invoice_line: tuple[InvoiceLine, ...]

    def tables(self) -> list[tuple[str, tuple[NamedTuple, ...]]]:
        """(table name, rows) of every table, parents before children."""
        return [(f.name, getattr(self, f.name)) for f in fields(self)]


@functools.cache
def generate(seed: int = SEED) -> Store:
    """The store's rows: a pure function of ``seed``."""
    rng = random.Random(seed)
    genre = tuple(
        Genre(i, name)
        for i, name in enumerate([g for g, _ in MUSIC_GENRES] + list(VIDEO_GENRES), 1)
    )
    media_type = tuple(MediaType(i, name) for i, (name, _, _) in enumerate(MEDIA_TYPES, 1))
    artist = _artists(rng)
    album, album_kind = _albums(rng, genre)
    track = _tracks(rng, album, album_kind)
    playlist, playlist_track = _playlists(rng, track, genre, media_type)
    employee = _employees(rng)
    customer = _customers(rng, employee)
    invoice, invoice_line = _invoices(rng, customer, track)
    return Store(
        artist=artist,
        album=album,
        genre=genre,
        media_type=media_type,
        track=track,
        playlist=playlist,
        playlist_track=playlist_track,
        employee=employee,
        customer=customer,
        invoice=invoice,
        invoice_line=invoice_line,
    )


def is_video(media_type_id: int) -> bool:
    return MEDIA_TYPES[media_type_id - 1][2]


def _person(rng: random.Random) -> tuple[str, str]:
    return rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)


def _artists(rng: random.Random) -> tuple[Artist, ...]:
    names: dict[str, None] = {}  # unique, in the order they were made
    while len(names) < N_ARTISTS:
        first, last = _person(rng)
        adjective, noun = rng.choice(ADJECTIVES), rng.choice(NOUNS)
        name = rng.choice(
            [
                f"The {adjective} {noun}s",
                f"{first} {last}",
                f"{noun} {rng.choice(NOUNS)}",
                f"{first} {last} & the {noun}s",
                f"{adjective} {noun}",
            ]
        )
        names[name] = None
    return tuple(Artist(i, name) for i, name in enumerate(names, 1))


def _albums(
    rng: random.Random, genre: tuple[Genre, ...]
) -> tuple[tuple[Album, ...], list[tuple[int, int]]]:
    """The albums, and the (media_type_id, genre_id) that all tracks of each album share."""
    music_ids = {g.name: g.genre_id for g in genre}
    music = [music_ids[name] for name, _ in MUSIC_GENRES]
    music_weights = [w for _, w in MUSIC_GENRES]
    video = [music_ids[name] for name in VIDEO_GENRES]
    albums: list[Album] = []
    kinds: list[tuple[int, int]] = []
    for i in range(1, N_ALBUMS + 1):
        # every artist has an album; the rest go to artists at random
        artist_id = i if i <= N_ARTISTS else rng.randint(1, N_ARTISTS)
        media = rng.choices(range(1, len(MEDIA_TYPES) + 1), [w for _, w, _ in MEDIA_TYPES])[0]
        if is_video(media):
            genre_id = rng.choice(video)
            title = f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}, Season {rng.randint(1, 6)}"
        else:
            genre_id = rng.choices(music, music_weights)[0]
            title = rng.choice(
                [
                    f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}",
                    f"{rng.choice(NOUNS)} of the {rng.choice(NOUNS)}",
                    f"Live in {rng.choice(CITIES)[0]}",
                    f"{rng.choice(NOUNS)}s",
                ]
            )
        albums.append(Album(i, title, artist_id))
        kinds.append((media, genre_id))
    return tuple(albums), kinds


def _tracks(
    rng: random.Random, album: tuple[Album, ...], kinds: list[tuple[int, int]]
) -> tuple[Track, ...]:
    sizes = [1] * len(album)  # every album has a track; the rest are spread at random
    for _ in range(N_TRACKS - len(album)):
        sizes[rng.randrange(len(album))] += 1
    tracks: list[Track] = []
    for a, size, (media, genre_id) in zip(album, sizes, kinds, strict=True):
        for n in range(1, size + 1):
            if is_video(media):
                name = f"Episode {n}: {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"
                ms = rng.randint(1_200_000, 3_000_000)
                size_bytes = ms * 180 + rng.randint(0, 999_999)
                price = VIDEO_PRICE
                composer = None
            else:
                name = rng.choice(
                    [
                        f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}",
                        f"{rng.choice(NOUNS)} in the {rng.choice(NOUNS)}",
                        f"{rng.choice(NOUNS)} Song",
                        f"Under the {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}",
                    ]
                )
                ms = int(rng.triangular(90_000, 720_000, 240_000))
                size_bytes = ms * 32 + rng.randint(0, 99_999)
                price = AUDIO_PRICE
                writers = rng.choice([0, 1, 1, 1, 2])  # a quarter of the tracks name none
                composer = " / ".join(" ".join(_person(rng)) for _ in range(writers)) or None
            tracks.append(
                Track(
                    track_id=len(tracks) + 1,
                    name=name,
                    album_id=a.album_id,
                    media_type_id=media,
                    genre_id=genre_id,
                    composer=composer,
                    milliseconds=ms,
                    bytes=size_bytes,
                    unit_price=price,
                )
            )
    return tuple(tracks)


def _playlists(
    rng: random.Random,
    track: tuple[Track, ...],
    genre: tuple[Genre, ...],
    media_type: tuple[MediaType, ...],
) -> tuple[tuple[Playlist, ...], tuple[PlaylistTrack, ...]]:
    genre_of = {g.genre_id: g.name for g in genre}
    audio = [t.track_id for t in track if not is_video(t.media_type_id)]

    def of_genre(*names: str) -> list[int]:
        return [t.track_id for t in track if genre_of[t.genre_id] in names]

    def some(ids: list[int], n: int) -> list[int]:
        return sorted(rng.sample(ids, min(n, len(ids))))

    contents = {
        "Music": audio,
        "Movies": [],
        "TV Shows": of_genre("TV Shows", "Drama", "Comedy"),
        "Audiobooks": [],
        "90's Music": some(audio, 200),
        "Classical": of_genre("Classical", "Opera"),
        "Heavy Metal Classic": some(of_genre("Metal", "Heavy Metal"), 25),
        "Brazilian Music": some(of_genre("Latin", "Bossa Nova"), 40),
        "Grunge": some(of_genre("Alternative & Punk", "Alternative"), 15),
        "On-The-Go 1": some(audio, 1),
    }
    playlists = tuple(Playlist(i, name) for i, name in enumerate(contents, 1))
    rows = tuple(
        PlaylistTrack(p.playlist_id, track_id) for p in playlists for track_id in contents[p.name]
    )
    return playlists, rows


def _phone(rng: random.Random) -> str:
    return f"+{rng.randint(1, 99)} {_fill(rng, '### ###-####')}"


def _fill(rng: random.Random, pattern: str) -> str:
    """``pattern`` with each # replaced by a digit and each ? by a capital letter."""
    out = []
    for c in pattern:
        if c == "#":
            c = str(rng.randint(0, 9))
        elif c == "?":
            c = rng.choice("ABCEGHJKLMNPRSTVXY")
        out.append(c)
    return "".join(out)


def _email(first: str, last: str, domain: str) -> str:
    return f"{first}.{last}@{domain}".lower()


def _employees(rng: random.Random) -> tuple[Employee, ...]:
    employees: list[Employee] = []
    for i, (title, reports_to) in enumerate(ORG_CHART, 1):
        first, last = _person(rng)
        birth = dt.datetime(rng.randint(1958, 1990), rng.randint(1, 12), rng.randint(1, 28))
        hire = dt.datetime(rng.randint(2016, 2020), rng.randint(1, 12), rng.randint(1, 28))
        employees.append(
            Employee(
                employee_id=i,
                last_name=last,
                first_name=first,
                title=title,
                reports_to=reports_to,
                birth_date=birth,
                hire_date=hire,
                address=f"{rng.randint(1, 999)} {rng.choice(STREETS)}",
                city="Calgary",
                state="AB",
                country="Canada",
                postal_code=_fill(rng, "?#? #?#"),
                phone=_phone(rng),
                fax=_phone(rng),
                email=_email(first, last, "chinookcorp.com"),
            )
        )
    return tuple(employees)


def _customers(rng: random.Random, employee: tuple[Employee, ...]) -> tuple[Customer, ...]:
    agents = [e.employee_id for e in employee if e.title == SUPPORT_TITLE]
    customers: list[Customer] = []
    for i in range(1, N_CUSTOMERS + 1):
        first, last = _person(rng)
        city, state, country, postal = rng.choice(CITIES)
        company = None
        if rng.random() < 0.2:
            company = f"{rng.choice(NOUNS)} {rng.choice(['Ltd', 'GmbH', 'Inc.', 'S.A.'])}"
        customers.append(
            Customer(
                customer_id=i,
                first_name=first,
                last_name=last,
                company=company,
                address=f"{rng.randint(1, 999)} {rng.choice(STREETS)}",
                city=city,
                state=state,
                country=country,
                postal_code=None if postal is None else _fill(rng, postal),
                phone=_phone(rng),
                fax=_phone(rng) if company else None,
                email=_email(first, f"{last}{i}", "example.com"),
                support_rep_id=rng.choice(agents),
            )
        )
    return tuple(customers)


def _invoices(
    rng: random.Random, customer: tuple[Customer, ...], track: tuple[Track, ...]
) -> tuple[tuple[Invoice, ...], tuple[InvoiceLine, ...]]:
    invoices: list[Invoice] = []
    lines: list[InvoiceLine] = []
    for n in range(N_INVOICES):
        invoice_id = n + 1
        c = rng.choice(customer)
        # four days apart, give or take: invoice ids go up with their dates
        when = FIRST_INVOICE + dt.timedelta(
            days=4 * n + rng.randint(0, 3), hours=rng.randint(0, 11), minutes=rng.randint(0, 59)
        )
        bought = rng.sample(track, LINES_PER_INVOICE[n % len(LINES_PER_INVOICE)])
        these = [
            InvoiceLine(
                invoice_line_id=len(lines) + k,
                invoice_id=invoice_id,
                track_id=t.track_id,
                unit_price=t.unit_price,
                quantity=2 if rng.random() < 0.1 else 1,
            )
            for k, t in enumerate(sorted(bought), 1)
        ]
        lines.extend(these)
        invoices.append(
            Invoice(
                invoice_id=invoice_id,
                customer_id=c.customer_id,
                invoice_date=when,
                billing_address=c.address,
                billing_city=c.city,
                billing_state=c.state,
                billing_country=c.country,
                billing_postal_code=c.postal_code,
                total=sum((li.unit_price * li.quantity for li in these), Decimal(0)),
            )
        )
    return tuple(invoices), tuple(lines)
