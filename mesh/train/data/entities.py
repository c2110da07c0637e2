"""Entity values for synthetic messages, with disjoint pools per split.

A value's split is a pure function of the value (:func:`split_of`): a stable hash of its
kind and text, except that everything in the seeded demo database (names, emails,
cities, products, order ids) is reserved for ``test``. Generators for one split reject
values that belong to another, so no name, city, product, email, order id, amount or
date of the test split can occur in training, whatever the seed.

Training draws most copyable values from *invented* strings (pseudo-words with accents,
random digits) rather than from the curated lists: a value seen once cannot be
memorised, so the model has to learn to copy spans, which is what unseen customer data
needs.
"""

from __future__ import annotations

import sqlite3
import tempfile
import unicodedata
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import cache
from hashlib import blake2b
from pathlib import Path
from random import Random
from typing import Literal

from mesh.tools import orders

_Day = date  # the class below has a date() method, which shadows the name in its body

Split = Literal["train", "validation", "test"]
SPLITS: tuple[Split, ...] = ("train", "validation", "test")

_MAX_DRAWS = 10_000

# fmt: off
_FIRST_NAMES = (
    "Adaeze", "Adrián", "Agnieszka", "Ahmed", "Aiko", "Alejandro", "Aleksander", "Alessia",
    "Amélie", "Anders", "André", "Anneliese", "Antoine", "Ayşe", "Beatriz", "Benedikt",
    "Björn", "Bogdan", "Bruno", "Carmen", "Caoimhe", "Chiara", "Chidi", "Clément", "Dagny",
    "Daniela", "Darius", "Deniz", "Dorota", "Élodie", "Emre", "Enzo", "Esperanza", "Eun-ji",
    "Fabián", "Farida", "Felipe", "Florian", "François", "Gabriela", "Giulia", "Gonçalo",
    "Grzegorz", "Gunnar", "Hélène", "Henrik", "Ibrahim", "Ines", "Ioana", "Irina", "Jakub",
    "Javier", "Jérôme", "Jiří", "Joaquín", "Jorge", "Juliette", "Kai", "Kalani", "Karolina",
    "Katarzyna", "Kemal", "Kenji", "Lars", "Laurențiu", "Leandro", "Lena", "Lorenzo",
    "Luděk", "Lúcia", "Magnus", "Małgorzata", "Manon", "Marek", "Margarida", "Mariana",
    "Matías", "Maximilian", "Mehmet", "Mika", "Miloš", "Nadia", "Naledi", "Nikolai",
    "Noémie", "Oluwaseun", "Oskar", "Pablo", "Paulina", "Pedro", "Petra", "Quentin",
    "Radek", "Raphaël", "Renée", "Rodrigo", "Rui", "Saanvi", "Salomé", "Santiago", "Sebastián",
    "Signe", "Simão", "Søren", "Stéphane", "Svetlana", "Takeshi", "Tereza", "Thandiwe",
    "Thiago", "Tobias", "Ugo", "Umut", "Valérie", "Vasco", "Vikram", "Wojciech", "Ximena",
    "Yasmin", "Yusuf", "Zeynep", "Zsófia", "Óscar", "Åsa", "Øyvind", "Ève",
)
_LAST_NAMES = (
    "Abara", "Acosta", "Alves", "Amundsen", "Bauer", "Becker", "Bergström", "Błaszczyk",
    "Bonnet", "Brandão", "Carvalho", "Çelik", "Chevalier", "Conti", "Correia", "Czerny",
    "Dąbrowski", "De Luca", "Delgado", "Demir", "Díaz", "Dvořák", "Eriksen", "Esposito",
    "Fernández", "Ferreira", "Fontaine", "Galli", "Gómez", "Grünewald", "Hansen", "Horváth",
    "Husić", "Iglesias", "Jansen", "Jiménez", "Kaczmarek", "Kaya", "Kovačević", "Král",
    "Krüger", "Laine", "Lambert", "Lefèvre", "Lombardi", "López", "Maier", "Marchetti",
    "Martín", "Mazur", "Mendes", "Mercier", "Molnár", "Morales", "Nakashima", "Navarro",
    "Neumann", "Nielsen", "Nowak", "Núñez", "Obi", "Öztürk", "Pereira", "Pham", "Popescu",
    "Quintero", "Ramírez", "Richter", "Rocha", "Romano", "Rousseau", "Ruiz", "Santos",
    "Schäfer", "Schmidt", "Šimić", "Sokolov", "Sørensen", "Suárez", "Svoboda", "Szabó",
    "Takahashi", "Teixeira", "Thiébaut", "Torres", "Tran", "Vargas", "Vasquez", "Vidal",
    "Virtanen", "Vogel", "Wagner", "Weiß", "Wiśniewski", "Yamamoto", "Zając", "Zimmermann",
    "Ó Súilleabháin", "Ærø", "Ødegård",
)
_CITIES = (
    "Aarhus", "Antwerp", "Barcelona", "Bergen", "Bilbao", "Bologna", "Bordeaux", "Bratislava",
    "Bremen", "Brno", "Brussels", "Bucharest", "Budapest", "Calgary", "Cork", "Córdoba",
    "Dresden", "Düsseldorf", "Florence", "Gdańsk", "Geneva", "Genoa", "Ghent", "Gothenburg",
    "Graz", "Groningen", "Hamburg", "Helsinki", "Kraków", "Leipzig", "León", "Liège",
    "Ljubljana", "Łódź", "Málaga", "Malmö", "Marseille", "Montréal", "Nantes", "Naples",
    "Nice", "Nuremberg", "Oslo", "Ottawa", "Porto", "Poznań", "Prague", "Québec", "Reykjavík",
    "Riga", "Rotterdam", "Salzburg", "Sevilla", "Stockholm", "Strasbourg", "Tallinn",
    "Tampere", "Toulouse", "Trondheim", "Turin", "Utrecht", "València", "Vilnius", "Warsaw",
    "Winnipeg", "Wrocław", "Zagreb", "Zaragoza", "Zürich", "İzmir", "Győr", "Tórshavn",
)
_COUNTRIES = (
    "Austria", "Belgium", "Canada", "Croatia", "Czechia", "Denmark", "Estonia", "Finland",
    "France", "Germany", "Hungary", "Iceland", "Ireland", "Italy", "Latvia", "Lithuania",
    "Netherlands", "Norway", "Poland", "Portugal", "Romania", "Slovakia", "Slovenia",
    "Spain", "Sweden", "Switzerland", "Türkiye", "USA", "United Kingdom", "Faroe Islands",
)
_STREETS = (
    "Ash Grove", "Baker Street", "Beech Road", "Birch Lane", "Broadway", "Castle Street",
    "Cedar Avenue", "Chapel Road", "Cherry Lane", "Dock Road", "Duke Street", "Garden Row",
    "George Street", "Green Lane", "High Street", "Kingsway", "Market Square", "Mill Lane",
    "New Road", "North Street", "Orchard Way", "Queen Street", "River View", "School Lane",
    "Victoria Road", "Willow Close", "Hauptstraße", "Bahnhofstraße", "Schillerplatz",
    "Rue Lafayette", "Rue du Bac", "Avenue Foch", "Calle de Alcalá", "Gran Vía",
    "Avenida da Liberdade", "Rua das Flores", "Via del Corso", "Corso Buenos Aires",
    "Nørrebrogade", "Drottninggatan", "Karl Johans gate", "ulica Długa", "Váci utca",
    "Vinohradská", "Ilica", "Laugavegur",
)
_PRODUCTS = (
    "Air Fryer", "Bamboo Cutting Board", "Bike Helmet", "Blender Pro 600", "Camping Stove",
    "Ceramic Teapot", "Cordless Drill", "Digital Camera", "Drone Mini 2", "Electric Kettle",
    "Espresso Machine", "Gaming Mouse", "Graphic Tablet", "Hair Dryer", "Hiking Boots",
    "Instant Camera", "Kitchen Scale", "LED Strip Lights", "Linen Duvet Cover", "Mesh Wi-Fi Router",
    "Microphone USB", "Mini Projector", "Mountain Bike Lights", "Office Desk", "Pasta Maker",
    "Power Bank 20000mAh", "Rain Jacket", "Robot Vacuum", "Rowing Machine", "Sleeping Bag",
    "Soundbar 2.1", "Standing Desk Mat", "Stand Mixer", "Steam Iron", "Table Fan",
    "Tablet 10-inch", "Thermal Mug", "Toaster 4-Slice", "Travel Adapter", "Trekking Poles",
    "Tripod", "Vinyl Turntable", "Waffle Iron", "Wall Clock", "Wireless Charger",
    "Wool Scarf", "Smart Thermostat", "Electric Toothbrush", "Baby Monitor", "Dash Cam",
    "Kayak Paddle", "Leather Wallet", "Massage Gun", "Noise Machine", "Reading Glasses",
    "Ski Goggles", "Snorkel Set", "Tennis Racket", "Ukulele", "Yoga Blocks",
)
_EMAIL_DOMAINS = (
    "gmail.com", "outlook.com", "yahoo.com", "proton.me", "icloud.com", "gmx.de", "web.de",
    "orange.fr", "free.fr", "libero.it", "seznam.cz", "wp.pl", "hotmail.co.uk", "mail.ru",
    "btinternet.com", "telenet.be", "kpnmail.nl", "sapo.pt", "yandex.com", "fastmail.com",
    "posteo.de", "laposte.net", "tutanota.com", "zoho.com", "aol.com", "live.nl",
)
_REASONS = (
    "it arrived damaged", "I ordered the wrong size", "I no longer need it",
    "it was a duplicate order", "the color is not what I expected", "it stopped working",
    "the box was empty", "I found a better price elsewhere", "it is too small",
    "it is too big", "the screen is cracked", "parts are missing", "it was delivered late",
    "I changed my mind", "it does not fit my desk", "the battery does not charge",
    "it smells of smoke", "the zipper is broken", "I bought it by mistake",
    "it was a gift and they already have one", "the left earbud is silent",
    "the lid does not close", "it makes a loud noise", "the fabric is torn",
    "it is not compatible with my laptop", "the instructions are missing",
    "it overheats after ten minutes", "the paint is scratched", "the wrong model was sent",
    "I moved house", "the seller description was misleading", "it leaks water",
    "the buttons stick", "the strap snapped", "it was cheaper in store",
    "the handle came off", "it never turned on", "I ordered two by accident",
    "the delivery takes too long", "my plans changed", "the cable is frayed",
    "the glass shattered in transit", "the sound keeps cutting out", "it is heavier than listed",
    "the material feels cheap", "my cat chewed the box open", "it was meant for my old flat",
    "the fan rattles", "it came without the remote", "the seams are coming apart",
    "my employer already bought one", "the display flickers", "the charger is the wrong plug",
    "it does not match the photos", "the wheels wobble", "the size chart was wrong",
    "the app will not pair with it", "the packaging was soaked", "it arrived two weeks late",
    "I found the same thing at home", "it clashes with my furniture", "the taste is off",
    "it tore on the first use", "the colour faded after one wash", "it beeps constantly",
    "the warranty card is missing", "the manual is in the wrong language",
    "the keyboard layout is wrong", "it needs a different voltage", "the lock is jammed",
    "the drawer will not slide", "the motor burns out", "a screw is missing",
    "the ink ran dry immediately", "my daughter picked another one", "the event got cancelled",
    "I ordered the wrong model", "the strap is too short", "it was sent to the wrong city",
    "it is louder than advertised", "the seal was broken", "it did not arrive in time",
    "my bank flagged the payment", "the previous one works again",
)
_CARRIERS = (
    "Posti", "PostNL", "Correos", "Colissimo", "GLS", "Hermes", "Bring", "PostNord",
    "InPost", "Chronopost", "Purolator", "Canada Post", "An Post", "BRT", "SEUR",
)
# fmt: on

