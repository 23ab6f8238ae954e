"""A realistic year of usage for one org, written straight into a Postgres database, so analytics
can be measured at the size a real tenant reaches (10 million requests by default).

The org: 100 members in a tree of divisions, teams and projects (a workspace of personal keys
per team, production projects of service, batch, embedding and evaluation keys), 200 keys with
1-3 of 20 catalog models each and one app, owned by members. Traffic follows the org's local
working hours and week, holidays and growth over the year, with a heavy tail over keys (a few
batch keys carry most requests), errors, guardrail blocks, provider outages and planted spikes
for the anomaly detector. Costs are the catalog's real prices, priced as the gateway prices.

Usage rows are generated with numpy and loaded with COPY into the monthly partitions; the
15-minute rollups, the daily rollups (in the org's zone) and the hourly ledger debits are then
built in SQL from the loaded rows, as metering/rollups.py and metering/writer.py would have
built them, and checked: every measure sums the same over the four, and the rollup rows of two
whole local days (one with a DST change, where the zone has one) equal what rollups.py makes of
those days' events.

    python bench/generate_year.py --create-database sg_bench_year [--requests 10000000]
        [--seed 7] [--timezone Europe/Berlin] [--start 2025-12-01] [--days 365] [--jobs 2]
    python bench/generate_year.py --database-url postgresql+asyncpg://postgres@127.0.0.1/db

At the end it prints the org id and an admin token of the org's owner, and writes both, with
the secret key that peppers the token and the planted incidents, to `--info` (default
~/.cache/sluicegate/bench-<database>.json), which bench/analytics_queries.py reads.
Needs numpy (`pip install -e '.[bench]'`) and Postgres (trust auth for --create-database).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import struct
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo

import asyncpg
import numpy as np

from sluicegate.metering.models import ORG_DIMENSIONS
from sluicegate.metering.partitions import (
    PARTITION_LOCK,
    create_statement,
    month_of,
    next_month,
    partition_name,
)
from sluicegate.metering.rollups import BLOCKED_ERROR_TYPES, EVENT_COLUMNS, MEASURES, rollup_rows
from sluicegate.providers.catalog import default_catalog

MEMBERS = 100
KEYS = 200
US = 1_000_000
HOUR_US = 3600 * US
PG_EPOCH_US = 946_684_800 * US  # 2000-01-01 UTC, where Postgres counts timestamps from
PG_TIME = struct.Struct("!q")
# Rows per batch of Python tuples handed to COPY: bounds the objects alive at once.
COPY_SLICE = 100_000
ALPHABET = b"0123456789abcdefghjkmnpqrstvwxyz"  # core.ids: Crockford base32
ALPHABET_CODES = np.frombuffer(ALPHABET, dtype=np.uint8)
USAGE_COLUMNS = (
    "request_id",
    "created_at",
    "org_id",
    "group_id",
    "key_id",
    "user_id",
    "requested_model",
    "served_model",
    "provider",
    "app",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cost_nusd",
    "latency_ms",
    "ttft_ms",
    "status_code",
    "error_type",
    "stream",
    "usage_estimated",
    "routing",
)

# --- what the org looks like -------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """A kind of key: its traffic shape, tokens and streaming, and the models it picks from."""

    weight: float  # mean requests of one prod key, relative to the other kinds
    sigma: float  # spread of that weight over keys (lognormal): the heavy tail
    day_sigma: float  # day-to-day variation
    stream: float
    prompt: float  # median prompt tokens
    completion: float  # median completion tokens (0: embeddings)
    cache_share: float  # share of requests with a prompt cache hit
    cache_fraction: float  # mean cached part of the prompt on a hit
    fails: float  # upstream failure rate
    blocks: float  # guardrail block rate (budgets, rate limits, model policy)
    humans: bool  # follows people's hours, weekends and holidays
    pool: tuple[str, ...]


# Twenty catalog models, with the median time to first token (ms) and output speed (tokens/s)
# each shows in the data.
MODELS = {
    "gpt-5": (1800, 60),
    "gpt-5-mini": (900, 90),
    "gpt-5-nano": (600, 120),
    "gpt-4.1": (550, 80),
    "gpt-4.1-mini": (380, 110),
    "gpt-4o": (450, 90),
    "gpt-4o-mini": (320, 120),
    "o4-mini": (2500, 100),
    "claude-opus-4-5-20251101": (1300, 45),
    "claude-sonnet-4-5-20250929": (850, 65),
    "claude-haiku-4-5-20251001": (420, 130),
    "claude-3-5-haiku-20241022": (480, 90),
    "gemini-2.5-pro": (1500, 85),
    "gemini-2.5-flash": (520, 180),
    "gemini-2.0-flash": (350, 200),
    "mistral-small-latest": (300, 130),
    "deepseek-chat": (950, 40),
    "llama-3.3-70b-versatile": (160, 300),
    "text-embedding-3-small": (70, 0),
    "text-embedding-3-large": (90, 0),
}
MODEL_NAMES = tuple(MODELS)
# The instance's provider names (what usage events record), by catalog family.
PROVIDER_OF_FAMILY = {
    "openai": "openai",
    "anthropic": "anthropic",
    "google": "gemini",
    "mistral": "mistral",
    "deepseek": "deepseek",
    "meta": "groq",
}
FALLBACK_PROVIDER = "azure-openai"  # where OpenAI requests go when the first provider fails over
FALLBACK_SHARE = 0.02
PROVIDERS = (*dict.fromkeys(PROVIDER_OF_FAMILY.values()), FALLBACK_PROVIDER)
# The most expensive models people try with keys whose allowlist leaves them out.
EXPENSIVE = ("claude-opus-4-5-20251101", "gpt-5", "gemini-2.5-pro")

SONNET, OPUS = "claude-sonnet-4-5-20250929", "claude-opus-4-5-20251101"
KINDS = {
    "chat": Kind(
        1.0, 0.8, 0.3, 0.92, 1200, 350, 0.3, 0.5, 0.008, 0.002, True,
        ("gpt-5", "gpt-5-mini", SONNET, "gemini-2.5-pro", "gpt-4o"),
    ),
    "coding": Kind(
        2.5, 0.8, 0.3, 0.95, 9000, 550, 0.8, 0.75, 0.012, 0.003, True,
        (SONNET, "gpt-5", OPUS, "gpt-4.1", "o4-mini"),
    ),
    "service": Kind(
        10.0, 1.0, 0.12, 0.7, 2500, 260, 0.5, 0.6, 0.006, 0.001, False,
        ("gpt-4.1-mini", "gpt-4o-mini", "claude-haiku-4-5-20251001", "gemini-2.5-flash",
         "gpt-5-mini"),
    ),
    "batch": Kind(
        45.0, 1.2, 0.3, 0.0, 1500, 110, 0.2, 0.4, 0.01, 0.004, False,
        ("gpt-4o-mini", "gpt-5-nano", "gpt-4.1-mini", "gemini-2.0-flash", "gemini-2.5-flash",
         "claude-3-5-haiku-20241022", "mistral-small-latest", "llama-3.3-70b-versatile",
         "deepseek-chat"),
    ),
    "embedding": Kind(
        30.0, 1.0, 0.5, 0.0, 350, 0, 0.0, 0.0, 0.004, 0.001, False,
        ("text-embedding-3-small", "text-embedding-3-large"),
    ),
    "eval": Kind(
        4.0, 0.8, 1.0, 0.0, 2000, 420, 0.1, 0.5, 0.015, 0.002, True,
        ("gpt-5", SONNET, "gemini-2.5-pro", "gpt-4.1", "deepseek-chat", "llama-3.3-70b-versatile",
         "mistral-small-latest"),
    ),
}  # fmt: skip
CHAT_APPS = ("Open WebUI", "LibreChat")
CODING_APPS = ("Cline", "Continue", "Aider")
# A project's production keys, in this order, with their share of the project's traffic.
ENVIRONMENTS = (("prod", 1.0), ("prod-eu", 0.6), ("staging", 0.08), ("dev", 0.04))
ENVIRONMENTS += (("backfill", 0.5), ("prod-2", 0.8))
# division -> team -> production projects (name, kind, app, keys); every team also has a
# "<team>-workspace" project for its members' personal keys.
TREE: dict[str, dict[str, list[tuple[str, str, str, int]]]] = {
    "Engineering": {
        "Platform": [
            ("ci-review", "batch", "ci-review-bot", 4),
            ("release-notes", "service", "release-notes", 2),
        ],
        "Payments": [
            ("invoice-extraction", "batch", "invoice-pipeline", 5),
            ("fraud-triage", "service", "fraud-triage", 3),
        ],
        "Search": [
            ("semantic-index", "embedding", "semantic-index", 6),
            ("query-rewrite", "service", "query-rewrite", 4),
        ],
        "Mobile": [("app-assistant", "service", "in-app-assistant", 4)],
    },
    "Product": {
        "Growth": [
            ("email-copy", "batch", "email-copy", 3),
            ("experiments", "eval", "experiment-analysis", 2),
        ],
        "Docs": [("docs-assistant", "service", "docs-assistant", 3)],
    },
    "Data Science": {
        "NLP": [
            ("doc-classifier", "batch", "doc-classifier", 5),
            ("eval-harness", "eval", "eval-harness", 6),
        ],
        "Forecasting": [
            ("report-writer", "batch", "report-writer", 3),
            ("kb-embeddings", "embedding", "kb-embeddings", 4),
        ],
    },
    "Customer Operations": {
        "Support": [
            ("support-copilot", "service", "support-copilot", 6),
            ("ticket-triage", "batch", "ticket-triage", 5),
        ],
        "Sales": [("lead-research", "service", "lead-research", 3)],
    },
}
# Members per team (the first one leads it); with the owner, a lead per division and two finance
# viewers that makes MEMBERS.
TEAM_SIZES = {"Platform": 13, "Payments": 11, "Search": 10, "Mobile": 9, "Growth": 8, "Docs": 6}
TEAM_SIZES |= {"NLP": 9, "Forecasting": 7, "Support": 12, "Sales": 8}
CODING_DIVISIONS = ("Engineering", "Data Science")
FIRST = (
    "Ada Alan Amara Anil Ana Arjun Bea Ben Carla Chen Dario Dev Elif Emma Eric Fatima Felix Gita "
    "Hana Hugo Ines Ivan Jana Jonas Kai Kenji Lara Leo Lina Luca Maya Mateo Mila Nadia Nils Noor "
    "Olga Omar Paul Priya Rafael Rosa Sami Sara Tariq Tess Uma Vera Wei Yara Yusuf Zoe"
).split()
LAST = (
    "Ahmed Bauer Costa Dubois Eriksen Fischer Garcia Hoffmann Ito Jansen Kaur Kowalski Lang Mehta "
    "Novak Okafor Petrov Quinn Rossi Schmidt Silva Tanaka Varga Weber Yilmaz Zhang Nair Moreau"
).split()

# (error type, status, share) of guardrail blocks and of upstream failures.
BLOCKS = (("budget_exceeded", 402, 0.5), ("rate_limited", 429, 0.42))
BLOCKS += (("credit_exhausted", 402, 0.02), ("model_not_allowed", 403, 0.06))
FAILURES = (
    ("upstream_error", 502, 0.38),
    ("upstream_rate_limited", 429, 0.3),
    ("upstream_rejected", 400, 0.18),
    ("upstream_timeout", 504, 0.1),
    ("upstream_unreachable", 502, 0.04),
)
STREAM_CUT = "upstream_stream_cut"
ERROR_TYPES = (None, *(name for name, _s, _p in BLOCKS + FAILURES), STREAM_CUT)
ERROR_INDEX = {name: i for i, name in enumerate(ERROR_TYPES)}
UPSTREAM_TIMEOUT_MS = 60_000
STREAM_CUT_SHARE = 0.001  # of successful streams: the upstream stopped after some tokens
ESTIMATED_SHARE = 0.002  # of successful streams: the upstream sent no usage block


@dataclass
class Key:
    id: str
    name: str
    group: int
    owner: int
    kind: str
    app: str
    weight: float
    models: list[int]
    shares: list[float]
    drift: float  # share moved from the first model to the second over the year
    start: int  # first hour with traffic
    end: int  # hour after the last (revoked keys stop)
    peak: float  # local hour when a batch key's nightly run peaks
    budget_capped: bool  # its owner's monthly budget runs out in the last days of a month
    prompt: float  # median prompt tokens of this key
    completion: float
    forbidden: int  # the model its owner sometimes asks for and the allowlist refuses


@dataclass
class Person:
    id: str
    email: str
    name: str
    home: int
    role: str
    role_group: int
    joined: datetime | None = None


@dataclass
class Spike:
    """Traffic added to one key: `factor` times its mean hourly rate, for `hours`."""

    what: str
    key: int
    start: int  # hour index from the start
    hours: int
    factor: float
    model: int | None = None  # every request of the key asks this model meanwhile
    failing: float = 0.0  # share rejected upstream (a client stuck retrying a bad payload)
    blocked_after: float = 1.0  # past this share of the spike, the key's budget blocks


@dataclass
class Outage:
    provider: str
    start: int
    hours: int
    failing: float


@dataclass
class Calendar:
    """Per hour of the year (index 0 = local midnight of the start day), in the org's zone."""

    local_hour: np.ndarray
    weekend: np.ndarray
    day: np.ndarray  # local day index
    day_of_month: np.ndarray
    days_in_month: np.ndarray
    holiday: np.ndarray
    summer: np.ndarray


