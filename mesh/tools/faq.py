"""The shop's FAQ behind the ``search_faq`` tool: entries, their table, and ranking.

The entries ship as package data (``faq.yaml``) and are seeded into the order database's
``faq`` table. Ranking is Okapi BM25 as SQLite's FTS5 computes it (``bm25()``, k1 1.2,
b 0.75) over three weighted columns: the entry's question, its answer and its keywords.
Text is normalized here, in Python, before FTS5 sees it (lower case, accents folded,
function words dropped, a light suffix stemmer), so the pure-Python fallback used where
SQLite was built without FTS5, and on PostgreSQL, scores exactly as FTS5 does and one
threshold serves both. A query term one edit away from exactly one term the entries hold
("garantee", "refnd") is read as that term (:func:`spelled`): customers write with typos.

Keywords help twice. An entry is a candidate only if the query holds one of its keywords
(every term of it, in any order: "send it back" holds "send back") or a term of its
question; words only its answer holds ("card", "order", "days") turn up in unrelated
questions too often to count on their own. And an entry whose keyword the query holds
gets :data:`KEYWORD_BONUS` per term of the longest such keyword added to its BM25 score
("credit card" outweighs "credit"), because in a table this small a word such as "ship"
sits in several entries and BM25's IDF gives it almost no weight. A candidate scoring
under :data:`MIN_SCORE` is no match: "Is the French Press dishwasher safe?" finds nothing.
When the query asks questions, an entry must answer a topic word of one of them, not only
of the sentences around them.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sqlite3
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import yaml

from mesh.tools.connection import Connection

MAX_MATCHES = 3
"""At most this many entries are returned, best first."""

MIN_SCORE = 1.0
"""The lowest BM25 score (FTS5's ``-bm25()``) an entry needs to count as a match."""

KEYWORD_BONUS = 1.0
"""Added to an entry's score per term of its longest keyword that the query holds."""

PART_CUTOFF = 0.25
"""A runner-up is returned only if it answers another part of the question (a query term in
its question or keywords that no better entry holds: "Do you ship to the UK, and how long
does it take?") and scores at least this share of the best entry."""

COLUMN_WEIGHTS = (1.0, 0.5, 2.0)
"""BM25 weights of the question, answer and keywords columns."""

_K1 = 1.2
_B = 0.75

# Words that carry no topic: a question's frame ("how can I", "do you") and filler.
_STOPWORDS = frozenset(
    """
    a about after again all also am an and any anyone anything are as at be been before being
    but by can cannot cant could d did didnt do does doesnt doing don done dont for from get
    gets getting got guys had has hasnt
    have havent having hello hey hi how i id if im in into is isnt it its just know let like ll
    m may me
    might mine more most much must my need no not now of off ok on one or our ours out
    please possible question re s same shall she should so some someone something t take tell
    thank thanks that the their them then there these they this those to too us ve very
    want was wasnt we were what whats when where which while who why will with wont would yes
    you your
    yours
    """.split()
)

_WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class FaqEntry:
    """One policy / FAQ entry."""

    topic: str
    question: str
    answer: str
    keywords: tuple[str, ...]


@dataclass(frozen=True)
class FaqMatch:
    """An entry found for a query, with its BM25 score (higher is better)."""

    entry: FaqEntry
    score: float

    def view(self) -> dict[str, str]:
        """The entry as ``search_faq`` returns it."""
        return {
            "topic": self.entry.topic,
            "question": self.entry.question,
            "answer": self.entry.answer,
        }


@cache
def entries() -> tuple[FaqEntry, ...]:
    """The entries of the packaged ``faq.yaml``, in file order."""
    text = resources.files("mesh.tools").joinpath("faq.yaml").read_text(encoding="utf-8")
    return tuple(_entry(item) for item in yaml.safe_load(text))


def digest(items: Sequence[FaqEntry] | None = None) -> str:
    """A fingerprint of the entries, to tell whether a seeded table is current."""
    items = entries() if items is None else items
    text = json.dumps([e.__dict__ for e in items], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _entry(item: Any) -> FaqEntry:
    if not isinstance(item, dict) or not {"topic", "question", "answer"} <= set(item):
        raise ValueError(f"faq.yaml: each entry needs topic, question and answer, got {item!r}")
    return FaqEntry(
        topic=str(item["topic"]),
        question=str(item["question"]),
        answer=str(item["answer"]),
        keywords=tuple(str(k) for k in item.get("keywords", ())),
    )


def terms(text: str) -> list[str]:
    """The text's topic-bearing terms: folded, stemmed, function words dropped."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    words = _WORD.findall(folded.lower().replace("'", ""))
    return [_stem(word) for word in words if word not in _STOPWORDS]


def _stem(word: str) -> str:
    """A light English suffix stemmer: ships, shipping, shipped -> ship; countries -> country."""
    if word.isdigit() or len(word) <= 3:
        return word
    if word.endswith("ies") and len(word) > 4:
        word = word[:-3] + "y"
    elif word.endswith(("sses", "xes", "ches", "shes")):
        word = word[:-2]
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    for suffix in ("ing", "ed"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "aeiouls":
                word = word[:-1]  # shipp -> ship, but not fill -> fil
            break
    if word.endswith("e") and len(word) > 3:
        word = word[:-1]  # arrive/arrived, change/changed meet at arriv, chang
    return word


_NAME_IN_TEXT = re.compile(r"(?<=[a-z0-9,;] )[A-Z][A-Za-z]+")
"""A capitalised word that does not start a sentence: a name ("PayPal", "Saturday")."""


def names_in(text: str) -> set[str]:
    """The terms of the words ``text`` writes as names (capitalised inside a sentence:
    "do you take Klarna?")."""
    return {term for word in _NAME_IN_TEXT.findall(text) for term in terms(word)}


@cache
def keyword_terms() -> frozenset[str]:
    """The terms of every entry's keywords: what the FAQ knows a topic by."""
    return frozenset(term for entry in entries() for kw in entry.keywords for term in terms(kw))


@cache
def named_terms() -> frozenset[str]:
    """The terms of keywords that their entry's answer writes as names ("PayPal",
    "Saturday", "Canada"). One of them is a topic on its own ("and do you take PayPal?"),
    where a single common word ("ship", "when") is not."""
    named: set[str] = set()
    for entry in entries():
        written = {term for word in _NAME_IN_TEXT.findall(entry.answer) for term in terms(word)}
        for keyword in entry.keywords:
            keyword_terms = terms(keyword)
            if keyword_terms and set(keyword_terms) <= written:
                named.update(keyword_terms)
    return frozenset(named)


def _columns(entry: FaqEntry) -> tuple[list[str], list[str], list[str]]:
    keyword_terms = [term for keyword in entry.keywords for term in terms(keyword)]
    return terms(entry.question), terms(entry.answer), keyword_terms


# --- the table ---------------------------------------------------------------------------

FAQ_TABLE = """CREATE TABLE IF NOT EXISTS faq (
    id INTEGER PRIMARY KEY,
    topic TEXT NOT NULL UNIQUE,
    question TEXT NOT NULL,
    answer TEXT NOT NULL,
    keywords TEXT NOT NULL
)"""
"""The entries as written (``keywords`` a JSON array); ``faq_terms`` indexes them."""

_FTS_TABLE = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS faq_terms "
    "USING fts5(question, answer, keywords, tokenize = 'unicode61')"
)


def seed(conn: Connection, items: Sequence[FaqEntry] | None = None) -> None:
    """Replaces the ``faq`` rows (and their FTS5 index, where FTS5 exists) with ``items``.

    Runs inside the caller's write transaction. ``items`` defaults to the packaged entries.
    """
    items = entries() if items is None else items
    conn.execute(FAQ_TABLE)
    conn.execute("DELETE FROM faq")
    conn.executemany(
        "INSERT INTO faq (id, topic, question, answer, keywords) VALUES (?, ?, ?, ?, ?)",
        [
            (n, e.topic, e.question, e.answer, json.dumps(list(e.keywords), ensure_ascii=False))
            for n, e in enumerate(items, start=1)
        ],
    )
    if not isinstance(conn, sqlite3.Connection):
        return  # FTS5 is SQLite's: elsewhere search() scores the same BM25 in Python
    try:
        conn.execute(_FTS_TABLE)
    except sqlite3.OperationalError as exc:
        if "fts5" not in str(exc):
            raise
        return  # this SQLite has no FTS5: search() scores in Python instead
    conn.execute("DELETE FROM faq_terms")
    conn.executemany(
        "INSERT INTO faq_terms (rowid, question, answer, keywords) VALUES (?, ?, ?, ?)",
        [(n, *map(" ".join, _columns(e))) for n, e in enumerate(items, start=1)],
    )


def has_fts(conn: Connection) -> bool:
    """Whether the database holds the FTS5 index of the entries (never outside SQLite)."""
    if not isinstance(conn, sqlite3.Connection):
        return False
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'faq_terms'"
    ).fetchone()
    return row is not None