_CURATED: dict[str, tuple[str, ...]] = {
    "first_name": _FIRST_NAMES,
    "last_name": _LAST_NAMES,
    "domain": _EMAIL_DOMAINS,
    "city": _CITIES,
    "country": _COUNTRIES,
    "street": _STREETS,
    "product": _PRODUCTS,
    "reason": _REASONS,
    "carrier": _CARRIERS,
}
"""Hand-written values per entity kind; each value's split comes from :func:`split_of`."""

# fmt: off
CONTINENTAL_ADDRESS_SHARE = 0.4
"""Share of addresses written street first, number after, postcode before the city."""
_STREET_KINDS = ("Street", "Road", "Lane", "Avenue", "Way", "Close", "Drive", "Square")
_STREET_PREFIXES = ("Rue", "Via", "Calle", "Rua", "Avenida", "Avenue")
_STREET_SUFFIXES = ("straße", "gade", "gatan", "weg", "laan", "utca")
_CITY_SUFFIXES = ("ville", "burg", "ton", "stad", "heim", "field", "polis", "by", "dorf")
_PRODUCT_NOUNS = (
    "Lamp", "Kettle", "Speaker", "Chair", "Blender", "Headset", "Backpack", "Router",
    "Cooker", "Grill", "Charger", "Jacket", "Boots", "Watch", "Scale", "Heater", "Monitor",
    "Pillow", "Mattress", "Sander", "Vacuum", "Juicer", "Printer", "Keyboard", "Tent",
)
_REASON_SUBJECTS = ("it", "the item", "the package", "the parcel", "the product", "my order")
_REASON_VERBS = (
    "arrived", "came", "showed up", "was delivered", "turned up", "got here",
)
_REASON_STATES = (
    "broken", "dented", "wet", "opened", "crushed", "faulty", "scratched", "incomplete",
    "too late", "in the wrong colour", "without a charger", "with a crack", "soaked",
)
_REASON_WISHES = (
    "I do not want it anymore", "I picked the wrong one", "I need a different version",
    "I ordered it twice", "it is not what I needed", "my budget changed",
)

