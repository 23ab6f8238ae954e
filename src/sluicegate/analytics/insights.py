"""Insights on spend: anomalies in daily spend per member, key and model (robust z-score against
a trailing window), and a summary in plain sentences of what drove a period's spend.

The statistics and the sentences are pure functions of integers (nano-USD) and dates, computed
with exact fractions, so they are tested on their own; the service reads daily spend from the
rollups in the org's timezone, for the usage the caller reads (orgs.authorize.usage_visibility).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

from sqlalchemy.ext.asyncio import AsyncSession

from sluicegate.analytics import feed_repository, insights_repository
from sluicegate.analytics.insights_repository import DIMENSIONS
from sluicegate.core.actors import Actor
from sluicegate.core.errors import InvalidInput
from sluicegate.core.money import NANOS_PER_USD, nanos_to_usd
from sluicegate.core.timezones import zone
from sluicegate.orgs import service as orgs
from sluicegate.orgs.authorize import Action, UsageVisibility, authorize, usage_visibility

Number = int | Fraction

# --- the statistics ------------------------------------------------------------------------------

# MAD times 1.4826 estimates the standard deviation of normally distributed data, so the robust
# z reads like an ordinary z-score while one outlier in the window barely moves it.
MAD_SCALE = Fraction("1.4826")
# Iglewicz and Hoaglin's cut-off for modified z-scores: |z| >= 3.5 is an outlier candidate.
Z_THRESHOLD = Fraction("3.5")
# The trailing window each day is compared with: two weeks hold every weekday twice.
BASELINE_DAYS = 14
# Fewer days with spend in the window than this is too short a history to call anything odd.
MIN_BASELINE_DAYS = 7
# Below this difference from the median nothing alarms, however unusual: cents are not news.
MATERIAL_CHANGE_NANOS = NANOS_PER_USD
# The least spread a window is assumed to have. A flat window (MAD == 0, the same spend every
# day) would make any change infinitely odd; real spend wobbles by ten percent either way from
# one day to the next, so the scale is at least 10% of the median and at least 0.10 USD (a day
# must be some 35% off the median to stand out, however flat the days before it).
MIN_SCALE_SHARE = Fraction(1, 10)
MIN_SCALE_NANOS = NANOS_PER_USD // 10


def median(values: Sequence[Number]) -> Fraction:
    if not values:
        raise ValueError("the median of no values is undefined")
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return Fraction(ordered[middle])
    return Fraction(ordered[middle - 1] + ordered[middle], 2)


def mad(values: Sequence[Number]) -> Fraction:
    """The median absolute deviation from the median."""
    center = median(values)
    return median([abs(value - center) for value in values])


def robust_z(
    value: Number, baseline: Sequence[Number], *, min_scale: Number = 0
) -> Fraction | None:
    """(value - median) / max(1.4826 * MAD, min_scale); None when that scale is 0 (a flat
    baseline and no floor: no spread to measure against)."""
    scale = max(MAD_SCALE * mad(baseline), Fraction(min_scale))
    if scale == 0:
        return None
    return (value - median(baseline)) / scale


def scale_floor(center: Fraction) -> Fraction:
    return max(Fraction(MIN_SCALE_NANOS), MIN_SCALE_SHARE * abs(center))


@dataclass(frozen=True, slots=True)
class Finding:
    """A day whose spend is an outlier against its trailing window."""

    day: date
    spend: int
    median: Fraction
    z: Fraction
    baseline_days: int  # days in the window (from the first day with spend on)

    @property
    def direction(self) -> str:
        return "spike" if self.z > 0 else "drop"


def find_anomalies(
    series: Mapping[date, int], days: Iterable[date], *, last_complete_day: date
) -> list[Finding]:
    """The days of `days` whose spend (0 when absent from `series`) is an outlier against the
    BASELINE_DAYS before it. The window starts no earlier than the first day with spend (days
    before a key or model existed are not zeros) and needs MIN_BASELINE_DAYS days with spend.
    A day is flagged when |robust z| >= Z_THRESHOLD, it differs from the median by at least
    MATERIAL_CHANGE_NANOS, and it lies outside every value of its window: a spend the window
    has already seen (a quiet weekend, a weekly batch of the same size) is not news. A drop is
    flagged only on a day that is over (`last_complete_day` or before)."""
    spent = [day for day, nanos in series.items() if nanos]
    if not spent:
        return []
    first_spend = min(spent)
    findings = []
    for day in days:
        start = max(day - timedelta(days=BASELINE_DAYS), first_spend)
        baseline = [series.get(start + timedelta(days=i), 0) for i in range((day - start).days)]
        if sum(1 for nanos in baseline if nanos) < MIN_BASELINE_DAYS:
            continue
        value = series.get(day, 0)
        center = median(baseline)
        if abs(value - center) < MATERIAL_CHANGE_NANOS:
            continue
        if min(baseline) <= value <= max(baseline):
            continue
        if value < center and day > last_complete_day:
            continue
        z = robust_z(value, baseline, min_scale=scale_floor(center))
        if z is not None and abs(z) >= Z_THRESHOLD:
            findings.append(Finding(day, value, center, z, len(baseline)))
    return findings


# --- words ---------------------------------------------------------------------------------------


def usd_text(nanos: int) -> str:
    """Exact USD with at least two decimals: 42100000000 -> '42.10', 12300 -> '0.0000123'."""
    whole, _, fraction = nanos_to_usd(nanos).partition(".")
    return f"{whole}.{fraction.rstrip('0').ljust(2, '0')}"


def decimal_text(value: Fraction, places: int = 1) -> str:
    """`value` rounded half up to `places` decimals."""
    exact = Decimal(value.numerator) / Decimal(value.denominator)
    return str(exact.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))


def nearest_nano(value: Fraction) -> int:
    """A median of whole nano-USD is whole or a half: shown rounded half up."""
    return (2 * value.numerator + value.denominator) // (2 * value.denominator)


def anomaly_reason(finding: Finding) -> str:
    spend, window = usd_text(finding.spend), f"{finding.baseline_days}-day median"
    center = nearest_nano(finding.median)
    z = decimal_text(finding.z)
    if finding.median == 0:
        return f"Spend of {spend} USD on {finding.day} against a {window} of 0 USD (robust z {z})"
    if finding.direction == "spike":
        ratio = decimal_text(finding.spend / finding.median)
        comparison = f"is {ratio}x the {window}"
    else:
        below = decimal_text((finding.median - finding.spend) / finding.median * 100)
        comparison = f"is {below}% below the {window}"
    return (
        f"Spend of {spend} USD on {finding.day} {comparison} of {usd_text(center)} USD "
        f"(robust z {z})"
    )


# --- movers and the summary's sentences ---------------------------------------------------------

MOVERS_PER_DIMENSION = 3
_PLURALS = {"member": "members", "key": "keys", "model": "models"}


@dataclass(frozen=True, slots=True)
class Mover:
    dimension: str
    id: str
    label: str
    current: int
    previous: int

    @property
    def change(self) -> int:
        return self.current - self.previous


def rank_movers(movers: Iterable[Mover]) -> list[Mover]:
    """Those whose spend changed, the largest change (either way) first, ties by id."""
    return sorted((m for m in movers if m.change), key=lambda m: (-abs(m.change), m.id))


def change_pct(current: int, previous: int) -> Fraction | None:
    """The change in percent of the previous amount; None when there was none before."""
    if previous == 0:
        return None
    return Fraction(current - previous, previous) * 100


@dataclass(frozen=True, slots=True)
class Period:
    """Days in the org's timezone, both inclusive, and the equal-length period just before."""

    first: date
    last: date

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1

    @property
    def previous_first(self) -> date:
        return self.first - timedelta(days=self.days)

    @property
    def previous_last(self) -> date:
        return self.first - timedelta(days=1)