def calendar(start: datetime, hours: int, zone: ZoneInfo) -> Calendar:
    local = [(start + timedelta(hours=h, minutes=30)).astimezone(zone) for h in range(hours)]
    first = local[0].date()
    holidays = {(12, 24), (12, 25), (12, 26), (12, 31), (1, 1)}
    return Calendar(
        local_hour=np.array([t.hour + t.minute / 60 for t in local]),
        weekend=np.array([t.weekday() >= 5 for t in local]),
        day=np.array([(t.date() - first).days for t in local]),
        day_of_month=np.array([t.day for t in local]),
        days_in_month=np.array(
            [(next_month(date(t.year, t.month, 1)) - timedelta(days=1)).day for t in local]
        ),
        holiday=np.array([(t.month, t.day) in holidays for t in local]),
        summer=np.array([(t.month == 7 and t.day >= 15) or t.month == 8 for t in local]),
    )


@dataclass
class Org:
    id: str
    name: str
    zone: str
    created: datetime
    groups: list[tuple[str, int | None, str, int]]  # (id, parent index, name, level)
    people: list[Person]
    keys: list[Key]


def id_at(prefix: str, when: datetime) -> str:
    """An id shaped like core.ids.new_id, as if made at `when` (ids sort by creation time)."""
    value = (int(when.timestamp() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(chr(ALPHABET[value & 31]))
        value >>= 5
    return f"{prefix}_{''.join(reversed(chars))}"


def plan_org(rng: np.random.Generator, name: str, zone: str, start: datetime, hours: int) -> Org:
    """The tree, the people and the keys, with each key's traffic parameters."""
    created = start - timedelta(days=45)
    groups: list[tuple[str, int | None, str, int]] = [(id_at("grp", created), None, name, 0)]
    team_of: dict[str, tuple[int, int, str]] = {}  # team -> (team group, workspace, division)
    projects: list[tuple[int, str, str, str, int, str]] = []
    for division, teams in TREE.items():
        groups.append((id_at("grp", created), 0, division, 1))
        div = len(groups) - 1
        for team, production in teams.items():
            groups.append((id_at("grp", created), div, team, 2))
            team_group = len(groups) - 1
            groups.append((id_at("grp", created), team_group, f"{team.lower()}-workspace", 3))
            team_of[team] = (team_group, len(groups) - 1, division)
            for project, kind, app, count in production:
                groups.append((id_at("grp", created), team_group, project, 3))
                projects.append((len(groups) - 1, project, kind, app, count, team))

    full_names = [f"{first} {last}" for first in FIRST for last in LAST]
    chosen = [full_names[i] for i in rng.choice(len(full_names), MEMBERS, replace=False)]
    domain = f"northwind-{secrets.token_hex(3)}.example"  # emails are unique across the database
    people = [Person("", f"owner@{domain}", "Morgan Owner", 0, "owner", 0)]

    def add_person(home: int, role: str) -> int:
        full = chosen[len(people)]
        email = f"{full.lower().replace(' ', '.')}@{domain}"
        people.append(Person("", email, full, home, role, home))
        return len(people) - 1

    for index, group in enumerate(groups):
        if group[3] == 1:
            add_person(index, "admin")
    for _ in range(2):  # finance: read-only over the whole org
        add_person(0, "viewer")
    members_of: dict[str, list[int]] = {}
    for team, size in TEAM_SIZES.items():
        team_group, workspace, _division = team_of[team]
        members_of[team] = [add_person(team_group, "admin")]
        for _ in range(size - 1):
            home = team_group if rng.random() < 0.7 else workspace
            members_of[team].append(add_person(home, "member"))
    assert len(people) == MEMBERS, len(people)

    keys: list[Key] = []
    index_of = {model: i for i, model in enumerate(MODEL_NAMES)}

    def add_key(label: str, group: int, owner: int, kind_name: str, app: str, env: float) -> None:
        kind = KINDS[kind_name]
        popularity = np.linspace(2.0, 1.0, len(kind.pool))
        count = min(int(rng.choice([1, 2, 3], p=[0.4, 0.4, 0.2])), len(kind.pool))
        picked = rng.choice(len(kind.pool), count, replace=False, p=popularity / popularity.sum())
        models = [index_of[kind.pool[i]] for i in picked]
        first_hour = 0 if rng.random() < 0.55 else int(rng.uniform(0, 0.9) * hours)
        last_hour = hours
        if rng.random() < 0.06 and first_hour < hours - 60 * 24:  # revoked during the year
            last_hour = int(rng.uniform(first_hour + 30 * 24, hours))
        keys.append(
            Key(
                id="",
                name=label,
                group=group,
                owner=owner,
                kind=kind_name,
                app=app,
                weight=kind.weight * env * float(rng.lognormal(0, kind.sigma)),
                models=models,
                shares=sorted((float(s) for s in rng.dirichlet(np.full(count, 2.0))), reverse=True),
                drift=float(rng.uniform(0, 0.6)) if count > 1 else 0.0,
                start=first_hour,
                end=last_hour,
                peak=float(rng.choice([1.0, 2.0, 3.0, 4.0, 14.0])),
                budget_capped=False,
                prompt=kind.prompt * float(rng.lognormal(0, 0.4)),
                completion=kind.completion * float(rng.lognormal(0, 0.3)),
                forbidden=0,
            )
        )

    for group, project, kind, app, count, team in projects:
        staff = members_of[team]
        for env, share in ENVIRONMENTS[:count]:
            owner = staff[0] if env == "prod" else int(rng.choice(staff))
            add_key(f"{project}-{env}", group, owner, kind, app, share)
    personal = [(member, team) for team, staff in members_of.items() for member in staff]
    order = rng.permutation(len(personal))
    personal = [personal[i] for i in order]
    for member, team in (personal + personal)[: KEYS - len(keys)]:
        _team_group, workspace, division = team_of[team]
        coding = rng.random() < (0.8 if division in CODING_DIVISIONS else 0.1)
        app = str(rng.choice(CODING_APPS if coding else CHAT_APPS))
        first = people[member].name.split()[0].lower()
        number = 1 + sum(1 for key in keys if key.owner == member)
        label = f"{first}-{app.lower().replace(' ', '-')}-{number}"
        add_key(label, workspace, member, "coding" if coding else "chat", app, 1.0)
    _cover_all_models(rng, keys)
    humans = [i for i, key in enumerate(keys) if KINDS[key.kind].humans]
    for i in rng.choice(humans, 8, replace=False):
        keys[int(i)].budget_capped = True
    for key in keys:
        key.forbidden = next(
            (index_of[m] for m in EXPENSIVE if index_of[m] not in key.models), key.models[0]
        )
        key.id = id_at("key", start + timedelta(hours=key.start) - timedelta(days=2))
    for person in people:
        own = [key.start for key in keys if key.owner == people.index(person)]
        joined = start + timedelta(hours=min(own, default=0)) - timedelta(days=3)
        person.joined = max(joined, created)
        person.id = id_at("usr", person.joined)
    return Org(id_at("org", created), name, zone, created, groups, people, keys)


def _cover_all_models(rng: np.random.Generator, keys: list[Key]) -> None:
    """Give every one of the twenty models at least one key that uses it."""
    for model, name in enumerate(MODEL_NAMES):
        if any(model in key.models for key in keys):
            continue
        fits = [key for key in keys if name in KINDS[key.kind].pool and len(key.models) < 3]
        key = fits[int(rng.integers(len(fits)))]
        key.models.append(model)
        key.shares = [share * 0.8 for share in key.shares] + [0.2]
        key.drift = key.drift if len(key.models) > 1 else 0.0


def _circular(hour: np.ndarray, centre: float) -> np.ndarray:
    return np.abs((hour - centre + 12) % 24 - 12)


def _shape(key: Key, cal: Calendar) -> np.ndarray:
    """Requests by local hour and weekday, per kind of key."""
    h = cal.local_hour

    def bump(centre: float, width: float) -> np.ndarray:
        return np.exp(-((_circular(h, centre) / width) ** 2))

    if key.kind == "chat":
        shape, weekend = 0.03 + bump(10.5, 2.2) + 0.85 * bump(15, 2.3), 0.07
    elif key.kind == "coding":
        shape = 0.03 + bump(11, 2.5) + bump(15.5, 2.5) + 0.25 * bump(21, 1.5)
        weekend = 0.15
    elif key.kind == "eval":
        shape, weekend = 0.02 + bump(11, 2.5) + bump(15.5, 2.5), 0.05
    elif key.kind == "service":
        shape, weekend = 0.25 + bump(13, 4.5), 0.55
    elif key.kind == "batch":
        shape, weekend = 0.15 + 2.0 * bump(key.peak, 1.2), 0.9
    else:
        shape, weekend = 0.4 + 1.5 * bump(key.peak, 2.0), 0.8
    return shape * np.where(cal.weekend, weekend, 1.0)


def intensity(rng: np.random.Generator, keys: list[Key], cal: Calendar) -> np.ndarray:
    """Expected requests per (key, hour), up to a common factor."""
    hours = cal.local_hour.size
    progress = np.arange(hours) / hours
    org_growth = np.exp(np.log(1.8) * progress)  # the org adopts the gateway over the year
    rows = np.zeros((len(keys), hours))
    for i, key in enumerate(keys):
        kind = KINDS[key.kind]
        shape = _shape(key, cal)
        noise = rng.lognormal(0, kind.day_sigma, cal.day.max() + 1)[cal.day]
        if key.kind in ("batch", "embedding"):
            growth = np.exp(rng.normal(0.25, 0.4) * progress)
        else:
            growth = org_growth * np.exp(rng.normal(0, 0.3) * progress)
        row = key.weight * shape / shape.mean() * noise * growth
        if kind.humans:
            row *= np.where(cal.holiday, 0.25, 1.0) * np.where(cal.summer, 0.8, 1.0)
        elif key.kind == "service":
            row *= np.where(cal.holiday, 0.6, 1.0)
        row[: key.start] = 0
        row[key.end :] = 0
        rows[i] = row
    return rows


def incidents(
    rng: np.random.Generator, keys: list[Key], cal: Calendar
) -> tuple[list[Spike], list[Outage]]:
    """Planted anomalies: what a robust z-score over daily spend, requests or errors should find."""
    days = int(cal.day.max()) + 1

    def key_of(kind: str, name_part: str = "") -> int:
        found = [i for i, k in enumerate(keys) if k.kind == kind and name_part in k.name]
        live = [i for i in found if keys[i].start == 0 and keys[i].end == cal.day.size]
        return int(rng.choice(live or found))

    def weekday(low: float, high: float) -> int:
        while True:
            day = int(rng.uniform(low, high) * days)
            if not cal.weekend[day * 24 + 12]:
                return day

    def saturday(low: float, high: float) -> int:
        while True:
            day = int(rng.uniform(low, high) * days)
            if cal.weekend[day * 24 + 12] and not cal.weekend[max(day * 24 - 12, 0)]:
                return day

    index_of = {model: i for i, model in enumerate(MODEL_NAMES)}
    leaked = key_of("coding")
    night = weekday(0.55, 0.62)
    spikes = [
        Spike(
            "runaway retry loop",
            key_of("batch", "prod"),
            saturday(0.1, 0.2) * 24 + 2,
            6,
            25,
            failing=0.6,
        ),
        Spike(
            "deploy with the wrong model",
            key_of("service", "prod"),
            weekday(0.3, 0.4) * 24 + 9,
            40,
            1.2,
            model=index_of[OPUS],
        ),
        Spike("load test", key_of("service", "staging"), weekday(0.45, 0.5) * 24 + 14, 4, 300),
        *(
            Spike(
                "leaked key used at night",
                leaked,
                (night + n) * 24 + 1,
                4,
                60,
                model=index_of["gpt-5"],
                blocked_after=0.5 if n == 2 else 1.0,
            )
            for n in range(3)
        ),
        Spike("archive re-processing", key_of("batch", "prod"), weekday(0.7, 0.8) * 24, 48, 5),
        Spike(
            "model comparison sweep",
            key_of("eval", "prod"),
            weekday(0.85, 0.9) * 24 + 10,
            10,
            15,
            model=index_of["gemini-2.5-pro"],
        ),
    ]
    outages = [
        Outage("anthropic", weekday(0.25, 0.35) * 24 + 14, 3, 0.7),
        Outage("openai", weekday(0.6, 0.7) * 24 + 16, 2, 0.45),
        Outage("groq", weekday(0.4, 0.5) * 24 + 8, 10, 0.15),
    ]
    return spikes, outages


@dataclass
class Traffic:
    """What the events are drawn from: requests per (key, hour), and per-hour facts."""

    counts: np.ndarray
    load: np.ndarray  # each key's intensity relative to its own mean (rate limits bite above)
    cal: Calendar
    spikes: list[Spike]
    outages: list[Outage]


def plan_traffic(
    rng: np.random.Generator, keys: list[Key], cal: Calendar, requests: int
) -> Traffic:
    rows = intensity(rng, keys, cal)
    spikes, outages = incidents(rng, keys, cal)
    mean = rows.sum(axis=1) / np.maximum((rows > 0).sum(axis=1), 1)
    load = rows / np.maximum(mean, 1e-12)[:, None]
    for spike in spikes:
        rows[spike.key, spike.start : spike.start + spike.hours] += spike.factor * mean[spike.key]
    counts = rng.multinomial(requests, (rows / rows.sum()).ravel()).reshape(rows.shape)
    return Traffic(counts.astype(np.int32), load.astype(np.float32), cal, spikes, outages)


# --- events ------------------------------------------------------------------------------------


@dataclass
class Tables:
    """Per-key and per-model arrays the event draw indexes into."""

    org_id: str
    start_us: int
    hours: int
    keys: list[Key]
    traffic: Traffic
    key_ids: np.ndarray
    group_ids: np.ndarray
    owner_ids: np.ndarray
    apps: np.ndarray


def tables(org: Org, start: datetime, hours: int, traffic: Traffic) -> Tables:
    return Tables(
        org_id=org.id,
        start_us=int(start.timestamp()) * US,
        hours=hours,
        keys=org.keys,
        traffic=traffic,
        key_ids=np.array([key.id for key in org.keys], dtype=object),
        group_ids=np.array([org.groups[key.group][0] for key in org.keys], dtype=object),
        owner_ids=np.array([org.people[key.owner].id for key in org.keys], dtype=object),
        apps=np.array([key.app for key in org.keys], dtype=object),
    )


def _model_arrays() -> dict[str, np.ndarray]:
    catalog = default_catalog()
    entries = [catalog[name] for name in MODEL_NAMES]
    return {
        "input": np.array([m.price.input_nusd_per_mtok for m in entries], dtype=np.int64),
        "output": np.array([m.price.output_nusd_per_mtok for m in entries], dtype=np.int64),
        "cached": np.array([m.price.cached_input_nusd_per_mtok for m in entries], dtype=np.int64),
        "embedding": np.array([m.mode == "embedding" for m in entries]),
        "context": np.array([m.context_window for m in entries], dtype=np.int64),
        "max_output": np.array([max(m.max_output_tokens, 1) for m in entries], dtype=np.int64),
        "provider": np.array(
            [PROVIDERS.index(PROVIDER_OF_FAMILY[m.provider]) for m in entries], dtype=np.int8
        ),
        "ttft": np.array([MODELS[name][0] for name in MODEL_NAMES], dtype=np.float64),
        "speed": np.array([max(MODELS[name][1], 1) for name in MODEL_NAMES], dtype=np.float64),
    }


def cost_nanos(tokens: np.ndarray, price: np.ndarray) -> np.ndarray:
    """core.money.cost_nanos, vectorized: exact integer arithmetic, rounded half up."""
    return (tokens * price + 500_000) // 1_000_000


def price(
    models: dict[str, np.ndarray],
    model: np.ndarray,
    prompt: np.ndarray,
    completion: np.ndarray,
    cached: np.ndarray,
) -> np.ndarray:
    """ModelPrice.cost_nanos for arrays: whole prompt minus the cache discount, plus output."""
    inp, out, hit = models["input"][model], models["output"][model], models["cached"][model]
    discount = cost_nanos(cached, inp) - cost_nanos(cached, hit)
    return cost_nanos(prompt, inp) - discount + cost_nanos(completion, out)


def request_ids(created_us: np.ndarray, rng: np.random.Generator) -> list[str]:
    """req_ ids shaped like core.ids.new_id: 48 bits of the request's millisecond, 80 random."""
    millis = created_us // 1000
    chars = np.empty((created_us.size, 30), dtype=np.uint8)
    chars[:, :4] = np.frombuffer(b"req_", dtype=np.uint8)
    for i in range(10):
        chars[:, 4 + i] = ALPHABET_CODES[(millis >> (5 * (9 - i))) & 31]
    chars[:, 14:] = ALPHABET_CODES[rng.integers(0, 32, (created_us.size, 16))]
    return chars.view("S30").ravel().astype("U30").tolist()


def draw_events(t: Tables, h0: int, h1: int, seed: list[int]) -> dict[str, Any]:
    """Every request of the hours [h0, h1), in time order, as column arrays."""
    rng = np.random.default_rng(seed)
    models = _model_arrays()
    traffic, cal = t.traffic, t.traffic.cal
    counts = traffic.counts[:, h0:h1]
    width = h1 - h0
    cell = np.repeat(np.arange(counts.size), counts.ravel())
    key = (cell // width).astype(np.int32)
    hour = (h0 + cell % width).astype(np.int32)
    created = t.start_us + hour.astype(np.int64) * HOUR_US + rng.integers(0, HOUR_US, cell.size)
    order = np.argsort(created, kind="stable")
    key, hour, created = key[order], hour[order], created[order]
    n = key.size
    keys = t.keys

    def per_key(values: list[Any], dtype: Any = np.float64) -> np.ndarray:
        return np.array(values, dtype=dtype)[key]

    kinds = [KINDS[k.kind] for k in keys]
    # Which of its models a request asks for; the first model's share drifts to the second.
    slots = np.full((len(keys), 3), -1, dtype=np.int32)
    shares = np.zeros((len(keys), 3))
    for i, k in enumerate(keys):
        slots[i, : len(k.models)] = k.models
        shares[i, : len(k.shares)] = k.shares
    progress = hour / t.hours
    moved = shares[key, 0] * per_key([k.drift for k in keys]) * progress
    first, second = shares[key, 0] - moved, shares[key, 1] + moved
    draw = rng.random(n)
    slot = (draw >= first).astype(np.int32) + (draw >= first + second)
    slot = np.minimum(slot, per_key([len(k.models) - 1 for k in keys], np.int32))
    model = slots[key, slot]
    in_spike = [
        (s, (key == s.key) & (hour >= s.start) & (hour < s.start + s.hours)) for s in traffic.spikes
    ]
    for spike, mask in in_spike:
        if spike.model is not None:
            model[mask] = spike.model
    provider = models["provider"][model].astype(np.int8)
    openai = provider == PROVIDERS.index("openai")
    fallback = openai & (rng.random(n) < FALLBACK_SHARE)
    provider[fallback] = PROVIDERS.index(FALLBACK_PROVIDER)

    # Outcome: budget and rate-limit blocks, other blocks, upstream failures, or success.
    month_end = cal.day_of_month[hour] > cal.days_in_month[hour] - 4
    p_budget = np.where(per_key([k.budget_capped for k in keys], bool) & month_end, 0.45, 0.0)
    for spike, mask in in_spike:
        if spike.blocked_after < 1.0:
            late = (hour - spike.start) >= spike.blocked_after * spike.hours
            p_budget[mask & late] = 1.0
    batch = per_key([k.kind == "batch" for k in keys], bool)
    p_rate = np.where(batch, 0.01 * np.clip(traffic.load[key, hour] - 2.0, 0, 3), 0.0)
    p_block = per_key([kind.blocks for kind in kinds])
    p_fail = per_key([kind.fails for kind in kinds])
    p_reject = np.zeros(n)
    for spike, mask in in_spike:
        p_reject[mask] = spike.failing
    for outage in traffic.outages:
        down = (provider == PROVIDERS.index(outage.provider)) & (hour >= outage.start)
        p_fail[down & (hour < outage.start + outage.hours)] += outage.failing
    draw = rng.random(n)
    cuts = np.cumsum(np.stack([p_budget, p_rate, p_block, p_reject, p_fail]), axis=0)
    cause = (draw[None, :] >= cuts).sum(axis=0)  # 0 budget .. 4 failure, 5 success
    error = np.zeros(n, dtype=np.int8)
    status = np.full(n, 200, dtype=np.int32)
    error[cause == 0] = ERROR_INDEX["budget_exceeded"]
    error[cause == 1] = ERROR_INDEX["rate_limited"]
    error[cause == 3] = ERROR_INDEX["upstream_rejected"]
    for cause_id, mix in ((2, BLOCKS), (4, FAILURES)):
        chosen = cause == cause_id
        picks = rng.choice(len(mix), int(chosen.sum()), p=[share for _n, _s, share in mix])
        codes = np.array([ERROR_INDEX[name] for name, _s, _p in mix], dtype=np.int8)
        error[chosen] = codes[picks]
    status_of = {ERROR_INDEX[name]: code for name, code, _p in BLOCKS + FAILURES}
    for index, code in status_of.items():
        status[error == index] = code
    ok = cause == 5
    refused = error == ERROR_INDEX["model_not_allowed"]
    model[refused] = per_key([k.forbidden for k in keys], np.int32)[refused]

    # Tokens, streaming, latency and cost of the requests that reached a model.
    embedding = models["embedding"][model]
    stream = (rng.random(n) < per_key([kind.stream for kind in kinds])) & ~embedding
    prompt = rng.lognormal(np.log(per_key([k.prompt for k in keys])), 0.9)
    prompt = np.clip(prompt, 8, models["context"][model] * 0.8).astype(np.int64)
    completion = rng.lognormal(np.log(np.maximum(per_key([k.completion for k in keys]), 1)), 0.8)
    completion = np.clip(completion, 1, models["max_output"][model]).astype(np.int64)
    completion[embedding] = 0
    hit = (rng.random(n) < per_key([kind.cache_share for kind in kinds])) & ~embedding
    fraction = per_key([max(kind.cache_fraction, 0.01) for kind in kinds])
    cached = np.where(hit, prompt * rng.beta(4 * fraction, 4 * (1 - fraction)), 0).astype(np.int64)
    cut = ok & stream & (rng.random(n) < STREAM_CUT_SHARE)
    completion[cut] = (completion[cut] * rng.uniform(0.1, 0.6, int(cut.sum()))).astype(np.int64)
    error[cut] = ERROR_INDEX[STREAM_CUT]
    estimated = cut | (ok & stream & (rng.random(n) < ESTIMATED_SHARE))
    for column in (prompt, completion, cached):
        column[~ok] = 0
    cost = np.where(ok, price(models, model, prompt, completion, cached), 0)

    overhead = rng.lognormal(np.log(4.0), 0.4, n)
    first_token = models["ttft"][model] * rng.lognormal(0, 0.45, n) + prompt * 0.02
    generate = completion / models["speed"][model] * 1000 * rng.lognormal(0, 0.2, n)
    latency = overhead + first_token + generate
    latency[embedding] = (
        overhead + models["ttft"][model] * rng.lognormal(0, 0.4, n) + prompt * 0.01
    )[embedding]
    failed_after = {
        "upstream_timeout": UPSTREAM_TIMEOUT_MS,
        "upstream_rate_limited": 180,
        "upstream_rejected": 250,
        "upstream_error": 900,
        "upstream_unreachable": 900,
    }
    for name, median in failed_after.items():
        mask = error == ERROR_INDEX[name]
        spread = 0.05 if name == "upstream_timeout" else 0.6
        latency[mask] = median * rng.lognormal(0, spread, int(mask.sum()))
    blocked = (cause <= 2) & ~ok
    latency[blocked] = rng.lognormal(np.log(3.0), 0.5, int(blocked.sum()))
    ttft = np.where(ok & stream, overhead + first_token, -1).astype(np.int64)

    served = model.copy()
    served[refused] = -1  # refused before routing: no provider, no served model
    return {
        "key": key,
        "created": created,
        "ids": request_ids(created, np.random.default_rng()),
        "model": model,
        "served": served,
        "provider": np.where(refused, -1, provider),
        "fallback": fallback & ~refused,
        "prompt": prompt,
        "completion": completion,
        "cached": cached,
        "cost": cost,
        "latency": np.maximum(latency, 1).astype(np.int64),
        "ttft": ttft,
        "status": status,
        "error": error,
        "stream": stream,
        "estimated": estimated,
    }


def _objects(values: np.ndarray, names: tuple[Any, ...]) -> np.ndarray:
    """Names by index (-1 or a None entry: NULL) as an object array."""
    lookup = np.array([*names, None], dtype=object)
    return lookup[np.where(values < 0, len(names), values)]


def records(t: Tables, events: dict[str, Any], lo: int, hi: int) -> Iterator[tuple[Any, ...]]:
    """Rows [lo, hi) of `events` as COPY tuples, in USAGE_COLUMNS order, made slice by slice."""
    model_names = np.array(MODEL_NAMES, dtype=object)
    routing = json.dumps({"fallback_from": "openai", "attempts": 2})
    for start in range(lo, hi, COPY_SLICE):
        s = slice(start, min(start + COPY_SLICE, hi))
        key = events["key"][s]
        n = key.size
        ttft = events["ttft"][s].astype(object)
        ttft[events["ttft"][s] < 0] = None
        route = np.full(n, None, dtype=object)
        route[events["fallback"][s]] = routing
        yield from zip(
            events["ids"][s],
            (events["created"][s] - PG_EPOCH_US).tolist(),
            [t.org_id] * n,
            t.group_ids[key].tolist(),
            t.key_ids[key].tolist(),
            t.owner_ids[key].tolist(),
            model_names[events["model"][s]].tolist(),
            _objects(events["served"][s], MODEL_NAMES).tolist(),
            _objects(events["provider"][s], PROVIDERS).tolist(),
            t.apps[key].tolist(),
            events["prompt"][s].tolist(),
            events["completion"][s].tolist(),
            events["cached"][s].tolist(),
            events["cost"][s].tolist(),
            events["latency"][s].tolist(),
            ttft.tolist(),
            events["status"][s].tolist(),
            _objects(events["error"][s], ERROR_TYPES).tolist(),
            events["stream"][s].tolist(),
            events["estimated"][s].tolist(),
            route.tolist(),
            strict=True,
        )


# --- the database --------------------------------------------------------------------------------


def asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def create_database(server_url: str, name: str, replace: bool) -> str:
    """A fresh database `name` on the server of `server_url`, migrated to the newest schema."""
    from sluicegate.core.db import make_engine
    from sluicegate.migrate import upgrade

    if not name.replace("_", "").isalnum():
        raise SystemExit(f"--create-database: {name!r} is not a plain database name")
    admin = await asyncpg.connect(asyncpg_dsn(with_database(server_url, "postgres")))
    try:
        exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists and not replace:
            raise SystemExit(
                f"database {name} exists already; pass --replace to drop and recreate it, or "
                "--database-url to add an org to it"
            )
        if exists:
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = with_database(server_url, name)
    engine = make_engine(url, pool_size=1)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()
    return url


async def write_org(url: str, org: Org, hours: int, start: datetime, pepper: bytes) -> str:
    """Insert the org's tree, people, memberships, roles and keys; returns an admin token of
    the owner (made by the identity service, digested with `pepper`)."""
    from sqlalchemy.ext.asyncio import async_sessionmaker

    from sluicegate.core.db import make_engine
    from sluicegate.core.digests import display_prefix, new_secret, secret_digest
    from sluicegate.identity.models import User
    from sluicegate.identity.service import issue_admin_token
    from sluicegate.keys.models import ApiKey
    from sluicegate.keys.service import KEY_PREFIX
    from sluicegate.orgs.models import Group, Membership, Organization, RoleBinding

    engine = make_engine(url, pool_size=1)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    created = org.created
    try:
        async with sessions() as session, session.begin():
            session.add(
                Organization(
                    id=org.id,
                    name=org.name,
                    timezone=org.zone,
                    credit_enforced=True,
                    created_at=created,
                    updated_at=created,
                )
            )
            await session.flush()
            paths: list[str] = []
            for group_id, parent, _name, _level in org.groups:
                paths.append(group_id if parent is None else f"{paths[parent]}/{group_id}")
            for level in range(4):  # parents before children
                for index, (group_id, parent, name, at) in enumerate(org.groups):
                    if at == level:
                        session.add(
                            Group(
                                id=group_id,
                                org_id=org.id,
                                parent_id=None if parent is None else org.groups[parent][0],
                                name=name,
                                level=level,
                                path=paths[index],
                                created_at=created,
                                updated_at=created,
                            )
                        )
                await session.flush()
            users = []
            for person in org.people:
                joined = person.joined or created
                user = User(
                    id=person.id,
                    email=person.email,
                    name=person.name,
                    created_at=joined,
                    updated_at=joined,
                )
                users.append(user)
                session.add(user)
            await session.flush()
            for person in org.people:
                joined = person.joined or created
                session.add(
                    Membership(
                        id=id_at("mem", joined),
                        org_id=org.id,
                        user_id=person.id,
                        home_group_id=org.groups[person.home][0],
                        created_at=joined,
                    )
                )
                session.add(
                    RoleBinding(
                        id=id_at("rb", joined),
                        org_id=org.id,
                        group_id=org.groups[person.role_group][0],
                        user_id=person.id,
                        role=person.role,
                        created_at=joined,
                    )
                )
            await session.flush()
            for key in org.keys:
                made = max(start + timedelta(hours=key.start) - timedelta(days=2), created)
                revoked = start + timedelta(hours=key.end) if key.end < hours else None
                session.add(
                    ApiKey(
                        id=key.id,
                        org_id=org.id,
                        group_id=org.groups[key.group][0],
                        owner_user_id=org.people[key.owner].id,
                        name=key.name,
                        prefix=display_prefix(secret := new_secret(KEY_PREFIX)),
                        digest=secret_digest(pepper, secret),
                        status="revoked" if revoked else "active",
                        allowed_models=[MODEL_NAMES[m] for m in key.models],
                        created_at=made,
                        updated_at=revoked or made,
                        revoked_at=revoked,
                    )
                )
            await session.flush()
            _token, secret = await issue_admin_token(
                session, users[0], pepper=pepper, name="analytics benchmark"
            )
    finally:
        await engine.dispose()
    return secret


def months_between(start: datetime, end: datetime) -> list[date]:
    months, month = [], month_of(start)
    while datetime(month.year, month.month, 1, tzinfo=UTC) < end:
        months.append(month)
        month = next_month(month)
    return months


def month_start_us(month: date) -> int:
    return int(datetime(month.year, month.month, 1, tzinfo=UTC).timestamp()) * US


async def connect(dsn: str, *, loader: bool = False) -> asyncpg.Connection:
    conn = await asyncpg.connect(dsn)
    # Bulk work of our own: nothing here needs to wait for the WAL flush of each commit.
    await conn.execute(
        "SET synchronous_commit = off; SET work_mem = '1GB'; SET maintenance_work_mem = '1GB'; "
        "SET TimeZone = 'UTC'"
    )
    if loader:  # COPY takes plain ints (microseconds since 2000) for timestamptz
        await conn.set_type_codec(
            "timestamptz",
            schema="pg_catalog",
            encoder=PG_TIME.pack,
            decoder=lambda data: PG_TIME.unpack(data)[0],
            format="binary",
        )
    return conn


@dataclass
class LoadFigures:
    rows: int = 0
    draw_seconds: float = 0.0  # generating the events (numpy), summed over jobs
    copy_seconds: float = 0.0  # building tuples and COPY, summed over jobs
    partitions: int = 0


async def load_usage(dsn: str, t: Tables, end: datetime, jobs: int, seed: int) -> LoadFigures:
    """COPY every request into its month's partition: `jobs` connections, each drawing a month
    of events (in a thread, numpy releases the GIL) while the others copy."""
    start = datetime.fromtimestamp(t.start_us / US, UTC)
    months = months_between(start, end)
    conn = await connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", PARTITION_LOCK)
            for month in months:
                await conn.execute(create_statement(month))
    finally:
        await conn.close()
    bounds = [month_start_us(m) for m in months] + [month_start_us(next_month(months[-1]))]
    chunks: list[tuple[int, int, int]] = []
    for index in range(len(months)):
        h0 = max(0, -(-(bounds[index] - t.start_us) // HOUR_US))
        h1 = min(t.hours, -(-(bounds[index + 1] - t.start_us) // HOUR_US))
        if h1 > h0:
            chunks.append((index, h0, h1))
    figures = LoadFigures(partitions=len(months))
    queue = list(chunks)

    async def job() -> None:
        conn = await connect(dsn, loader=True)
        try:
            while queue:
                index, h0, h1 = queue.pop(0)
                began = time.perf_counter()
                events = await asyncio.to_thread(draw_events, t, h0, h1, [seed, index])
                figures.draw_seconds += time.perf_counter() - began
                began = time.perf_counter()
                created = events["created"]
                cuts = np.searchsorted(created, bounds)
                for month, lo, hi in zip(months, cuts[:-1], cuts[1:], strict=True):
                    if hi > lo:
                        await conn.copy_records_to_table(
                            partition_name(month),
                            records=records(t, events, int(lo), int(hi)),
                            columns=USAGE_COLUMNS,
                        )
                figures.rows += created.size
                figures.copy_seconds += time.perf_counter() - began
                print(f"  {partition_name(months[index])}: {created.size:,} rows", file=sys.stderr)
        finally:
            await conn.close()

    await asyncio.gather(*(job() for _ in range(max(jobs, 1))))
    return figures


# --- rollups and the ledger, in SQL ---------------------------------------------------------

# rollups.py's sums, in SQL: $2 is the list of blocked error types.
MEASURE_SQL = {
    "requests": "count(*)",
    "errors": "count(*) FILTER (WHERE status_code >= 400 "
    "AND (error_type IS NULL OR error_type <> ALL($2::text[])))",
    "blocked": "count(*) FILTER (WHERE error_type = ANY($2::text[]))",
    "prompt_tokens": "sum(prompt_tokens)",
    "completion_tokens": "sum(completion_tokens)",
    "cached_tokens": "sum(cached_tokens)",
    "cost_nusd": "sum(cost_nusd)",
    "latency_ms_sum": "sum(latency_ms)",
    "ttft_ms_sum": "coalesce(sum(ttft_ms), 0)",
    "ttft_count": "count(ttft_ms)",
}
assert tuple(MEASURE_SQL) == MEASURES
# rollups.py keys rows by the requested model (the column holds at most the 200 characters
# rollups keep), with '' for an absent provider or app, and by the deployment the routing names
# ('' for none; at most 200 characters).
DIMENSION_SQL = (
    "group_id, key_id, user_id, requested_model, coalesce(provider, ''), coalesce(app, ''), "
    "coalesce(left(routing ->> 'deployment', 200), '')"
)
DIMENSION_NAMES = "group_id, key_id, user_id, model, provider, app, deployment"
QUARTER_SQL = "date_bin('15 minutes', created_at, TIMESTAMPTZ '2000-01-01 00:00:00+00')"
HOUR_SQL = "date_bin('1 hour', created_at, TIMESTAMPTZ '2000-01-01 00:00:00+00')"
MEASURE_LIST = ", ".join(MEASURE_SQL.values())
MEASURE_NAMES = ", ".join(MEASURES)

QUARTER_ROLLUPS = f"""
INSERT INTO usage_rollups (org_id, bucket_start, {DIMENSION_NAMES}, {MEASURE_NAMES})
SELECT org_id, {QUARTER_SQL}, {DIMENSION_SQL}, {MEASURE_LIST}
FROM usage_events WHERE org_id = $1 AND created_at >= $3 AND created_at < $4
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9 ORDER BY 1, 2, 3, 4, 5, 6, 7, 8, 9
"""  # noqa: S608 - constants only
DAILY_ROLLUPS = f"""
INSERT INTO usage_daily_rollups (org_id, zone, day, {DIMENSION_NAMES}, {MEASURE_NAMES})
SELECT org_id, $3::text, (created_at AT TIME ZONE $3::text)::date, {DIMENSION_SQL}, {MEASURE_LIST}
FROM usage_events WHERE org_id = $1
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 ORDER BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10
"""  # noqa: S608 - constants only
# rollups._rebuild_org_days in SQL: the daily rollups summed per day and one dimension.
ORG_DAILY_ROLLUPS = [
    f"""
INSERT INTO usage_org_daily_rollups (org_id, zone, dimension, day, value, {MEASURE_NAMES})
SELECT org_id, zone, '{name}', day, {name}, {", ".join(f"sum({m})" for m in MEASURES)}
FROM usage_daily_rollups WHERE org_id = $1 GROUP BY org_id, zone, day, {name}
"""  # noqa: S608 - constants only
    for name in ORG_DIMENSIONS
]
# ledger.hourly_debits in SQL: one row per UTC hour of the org's requests that cost something,
# with an id shaped like core.ids.new_id made at that hour (10 characters of milliseconds, 16
# random ones).
HOURLY_DEBITS = f"""
INSERT INTO ledger_entries (id, org_id, kind, amount_nusd, period_start, requests, created_at)
SELECT 'led_' || (
         SELECT string_agg(substr($2, 1 + (CASE WHEN i < 10 THEN (h.ms >> (5 * (9 - i))) & 31
                                          ELSE floor(random() * 32)::bigint END)::int, 1),
                           '' ORDER BY i)
         FROM generate_series(0, 25) AS i),
       h.org_id, 'usage', -h.cost, h.hour, h.requests, h.hour
FROM (SELECT org_id, {HOUR_SQL} AS hour,
             (extract(epoch FROM {HOUR_SQL}) * 1000)::bigint AS ms,
             sum(cost_nusd) AS cost, count(*) AS requests
      FROM usage_events WHERE org_id = $1 AND cost_nusd <> 0
      GROUP BY 1, 2, 3) AS h
ORDER BY h.hour
"""  # noqa: S608 - constants only
KEYS_LAST_USED = """
UPDATE api_keys SET last_used_at = used.last
FROM (SELECT k.id, (SELECT max(e.created_at) FROM usage_events e
                    WHERE e.org_id = k.org_id AND e.key_id = k.id) AS last
      FROM api_keys k WHERE k.org_id = $1) AS used
WHERE api_keys.id = used.id AND used.last IS NOT NULL
"""
MONTHLY_SPEND = """
SELECT date_trunc('month', day)::date AS month, sum(cost_nusd) AS cost
FROM usage_daily_rollups WHERE org_id = $1 AND zone = $2 GROUP BY 1 ORDER BY 1
"""
TOPUP_STEP_NUSD = 500 * 10**9  # finance tops up in steps of 500 USD
TOPUP_MARGIN = 1.3  # ahead of the month's spend


async def top_ups(conn: asyncpg.Connection, org: Org) -> int:
    """One top-up at the start of each local month, a margin above what the month will spend,
    made by the owner; returns how many."""
    zone = ZoneInfo(org.zone)
    rows = []
    for month, cost in await conn.fetch(MONTHLY_SPEND, org.id, org.zone):
        steps = -(-int(int(cost) * TOPUP_MARGIN) // TOPUP_STEP_NUSD)
        when = datetime(month.year, month.month, 1, tzinfo=zone).astimezone(UTC)
        rows.append(
            (
                id_at("led", when),
                org.id,
                "topup",
                max(steps, 1) * TOPUP_STEP_NUSD,
                org.people[0].id,
                "monthly top-up",
                when,
            )
        )
    await conn.executemany(
        "INSERT INTO ledger_entries (id, org_id, kind, amount_nusd, actor_user_id, note, "
        "created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        rows,
    )
    return len(rows)


# --- checks ---------------------------------------------------------------------------------


async def check_totals(conn: asyncpg.Connection, org: Org) -> dict[str, Any]:
    """Every measure summed over the usage rows, the 15-minute rollups and the daily rollups,
    and the cost and billed requests against the ledger's usage debits."""
    blocked = sorted(BLOCKED_ERROR_TYPES)
    events = await conn.fetchrow(
        f"SELECT {MEASURE_LIST}, count(*) FILTER (WHERE cost_nusd <> 0) AS billed "  # noqa: S608
        "FROM usage_events WHERE org_id = $1",
        org.id,
        blocked,
    )
    sums = ", ".join(f"sum({name})" for name in MEASURES)
    quarters = await conn.fetchrow(
        f"SELECT {sums} FROM usage_rollups WHERE org_id = $1",  # noqa: S608
        org.id,
    )
    days = await conn.fetchrow(
        f"SELECT {sums} FROM usage_daily_rollups WHERE org_id = $1 AND zone = $2",  # noqa: S608
        org.id,
        org.zone,
    )
    org_days = await conn.fetch(
        f"SELECT dimension, {sums} FROM usage_org_daily_rollups "  # noqa: S608
        "WHERE org_id = $1 AND zone = $2 GROUP BY dimension",
        org.id,
        org.zone,
    )
    ledger = await conn.fetchrow(
        "SELECT -sum(amount_nusd), sum(requests) FROM ledger_entries "
        "WHERE org_id = $1 AND kind = 'usage'",
        org.id,
    )
    raw = [int(v) for v in list(events)[: len(MEASURES)]]
    result = {
        "usage_events": dict(zip(MEASURES, raw, strict=True)),
        "usage_rollups": dict(zip(MEASURES, (int(v) for v in quarters), strict=True)),
        "usage_daily_rollups": dict(zip(MEASURES, (int(v) for v in days), strict=True)),
        "usage_org_daily_rollups": {
            row["dimension"]: dict(zip(MEASURES, (int(v) for v in list(row)[1:]), strict=True))
            for row in org_days
        },
        "ledger_usage": {"cost_nusd": int(ledger[0]), "requests": int(ledger[1])},
        "billed_requests": int(events["billed"]),
    }
    result["equal"] = (
        result["usage_events"] == result["usage_rollups"] == result["usage_daily_rollups"]
        and set(result["usage_org_daily_rollups"]) == set(ORG_DIMENSIONS)
        and all(
            sums == result["usage_events"] for sums in result["usage_org_daily_rollups"].values()
        )
        and result["ledger_usage"]["cost_nusd"] == result["usage_events"]["cost_nusd"]
        and result["ledger_usage"]["requests"] == result["billed_requests"]
    )
    return result


def sample_days(org: Org, start: date, days: int, rng: np.random.Generator) -> list[date]:
    """A day with a DST change (where the zone has one) and a random day."""
    zone = ZoneInfo(org.zone)
    picked = [start + timedelta(days=int(rng.integers(days)))]
    for offset in range(days):
        day = start + timedelta(days=offset)
        midnight = datetime(day.year, day.month, day.day, tzinfo=zone)
        following = datetime.combine(day + timedelta(days=1), datetime.min.time(), zone)
        if midnight.utcoffset() != following.utcoffset():
            picked.insert(0, day)
            break
    return picked


async def check_day(conn: asyncpg.Connection, org: Org, day: date) -> dict[str, Any]:
    """The rollup rows of one local day equal what rollups.py makes of that day's events."""
    zone = ZoneInfo(org.zone)
    lo = datetime.combine(day, datetime.min.time(), zone).astimezone(UTC)
    hi = datetime.combine(day + timedelta(days=1), datetime.min.time(), zone).astimezone(UTC)
    rows = await conn.fetch(
        f"SELECT {', '.join(EVENT_COLUMNS)} FROM usage_events "  # noqa: S608
        "WHERE org_id = $1 AND created_at >= $2 AND created_at < $3",
        org.id,
        lo,
        hi,
    )
    events = [dict(zip(EVENT_COLUMNS, row, strict=True)) for row in rows]
    quarters, dailies, _ = rollup_rows(events, {org.id: org.zone})
    quarter_names = ("org_id", "bucket_start", *DIMENSION_NAMES.split(", "), *MEASURES)
    day_names = ("org_id", "zone", "day", *DIMENSION_NAMES.split(", "), *MEASURES)
    stored_quarters = await conn.fetch(
        f"SELECT {', '.join(quarter_names)} FROM usage_rollups "  # noqa: S608
        "WHERE org_id = $1 AND bucket_start >= $2 AND bucket_start < $3",
        org.id,
        lo,
        hi,
    )
    stored_days = await conn.fetch(
        f"SELECT {', '.join(day_names)} FROM usage_daily_rollups "  # noqa: S608
        "WHERE org_id = $1 AND zone = $2 AND day = $3",
        org.id,
        org.zone,
        day,
    )

    def rows_of(items: list[dict[str, Any]], names: tuple[str, ...]) -> set[tuple[Any, ...]]:
        return {tuple(item[name] for name in names) for item in items}

    equal = rows_of(quarters, quarter_names) == {tuple(r) for r in stored_quarters} and (
        rows_of(dailies, day_names) == {tuple(r) for r in stored_days}
    )
    return {
        "day": day.isoformat(),
        "utc_hours": (hi - lo).total_seconds() / 3600,
        "events": len(events),
        "quarter_rows": len(stored_quarters),
        "day_rows": len(stored_days),
        "equal": equal,
    }


# --- main -------------------------------------------------------------------------------------


def default_info_path(url: str) -> Path:
    database = urlsplit(url).path.lstrip("/") or "sluicegate"
    return Path.home() / ".cache" / "sluicegate" / f"bench-{database}.json"


def default_start() -> date:
    """The first day of the month a year before this one: the year just gone."""
    today = datetime.now(UTC).date()
    return date(today.year - 1, today.month, 1)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="postgresql+asyncpg://... of the database to fill")
    parser.add_argument(
        "--create-database",
        metavar="NAME",
        help="create and migrate database NAME on the --database-url server (default the local "
        "one) and fill it",
    )
    parser.add_argument(
        "--replace", action="store_true", help="with --create-database: drop one of that name"
    )
    parser.add_argument("--requests", type=int, default=10_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--timezone", default="Europe/Berlin", help="the org's IANA timezone")
    parser.add_argument(
        "--start",
        type=date.fromisoformat,
        default=default_start(),
        help="the first local day (default: the 1st of this month a year ago)",
    )
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--org-name", default="Northwind Research")
    parser.add_argument("--jobs", type=int, default=2, help="COPY connections at once")
    parser.add_argument(
        "--secret-key",
        default=os.environ.get("SLUICEGATE_SECRET_KEY"),
        help="peppers the admin token (default $SLUICEGATE_SECRET_KEY, else a new one)",
    )
    parser.add_argument("--info", type=Path, help="where to write org id, token and secret key")
    args = parser.parse_args(argv)
    if not args.database_url and not args.create_database:
        parser.error("give --database-url, --create-database NAME, or both")
    try:
        ZoneInfo(args.timezone)
    except (KeyError, ValueError):
        parser.error(f"--timezone: {args.timezone!r} is not an IANA timezone")
    return args


class Phases:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._began = time.perf_counter()

    def done(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = now - self._began
        self._began = now
        print(f"{name}: {self.seconds[name]:.1f} s", file=sys.stderr)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    phases = Phases()
    server = args.database_url or "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
    url = args.database_url
    if args.create_database:
        url = await create_database(server, args.create_database, args.replace)
        phases.done("create and migrate database")
    else:
        from sluicegate.core.db import make_engine
        from sluicegate.migrate import upgrade

        engine = make_engine(url, pool_size=1)
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()
    zone = ZoneInfo(args.timezone)
    start = datetime.combine(args.start, datetime.min.time(), zone).astimezone(UTC)
    end_day = args.start + timedelta(days=args.days)
    end = datetime.combine(end_day, datetime.min.time(), zone).astimezone(UTC)
    hours = int((end - start).total_seconds()) // 3600
    rng = np.random.default_rng(args.seed)
    org = plan_org(rng, args.org_name, args.timezone, start, hours)
    cal = calendar(start, hours, zone)
    traffic = plan_traffic(rng, org.keys, cal, args.requests)
    phases.done("plan the org and its traffic")
    secret_key = args.secret_key or secrets.token_urlsafe(48)
    token = await write_org(url, org, hours, start, secret_key.encode())
    phases.done("org tree, members, keys, admin token")
    dsn = asyncpg_dsn(url)
    figures = await load_usage(dsn, tables(org, start, hours, traffic), end, args.jobs, args.seed)
    phases.done("generate and COPY usage rows")
    conn = await connect(dsn)
    try:
        await conn.execute("ANALYZE usage_events")  # the rollup queries plan on fresh statistics
        phases.done("ANALYZE usage rows")
        blocked = sorted(BLOCKED_ERROR_TYPES)
        # A month at a time (15-minute buckets never straddle two months): each aggregation
        # fits in memory, and rows arrive in key order.
        quarter_rows = 0
        for month in months_between(start, end):
            status = await conn.execute(
                QUARTER_ROLLUPS,
                org.id,
                blocked,
                datetime(month.year, month.month, 1, tzinfo=UTC),
                datetime.combine(next_month(month), datetime.min.time(), UTC),
            )
            quarter_rows += int(status.split()[-1])
        phases.done("15-minute rollups (INSERT ... SELECT ... GROUP BY)")
        day_rows = await conn.execute(DAILY_ROLLUPS, org.id, blocked, org.zone)
        phases.done("daily rollups in the org's zone")
        org_day_rows = 0
        for statement in ORG_DAILY_ROLLUPS:
            org_day_rows += int((await conn.execute(statement, org.id)).split()[-1])
        phases.done("org-wide daily rollups")
        debit_rows = await conn.execute(HOURLY_DEBITS, org.id, ALPHABET.decode())
        topups = await top_ups(conn, org)
        await conn.execute(KEYS_LAST_USED, org.id)
        phases.done("ledger hourly debits, top-ups, keys' last use")
        # What autovacuum would do soon after such a load, done now so that it does not run
        # while analytics is measured: visibility maps and hint bits set, statistics fresh.
        await conn.execute("VACUUM usage_events")
        await conn.execute(
            "VACUUM (ANALYZE) usage_rollups, usage_daily_rollups, usage_org_daily_rollups, "
            "ledger_entries, api_keys"
        )
        phases.done("VACUUM (ANALYZE)")
        totals = await check_totals(conn, org)
        picked = sample_days(org, args.start, args.days, rng)
        days = [await check_day(conn, org, day) for day in picked]
        phases.done("verify")
        sizes = await conn.fetch(
            "SELECT relname, pg_total_relation_size(oid) FROM pg_class WHERE relname IN "
            "('usage_events', 'usage_rollups', 'usage_daily_rollups', 'ledger_entries')"
        )
        partitions = await conn.fetchval(
            "SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits "
            "WHERE inhparent = 'usage_events'::regclass"
        )
    finally:
        await conn.close()
    return {
        "database_url": url,
        "org_id": org.id,
        "org_name": org.name,
        "timezone": org.zone,
        "start": args.start.isoformat(),
        "end": (end_day - timedelta(days=1)).isoformat(),
        "requests": figures.rows,
        "seed": args.seed,
        "admin_email": org.people[0].email,
        "admin_token": token,
        "secret_key": secret_key,
        "rows": {
            "usage_rollups": quarter_rows,
            "usage_daily_rollups": int(day_rows.split()[-1]),
            "usage_org_daily_rollups": org_day_rows,
            "ledger_usage_debits": int(debit_rows.split()[-1]),
            "ledger_topups": topups,
        },
        "bytes": {name: int(size) for name, size in sizes} | {"usage_events": int(partitions)},
        "phases_seconds": {name: round(s, 1) for name, s in phases.seconds.items()},
        "load": asdict(figures),
        "totals": totals,
        "sample_days": days,
        "spikes": [
            {
                **asdict(s),
                "key_id": org.keys[s.key].id,
                "key_name": org.keys[s.key].name,
                "from": (start + timedelta(hours=s.start)).isoformat(),
                "model": None if s.model is None else MODEL_NAMES[s.model],
            }
            for s in traffic.spikes
        ],
        "outages": [
            {**asdict(o), "from": (start + timedelta(hours=o.start)).isoformat()}
            for o in traffic.outages
        ],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.perf_counter()
    info = asyncio.run(run(args))
    total = time.perf_counter() - began
    info["phases_seconds"]["total"] = round(total, 1)
    path = args.info or default_info_path(info["database_url"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info, indent=2, default=str))
    path.chmod(0o600)
    ok = info["totals"]["equal"] and all(day["equal"] for day in info["sample_days"])
    rows = info["rows"]
    print(
        f"{info['requests']:,} requests in {total:.0f} s: {rows['usage_rollups']:,} 15-minute "
        f"{rows['usage_daily_rollups']:,} daily and {rows['usage_org_daily_rollups']:,} "
        "org-wide daily rollup rows, "
        f"{rows['ledger_usage_debits']:,} hourly debits"
    )
    for name, seconds in info["phases_seconds"].items():
        print(f"  {name}: {seconds:.1f} s")
    cost = info["totals"]["usage_events"]["cost_nusd"] / 1e9
    same = "yes" if info["totals"]["equal"] else "NO"
    print(f"cost {cost:,.2f} USD; every measure equal over events, rollups and debits: {same}")
    for day in info["sample_days"]:
        same = "yes" if day["equal"] else "NO"
        print(f"rollup rows of {day['day']} ({day['events']:,} events) as rollups.py's: {same}")
    print(f"info (token, secret key, incidents): {path}")
    print(f"org: {info['org_id']}")
    print(f"admin token: {info['admin_token']}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
