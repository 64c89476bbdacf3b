"""Names, words and places the generated store is made of (all made up or common words)."""

from __future__ import annotations

FIRST_NAMES = (
    "Ada", "Alejandro", "Amara", "Astrid", "Bjorn", "Camille", "Chen", "Dario", "Elif", "Emma",
    "Farah", "Frank", "Giulia", "Hana", "Hugo", "Ines", "Isaac", "Jonas", "Kaito", "Lena",
    "Lucas", "Mei", "Mateo", "Nadia", "Niamh", "Olga", "Omar", "Pablo", "Priya", "Rafael",
    "Rosa", "Sami", "Sofia", "Tariq", "Tomas", "Ursula", "Viktor", "Wanjiru", "Yusuf", "Zoe",
)  # fmt: skip
LAST_NAMES = (
    "Almeida", "Andersen", "Bauer", "Becker", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia",
    "Gruber", "Haddad", "Holm", "Ivanova", "Jensen", "Kowalski", "Larsen", "Lemaire", "Moreau",
    "Murphy", "Nakamura", "Novak", "Okafor", "Olsen", "Pereira", "Rossi", "Ruiz", "Santos",
    "Schmidt", "Silva", "Smith", "Sorensen", "Tanaka", "Varga", "Wagner", "Wojcik", "Zhang",
)  # fmt: skip
ADJECTIVES = (
    "Black", "Blue", "Broken", "Burning", "Crimson", "Dark", "Electric", "Empty", "Fallen",
    "Golden", "Hidden", "Hollow", "Iron", "Last", "Lonely", "Lost", "Midnight", "Neon", "Quiet",
    "Restless", "Silver", "Silent", "Stone", "Velvet", "Wild", "Wooden", "Young",
)  # fmt: skip
NOUNS = (
    "Anchor", "Avenue", "Bridge", "Candle", "Circus", "City", "Crow", "Desert", "Dream", "Echo",
    "Engine", "Fever", "Fire", "Garden", "Harbor", "Heart", "Highway", "Horizon", "Island",
    "Lantern", "Machine", "Mirror", "Moon", "Mountain", "Ocean", "Radio", "River", "Road",
    "Rose", "Shadow", "Signal", "Sky", "Storm", "Sun", "Thunder", "Tide", "Tower", "Train",
    "Valley", "Wave", "Wolf",
)  # fmt: skip
STREETS = ("Main St", "Oak Ave", "Harbour Rd", "King St", "Rua Augusta", "Park Lane")
# (city, state, country, postal code pattern: # is a digit, ? a capital letter)
CITIES = (
    ("Sao Paulo", "SP", "Brazil", "#####-###"),
    ("Rio de Janeiro", "RJ", "Brazil", "#####-###"),
    ("Toronto", "ON", "Canada", "?#? #?#"),
    ("Vancouver", "BC", "Canada", "?#? #?#"),
    ("Montreal", "QC", "Canada", "?#? #?#"),
    ("New York", "NY", "USA", "#####"),
    ("Chicago", "IL", "USA", "#####"),
    ("Austin", "TX", "USA", "#####"),
    ("Seattle", "WA", "USA", "#####"),
    ("Paris", None, "France", "#####"),
    ("Lyon", None, "France", "#####"),
    ("Berlin", None, "Germany", "#####"),
    ("Stuttgart", None, "Germany", "#####"),
    ("London", None, "United Kingdom", "?## #??"),
    ("Dublin", "Dublin", "Ireland", None),
    ("Lisbon", None, "Portugal", "####-###"),
    ("Madrid", None, "Spain", "#####"),
    ("Prague", None, "Czech Republic", "### ##"),
    ("Budapest", None, "Hungary", "####"),
    ("Oslo", None, "Norway", "####"),
    ("Stockholm", None, "Sweden", "### ##"),
    ("Warsaw", None, "Poland", "##-###"),
    ("Sydney", "NSW", "Australia", "####"),
    ("Santiago", None, "Chile", None),
    ("Buenos Aires", None, "Argentina", "####"),
    ("Bangalore", "Karnataka", "India", "######"),
)