def stored_entries(conn: Connection) -> list[tuple[int, FaqEntry]]:
    """The seeded entries with their row ids."""
    rows = conn.execute("SELECT id, topic, question, answer, keywords FROM faq ORDER BY id")
    return [(row[0], FaqEntry(row[1], row[2], row[3], tuple(json.loads(row[4])))) for row in rows]


# --- search ------------------------------------------------------------------------------


def search(
    conn: Connection, query: str, *, limit: int = MAX_MATCHES, use_fts: bool | None = None
) -> list[FaqMatch]:
    """The entries that answer ``query``, best first; empty when none does.

    ``use_fts`` forces (True) or avoids (False) FTS5; by default it is used where present.
    """
    stored = dict(stored_entries(conn))
    vocabulary = {
        term for entry in stored.values() for column in _columns(entry) for term in column
    }
    wanted = list(dict.fromkeys(spelled(term, vocabulary) for term in terms(query)))
    if not wanted:
        return []
    asked = {spelled(term, vocabulary) for term in _asked_terms(query)}
    candidates = []
    for rowid, score in scores(conn, wanted, use_fts=use_fts).items():
        entry = stored[rowid]
        keywords = _keywords_held(entry, wanted)
        if (keywords or not set(wanted).isdisjoint(terms(entry.question))) and (
            not asked or _topic_terms(entry, wanted) & asked
        ):
            candidates.append(FaqMatch(entry, score + KEYWORD_BONUS * keywords))
    ranked = sorted(
        (match for match in candidates if match.score >= MIN_SCORE),
        key=lambda match: -match.score,
    )
    if not ranked:
        return []
    chosen, covered = [ranked[0]], _topic_terms(ranked[0].entry, wanted)
    for match in ranked[1:]:
        if len(chosen) >= limit or match.score < PART_CUTOFF * ranked[0].score:
            break
        answers_more = _topic_terms(match.entry, wanted) - covered
        if answers_more:
            chosen.append(match)
            covered |= answers_more
    return chosen