_VOWELS = "aeiouaeiouy"
_ACCENTED = {
    "a": "áàâäãåą",
    "e": "éèêëę",
    "i": "íìîï",
    "o": "óòôöõø",
    "u": "úùûüů",
    "c": "çčć",
    "n": "ñń",
    "s": "šś",
    "z": "žżź",
    "r": "ř",
    "l": "ł",
    "g": "ğ",
}
_ONSETS = (
    "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z",
    "br", "ch", "dr", "fr", "gr", "kr", "pl", "sh", "st", "th", "tr", "sv", "zh", "kv", "x",
)
_CODAS = ("", "", "", "n", "r", "s", "l", "k", "t", "m", "x", "nd", "rt", "sk", "z")
# fmt: on


@dataclass(frozen=True)
class DemoValues:
    """What the seeded demo database contains: reserved for the test split."""

    first_names: frozenset[str]
    last_names: frozenset[str]
    emails: frozenset[str]
    email_domains: frozenset[str]
    cities: frozenset[str]
    streets: frozenset[str]
    products: frozenset[str]
    order_ids: frozenset[str]
    carriers: frozenset[str]

    def reserved(self, kind: str) -> frozenset[str]:
        """The demo values of one entity kind (empty for kinds the demo does not have)."""
        return {
            "first_name": self.first_names,
            "last_name": self.last_names,
            "email": self.emails,
            "domain": self.email_domains,
            "city": self.cities,
            "street": self.streets,
            "product": self.products,
            "order_id": self.order_ids,
            "carrier": self.carriers,
        }.get(kind, frozenset())