def _previous_words(period: Period) -> str:
    length = "day" if period.days == 1 else f"{period.days} days"
    return f"the previous {length} ({period.previous_first} to {period.previous_last})"


def total_sentence(period: Period, total: int, previous: int) -> str:
    span = f"from {period.first} to {period.last}"
    before = _previous_words(period)
    if total == 0 and previous == 0:
        return f"No spend {span}, nor in {before}."
    if previous == 0:
        return f"Spend was {usd_text(total)} USD {span}, against none in {before}."
    pct = change_pct(total, previous)
    assert pct is not None
    if pct == 0:
        trend = "the same as"
    else:
        trend = f"{'up' if pct > 0 else 'down'} {decimal_text(abs(pct))}% from"
    return f"Spend was {usd_text(total)} USD {span}, {trend} {usd_text(previous)} USD in {before}."


def mover_sentence(mover: Mover) -> str:
    rose = mover.change > 0
    return (
        f"Among {_PLURALS[mover.dimension]}, {mover.label} {'rose' if rose else 'fell'} the most: "
        f"{usd_text(mover.current)} USD, {'up' if rose else 'down'} {usd_text(abs(mover.change))} "
        f"USD from {usd_text(mover.previous)} USD."
    )


def share_sentence(model: Mover, total: int) -> str:
    share = decimal_text(Fraction(model.current, total) * 100)
    return (
        f"{model.label} was the top model with {share}% of spend ({usd_text(model.current)} USD)."
    )