MIN_TYPO_CHARS = 5
"""Terms at least this long may be misspelt by one letter ("garantee", "refnd")."""


def spelled(term: str, vocabulary: Iterable[str]) -> str:
    """``term`` as the entries spell it: a term they do not hold, of at least
    :data:`MIN_TYPO_CHARS` letters, that is one edit (a letter added, dropped, changed or
    two swapped) from exactly one term of theirs of that length becomes that term, and so
    does one a letter shorter with two letters swapped ("lnog"); any other term is kept as
    it is."""
    known = set(vocabulary)
    if term in known or len(term) < MIN_TYPO_CHARS - 1 or term.isdigit():
        return term
    if len(term) < MIN_TYPO_CHARS:
        # A shorter word only by two letters swapped ("lnog"): one letter off, "cost" is
        # "cast" or "most".
        close = [word for word in known if _swapped(term, word)]
    else:
        close = [word for word in known if len(word) >= MIN_TYPO_CHARS and _one_edit(term, word)]
    return close[0] if len(close) == 1 else term


def _swapped(a: str, b: str) -> bool:
    """Whether ``b`` is ``a`` with two neighbouring letters swapped."""
    if len(a) != len(b) or a == b:
        return False
    diff = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
    return len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]]


def _one_edit(a: str, b: str) -> bool:
    """Whether ``a`` and ``b`` differ by one edit (Damerau-Levenshtein distance 1)."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
        return len(diff) == 1 or (
            len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]]
            and a[diff[1]] == b[diff[0]]
        )  # fmt: skip
    short, long = (a, b) if len(a) < len(b) else (b, a)
    at = next((i for i, (x, y) in enumerate(zip(short, long, strict=False)) if x != y), len(short))
    return short[at:] == long[at + 1 :]


def _asked_terms(query: str) -> set[str]:
    """The topic terms of the query's questions (its sentences ending in ``?``): an entry
    must answer one of them, not only a word of the story around it ("Are you hiring? I'd
    love to pack parcels in your warehouse" is not about delivery times). Empty when the
    query asks no question with a topic word: then every term counts."""
    questions = [s for s in re.split(r"(?<=[.!?])\s+", query.strip()) if s.endswith("?")]
    return set(terms(" ".join(questions)))


def _topic_terms(entry: FaqEntry, wanted: Iterable[str]) -> set[str]:
    """The query's terms that the entry's question or keywords hold (what it answers)."""
    question, _, keyword_terms = _columns(entry)
    return set(wanted) & (set(question) | set(keyword_terms))


def scores(
    conn: Connection, query_terms: Sequence[str], *, use_fts: bool | None = None
) -> dict[int, float]:
    """BM25 score (FTS5's ``-bm25()``) of every entry holding a term, by row id.

    ``query_terms`` come from :func:`terms`. With ``use_fts`` False (or None and no FTS5
    index), the same numbers are computed in Python.
    """
    if use_fts is None:
        use_fts = has_fts(conn)
    if use_fts:
        return _fts_scores(conn, list(query_terms))
    return _python_scores(dict(stored_entries(conn)), list(query_terms))


def _keywords_held(entry: FaqEntry, wanted: Iterable[str]) -> int:
    """Terms of the longest keyword of the entry whose every term the query holds (0: none)."""
    held = set(wanted)
    sizes = [
        len(set(kt)) for keyword in entry.keywords if (kt := terms(keyword)) and set(kt) <= held
    ]
    return max(sizes, default=0)


def _fts_scores(conn: Connection, wanted: list[str]) -> dict[int, float]:
    match = " OR ".join(f'"{term}"' for term in wanted)  # terms are [a-z0-9]+: safe to quote
    rows = conn.execute(
        "SELECT rowid, -bm25(faq_terms, ?, ?, ?) FROM faq_terms WHERE faq_terms MATCH ?",
        (*COLUMN_WEIGHTS, match),
    )
    return {int(rowid): float(score) for rowid, score in rows}


def _python_scores(stored: dict[int, FaqEntry], wanted: list[str]) -> dict[int, float]:
    """FTS5's ``bm25()`` (fts5_aux.c) on the same terms, for a SQLite without FTS5."""
    docs = {rowid: _columns(entry) for rowid, entry in stored.items()}
    if not docs:
        return {}
    lengths = {rowid: sum(map(len, columns)) for rowid, columns in docs.items()}
    average = sum(lengths.values()) / len(docs)
    idf = {}
    for term in wanted:
        hits = sum(1 for columns in docs.values() if any(term in c for c in columns))
        value = math.log((len(docs) - hits + 0.5) / (hits + 0.5))
        idf[term] = value if value > 0 else 1e-6
    scores = {}
    for rowid, columns in docs.items():
        score, matched = 0.0, False
        for term in wanted:
            freq = sum(w * c.count(term) for w, c in zip(COLUMN_WEIGHTS, columns, strict=True))
            if not freq:
                continue
            matched = True
            norm = _K1 * (1 - _B + _B * lengths[rowid] / average)
            score += idf[term] * freq * (_K1 + 1) / (freq + norm)
        if matched:
            scores[rowid] = score
    return scores