@cache
def demo_values() -> DemoValues:
    """Reads the demo database (built once in a temporary folder with its default seed)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "demo.sqlite"
        orders.create_demo_database(path)
        with closing(sqlite3.connect(path)) as conn:
            people = conn.execute("SELECT name, email, city FROM customers").fetchall()
            rows = conn.execute(
                "SELECT order_id, product, shipping_address, carrier FROM orders"
            ).fetchall()
    firsts, lasts = set(), set()
    for name, _, _ in people:
        first, last = name.split(" ", 1)
        firsts.add(first)
        lasts.add(last)
    streets = set()
    for _, _, address, _ in rows:
        street = address.split(",", 1)[0].split(" ", 1)[1]
        streets.add(street)
    return DemoValues(
        first_names=frozenset(firsts),
        last_names=frozenset(lasts),
        emails=frozenset(email for _, email, _ in people),
        email_domains=frozenset(email.split("@", 1)[1] for _, email, _ in people),
        cities=frozenset(city for _, _, city in people),
        streets=frozenset(streets),
        products=frozenset(product for _, product, _, _ in rows),
        order_ids=frozenset(order_id for order_id, _, _, _ in rows),
        carriers=frozenset(carrier for *_, carrier in rows if carrier),
    )


def split_of(kind: str, value: str) -> Split:
    """The one split a value may appear in: demo values are test, others by hash (70/15/15)."""
    if value in demo_values().reserved(kind):
        return "test"
    digest = blake2b(f"{kind}\x00{value.casefold()}".encode(), digest_size=8).digest()
    bucket = int.from_bytes(digest, "big") % 20
    if bucket < 3:
        return "test"
    if bucket < 6:
        return "validation"
    return "train"


def ascii_slug(text: str) -> str:
    """Lower-case ASCII letters and digits of ``text`` (accents dropped), for emails."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return "".join(ch for ch in folded.lower() if ch.isalnum())