def top_spender(spend: Iterable[Mover]) -> Mover | None:
    """The one that spent the most in the period (ties by id); None when nobody spent."""
    spenders = [m for m in spend if m.current > 0]
    return min(spenders, key=lambda m: (-m.current, m.id)) if spenders else None


def summary_sentences(
    period: Period,
    total: int,
    previous: int,
    ranked: Mapping[str, Sequence[Mover]],
    top_model: Mover | None,
) -> list[str]:
    """The period's total against the previous one, each dimension's top mover (`ranked` as
    rank_movers orders them), and the top model's share of spend."""
    sentences = [total_sentence(period, total, previous)]
    for dimension in DIMENSIONS:
        movers = ranked.get(dimension) or []
        if movers:
            sentences.append(mover_sentence(movers[0]))
    if top_model is not None and total > 0:
        sentences.append(share_sentence(top_model, total))
    return sentences


# --- the service ---------------------------------------------------------------------------------

DEFAULT_PERIOD_DAYS = 7
MAX_PERIOD_DAYS = 366


@dataclass(frozen=True, slots=True)
class Anomaly:
    dimension: str
    id: str
    label: str
    finding: Finding
    reason: str


@dataclass(frozen=True, slots=True)
class AnomalyReport:
    period: Period
    timezone: str
    anomalies: list[Anomaly]


@dataclass(frozen=True, slots=True)
class Summary:
    period: Period
    timezone: str
    total: int
    previous_total: int
    movers: list[Mover]
    sentences: list[str]


def resolve_period(first: date | None, last: date | None, today: date) -> Period:
    """Defaults: to = today, from = DEFAULT_PERIOD_DAYS days up to `to`."""
    if last is None:
        last = today if first is None or first <= today else first
    try:
        if first is None:
            first = last - timedelta(days=DEFAULT_PERIOD_DAYS - 1)
        period = Period(first, last)
        # Refused now rather than mid-way: the reads start this early (the summary's previous
        # period, the anomalies' window before the first day).
        min(period.previous_first, first - timedelta(days=BASELINE_DAYS))
    except OverflowError:
        raise InvalidInput("from: is too far in the past", details={"field": "from"}) from None
    if first > last:
        raise InvalidInput("from: must be on or before `to`", details={"field": "from"})
    if period.days > MAX_PERIOD_DAYS:
        raise InvalidInput(
            f"to: a period is at most {MAX_PERIOD_DAYS} days", details={"field": "to"}
        )
    return period


async def _reader(session: AsyncSession, actor: Actor, org_id: str) -> tuple[UsageVisibility, str]:
    access = await orgs.load_access(session, actor, org_id)
    authorize(access, Action.ORG_READ)
    org = await orgs.organization_of(session, access)
    return usage_visibility(access, org.members_see_org_feed), org.timezone


async def _labels(
    session: AsyncSession, org_id: str, dimension: str, ids: Iterable[str]
) -> dict[str, str]:
    wanted = set(ids)
    if dimension == "member":
        members = await feed_repository.member_names(session, wanted)
        return {user_id: name or email for user_id, (name, email) in members.items()}
    if dimension == "key":
        keys = await feed_repository.key_names(session, org_id, wanted)
        return {key_id: f"{name} ({prefix})" for key_id, (name, prefix) in keys.items()}
    return {model: model for model in wanted}


async def anomalies(
    session: AsyncSession,
    actor: Actor,
    org_id: str,
    *,
    first: date | None,
    last: date | None,
    now: datetime,
) -> AnomalyReport:
    """Anomalous days of spend from `first` to `last` per member, key and model, the most
    unusual first."""
    visibility, timezone = await _reader(session, actor, org_id)
    return await _anomalies(session, org_id, timezone, visibility, first, last, now)


async def org_anomalies_today(
    session: AsyncSession, org_id: str, timezone: str, now: datetime
) -> AnomalyReport:
    """Today's anomalies in the whole org (no caller's visibility): what the alert evaluator
    raises `anomaly.detected` for."""
    today = now.astimezone(zone(timezone)).date()
    return await _anomalies(session, org_id, timezone, UsageVisibility(None, ""), today, today, now)


async def _anomalies(
    session: AsyncSession,
    org_id: str,
    timezone: str,
    visibility: UsageVisibility,
    first: date | None,
    last: date | None,
    now: datetime,
) -> AnomalyReport:
    today = now.astimezone(zone(timezone)).date()
    period = resolve_period(first, last, today)
    evaluated = [
        period.first + timedelta(days=i)
        for i in range(period.days)
        if period.first + timedelta(days=i) <= today
    ]
    found: list[Anomaly] = []
    for dimension in DIMENSIONS:
        rows = await insights_repository.daily_spend(
            session,
            org_id,
            timezone,
            visibility,
            dimension,
            first=period.first - timedelta(days=BASELINE_DAYS),
            last=period.last,
        )
        series: dict[str, dict[date, int]] = {}
        for value, day, nanos in rows:
            series.setdefault(value, {})[day] = nanos
        findings = {
            value: find_anomalies(days, evaluated, last_complete_day=today - timedelta(days=1))
            for value, days in series.items()
        }
        flagged = [value for value, hits in findings.items() if hits]
        labels = await _labels(session, org_id, dimension, flagged)
        found += [
            Anomaly(dimension, value, labels.get(value, value), hit, anomaly_reason(hit))
            for value in flagged
            for hit in findings[value]
        ]
    found.sort(key=lambda a: (-abs(a.finding.z), a.finding.day, a.dimension, a.id))
    return AnomalyReport(period, timezone, found)


async def summary(
    session: AsyncSession,
    actor: Actor,
    org_id: str,
    *,
    first: date | None,
    last: date | None,
    now: datetime,
) -> Summary:
    """The period's spend against the equal-length period before it, what moved it most per
    member, model and key, and those facts in sentences."""
    visibility, timezone = await _reader(session, actor, org_id)
    period = resolve_period(first, last, now.astimezone(zone(timezone)).date())
    ranked: dict[str, list[Mover]] = {}
    top_model: Mover | None = None
    total = previous = 0
    for dimension in DIMENSIONS:
        rows = await insights_repository.period_spend(
            session,
            org_id,
            timezone,
            visibility,
            dimension,
            previous_first=period.previous_first,
            first=period.first,
            last=period.last,
        )
        spend = [Mover(dimension, value, value, current, before) for value, current, before in rows]
        # Every dimension partitions the same rollup rows, so each gives the same totals.
        total, previous = sum(m.current for m in spend), sum(m.previous for m in spend)
        top = rank_movers(spend)[:MOVERS_PER_DIMENSION]
        if dimension == "model":
            top_model = top_spender(spend)
        labels = await _labels(session, org_id, dimension, (m.id for m in top))
        ranked[dimension] = [
            Mover(dimension, m.id, labels.get(m.id, m.id), m.current, m.previous) for m in top
        ]
    movers = [m for dimension in DIMENSIONS for m in ranked[dimension]]
    return Summary(
        period,
        timezone,
        total,
        previous,
        movers,
        summary_sentences(period, total, previous, ranked, top_model),
    )