@dataclass
class Entities:
    """Draws entity values of one split and records every value it hands out.

    ``invented`` is the share of values made up on the spot (train only: the held-out
    splits use curated, realistic values). ``used`` maps each entity kind to the values
    drawn, which is how tests check that splits never share a value.
    """

    split: Split
    rng: Random
    invented: float = 0.0
    used: dict[str, set[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.invented and self.split != "train":
            raise ValueError("only the train split uses invented values")

    def first_name(self) -> str:
        """A given name, often with accents."""
        return self._draw("first_name", self._pseudo_name)

    def last_name(self) -> str:
        """A family name, sometimes two words or with an apostrophe."""
        return self._draw("last_name", self._pseudo_surname)

    def full_name(self) -> str:
        """``First Last``."""
        return f"{self.first_name()} {self.last_name()}"

    def email(self, name: str | None = None) -> str:
        """An address built from the person's name (or random letters) and a domain."""
        domain = self._draw("domain", self._pseudo_domain)
        for _ in range(_MAX_DRAWS):
            local = self._email_local(name)
            value = f"{local}@{domain}"
            if split_of("email", value) == self.split:
                return self._record("email", value)
        raise RuntimeError("no email address of this split could be drawn")

    def city(self) -> str:
        """A city name."""
        return self._draw("city", self._pseudo_city)

    def country(self) -> str:
        """A country name."""
        return self._draw("country", self._pseudo_word_title)

    def street(self) -> str:
        """A street name without the number."""
        return self._draw("street", self._pseudo_street)

    def address(self) -> str:
        """One line, at least 10 characters: ``12 Street, City POSTCODE, Country`` or, as most
        of continental Europe writes it, ``Street 12, POSTCODE City, Country`` (a span that
        starts with the street's name, not its number)."""
        number = self.rng.randint(1, 299)
        suffix = self.rng.choice(("", "", "", "A", "B", "b"))
        postcode = self._postcode()
        street, city, country = self.street(), self.city(), self.country()
        if self.rng.random() < CONTINENTAL_ADDRESS_SHARE:
            value = f"{street} {number}{suffix}, {postcode} {city}, {country}"
        else:
            value = f"{number}{suffix} {street}, {city} {postcode}, {country}"
        return self._record("address", value)

    def product(self) -> str:
        """A product name as a shop would list it."""
        return self._draw("product", self._pseudo_product)

    def order_id(self) -> str:
        """``ORD-`` and six digits."""
        return self._generated("order_id", lambda: f"ORD-{self.rng.randrange(100_000, 1_000_000)}")

    def amount(self) -> str:
        """A money amount as digits: ``42``, ``42.5`` or ``42.50``; its split is by value."""
        for _ in range(_MAX_DRAWS):
            cents = self.rng.choice(
                (
                    self.rng.randrange(100, 10_000),
                    self.rng.randrange(100, 100_000),
                    self.rng.randrange(1, 400) * 100,
                    self.rng.randrange(1, 200) * 100 - 1,
                )
            )
            canonical = orders.format_money(cents)
            if split_of("amount", canonical) != self.split:
                continue
            whole, fraction = canonical.split(".")
            if fraction == "00":
                text = self.rng.choice((whole, canonical))
            elif fraction.endswith("0"):
                text = self.rng.choice((canonical, f"{whole}.{fraction[0]}"))
            else:
                text = canonical
            self._record("amount", canonical)
            return text
        raise RuntimeError("no amount of this split could be drawn")

    def date(self) -> str:
        """A calendar date in one of several written forms; its split is by month and day."""
        for _ in range(_MAX_DRAWS):
            day = date(2024, 1, 1) + timedelta(days=self.rng.randrange(366))
            key = f"{day.month:02d}-{day.day:02d}"
            if split_of("date", key) != self.split:
                continue
            year = self.rng.choice((2023, 2024, 2025))
            self._record("date", key)
            return _format_date(self.rng, year, day.month, day.day)
        raise RuntimeError("no date of this split could be drawn")

    def day(self) -> _Day:
        """A calendar day of 2024-2025 whose month and day belong to this split."""
        for _ in range(_MAX_DRAWS):
            day = date(2024, 1, 1) + timedelta(days=self.rng.randrange(730))
            key = f"{day.month:02d}-{day.day:02d}"
            if split_of("date", key) == self.split:
                self._record("date", key)
                return day
        raise RuntimeError("no day of this split could be drawn")

    def reason(self) -> str:
        """Why the customer wants to cancel or return, as a short clause."""
        return self._draw("reason", self._made_up_reason)

    def carrier(self) -> str:
        """A parcel carrier's name."""
        return self._draw("carrier", self._pseudo_word_title)

    def tracking_number(self) -> str:
        """Two capital letters and 10-12 digits."""

        def make() -> str:
            letters = "".join(self.rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(2))
            digits = "".join(self.rng.choice("0123456789") for _ in range(self.rng.randint(10, 12)))
            return letters + digits

        return self._generated("tracking_number", make)

    def _draw(self, kind: str, invent: Callable[[], str]) -> str:
        pool = _pool(kind, self.split)
        use_invented = self.invented and (not pool or self.rng.random() < self.invented)
        if not use_invented:
            return self._record(kind, self.rng.choice(pool))
        return self._generated(kind, invent)

    def _generated(self, kind: str, make: Callable[[], str]) -> str:
        for _ in range(_MAX_DRAWS):
            value = make()
            if split_of(kind, value) == self.split:
                return self._record(kind, value)
        raise RuntimeError(f"no {kind} of the {self.split} split could be drawn")

    def _record(self, kind: str, value: str) -> str:
        self.used.setdefault(kind, set()).add(value)
        return value

    def _pseudo_word(self, syllables: int) -> str:
        rng = self.rng
        word = "".join(
            rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables)
        )
        if rng.random() < 0.35:
            chars = list(word)
            spots = [i for i, ch in enumerate(chars) if ch in _ACCENTED]
            if spots:
                spot = rng.choice(spots)
                chars[spot] = rng.choice(_ACCENTED[chars[spot]])
            word = "".join(chars)
        return word

    def _pseudo_word_title(self) -> str:
        word = self._pseudo_word(self.rng.randint(1, 3))
        return word[:1].upper() + word[1:]

    def _pseudo_name(self) -> str:
        name = self._pseudo_word_title()
        if self.rng.random() < 0.08:
            name = f"{name}-{self._pseudo_word_title()}"
        return name

    def _pseudo_surname(self) -> str:
        roll = self.rng.random()
        name = self._pseudo_word_title()
        if roll < 0.06:
            return f"O'{name}"
        if roll < 0.12:
            return f"{self.rng.choice(('van', 'de', 'da', 'von', 'Mac', 'di'))} {name}"
        if roll < 0.18:
            return f"{name}-{self._pseudo_word_title()}"
        return name

    def _pseudo_domain(self) -> str:
        tld = self.rng.choice(("com", "net", "org", "io", "de", "fr", "es", "it", "co.uk", "eu"))
        return f"{ascii_slug(self._pseudo_word(self.rng.randint(1, 3)))}.{tld}"

    def _pseudo_city(self) -> str:
        city = self._pseudo_word_title()
        if self.rng.random() < 0.3:
            city += self.rng.choice(_CITY_SUFFIXES)
        if self.rng.random() < 0.08:
            city = f"{city} {self._pseudo_word_title()}"
        return city

    def _pseudo_street(self) -> str:
        roll = self.rng.random()
        name = self._pseudo_word_title()
        if roll < 0.55:
            return f"{name} {self.rng.choice(_STREET_KINDS)}"
        if roll < 0.8:
            return f"{self.rng.choice(_STREET_PREFIXES)} {name}"
        return name + self.rng.choice(_STREET_SUFFIXES)

    def _pseudo_product(self) -> str:
        rng = self.rng
        parts = [self._pseudo_word_title()]
        if rng.random() < 0.7:
            parts.append(rng.choice(_PRODUCT_NOUNS))
        else:
            parts.append(self._pseudo_word_title())
        if rng.random() < 0.35:
            parts.append(
                rng.choice(("X", "Pro", "Mini", "Max", "S", "Lite", "")) + str(rng.randint(1, 900))
            )
        return " ".join(p for p in parts if p)

    def _made_up_reason(self) -> str:
        rng = self.rng
        if rng.random() < 0.6:
            return (
                f"{rng.choice(_REASON_SUBJECTS)} {rng.choice(_REASON_VERBS)} "
                f"{rng.choice(_REASON_STATES)}"
            )
        if rng.random() < 0.5:
            return rng.choice(_REASON_WISHES)
        verb = rng.choice(("is", "was", "looks"))
        return f"the {self._pseudo_word(1)} {verb} {self._pseudo_word(2)}"

    def _email_local(self, name: str | None) -> str:
        rng = self.rng
        if name is None or rng.random() < 0.15:
            local = ascii_slug(self._pseudo_word(rng.randint(1, 3))) or "user"
            return local + (str(rng.randint(1, 999)) if rng.random() < 0.5 else "")
        parts = [ascii_slug(part) for part in name.replace("-", " ").split()]
        parts = [part for part in parts if part] or ["user"]
        first, last = parts[0], parts[-1]
        style = rng.randrange(6)
        if style == 0:
            local = f"{first}.{last}"
        elif style == 1:
            local = f"{first}{last}"
        elif style == 2:
            local = f"{first[0]}.{last}"
        elif style == 3:
            local = f"{first}_{last}{rng.randint(1, 99)}"
        elif style == 4:
            local = f"{first}{rng.randint(1, 9999)}"
        else:
            local = f"{last}.{first}"
        return local

    def _postcode(self) -> str:
        rng = self.rng
        style = rng.randrange(4)
        if style == 0:
            return f"{rng.randint(1000, 99999):05d}"
        if style == 1:
            return f"{rng.randint(1000, 9999)}"
        if style == 2:
            letters = "ABCDEFGHJKLMNPRSTUWXYZ"
            return (
                f"{rng.choice(letters)}{rng.choice(letters)}{rng.randint(1, 20)} "
                f"{rng.randint(1, 9)}{rng.choice(letters)}{rng.choice(letters)}"
            )
        return f"{rng.randint(10, 99)}-{rng.randint(100, 999)}"


def curated_values(kind: str) -> frozenset[str]:
    """Every curated value of a kind (all splits, demo values included): not invented."""
    return frozenset(value for split in SPLITS for value in _pool(kind, split))


@cache
def _pool(kind: str, split: Split) -> tuple[str, ...]:
    """The curated values of one split, plus (for test) every demo value of that kind."""
    values = [value for value in _CURATED.get(kind, ()) if split_of(kind, value) == split]
    if split == "test":
        values.extend(sorted(demo_values().reserved(kind)))
    return tuple(dict.fromkeys(values))


# fmt: off
_MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)
# fmt: on


def _format_date(rng: Random, year: int, month: int, day: int) -> str:
    name = _MONTHS[month - 1]
    style = rng.randrange(8)
    if style == 0:
        return f"{year}-{month:02d}-{day:02d}"
    if style == 1:
        return f"{day} {name} {year}"
    if style == 2:
        return f"{name} {day}, {year}"
    if style == 3:
        return f"{name} {day}"
    if style == 4:
        return f"{day} {name}"
    if style == 5:
        return f"{day:02d}/{month:02d}/{year}"
    if style == 6:
        return f"{name[:3]} {day}"
    return f"{day}.{month}.{year}"
