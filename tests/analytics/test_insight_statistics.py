"""The statistics and sentences of insights, on their own: the robust z-score's invariances, what
the detector flags (a planted spike) and what it never flags (a flat series, a short history,
cents, a drop on a day not yet over), and movers that account for the whole change."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from fractions import Fraction

from hypothesis import assume, given
from hypothesis import strategies as st

from sluicegate.analytics.insights import (
    BASELINE_DAYS,
    MAD_SCALE,
    MATERIAL_CHANGE_NANOS,
    MIN_BASELINE_DAYS,
    Z_THRESHOLD,
    Finding,
    Mover,
    Period,
    anomaly_reason,
    change_pct,
    find_anomalies,
    mad,
    median,
    rank_movers,
    robust_z,
    summary_sentences,
    top_spender,
    usd_text,
)

USD = 10**9
DAY0 = date(2026, 11, 1)
amounts = st.integers(min_value=0, max_value=10_000 * USD)
baselines = st.lists(amounts, min_size=MIN_BASELINE_DAYS, max_size=BASELINE_DAYS)


def days(count: int, start: date = DAY0) -> list[date]:
    return [start + timedelta(days=i) for i in range(count)]


def series_of(values: list[int], start: date = DAY0) -> dict[date, int]:
    return dict(zip(days(len(values), start), values, strict=True))


# --- median, MAD, z ------------------------------------------------------------------------------


@given(st.lists(amounts, min_size=1, max_size=40))
def test_half_the_values_lie_on_each_side_of_the_median(values: list[int]) -> None:
    center = median(values)
    assert sum(v <= center for v in values) * 2 >= len(values)
    assert sum(v >= center for v in values) * 2 >= len(values)
    assert mad(values) >= 0
    assert mad([values[0]] * len(values)) == 0


@given(baselines, amounts, st.integers(min_value=-(10**12), max_value=10**12))
def test_z_is_unchanged_by_adding_a_constant_to_baseline_and_value(
    baseline: list[int], value: int, shift: int
) -> None:
    shifted = robust_z(value + shift, [v + shift for v in baseline])
    assert shifted == robust_z(value, baseline)


@given(
    baselines,
    amounts,
    st.fractions(min_value=Fraction(1, 1000), max_value=1000).filter(lambda f: f > 0),
)
def test_z_is_unchanged_by_scaling_baseline_and_value(
    baseline: list[int], value: int, factor: Fraction
) -> None:
    assume(mad(baseline) > 0)
    scaled = robust_z(value * factor, [v * factor for v in baseline])
    assert scaled == robust_z(value, baseline)
    mirrored = robust_z(-value, [-v for v in baseline])
    assert mirrored == -robust_z(value, baseline)  # type: ignore[operator]


@given(baselines, amounts)
def test_z_is_the_distance_from_the_median_in_scaled_mads(baseline: list[int], value: int) -> None:
    z = robust_z(value, baseline)
    if mad(baseline) == 0:
        assert z is None  # no spread and no floor: nothing to measure against
    else:
        assert z == (value - median(baseline)) / (MAD_SCALE * mad(baseline))


# --- the detector --------------------------------------------------------------------------------

# Daily spend of a steady workload: a level and a wobble of up to 10% around it.
steady = st.integers(min_value=USD, max_value=1000 * USD).flatmap(
    lambda level: st.lists(
        st.integers(min_value=level * 9 // 10, max_value=level * 11 // 10),
        min_size=BASELINE_DAYS,
        max_size=BASELINE_DAYS,
    )
)


@given(steady, st.integers(min_value=3, max_value=50))
def test_a_planted_spike_is_found_and_explained(baseline: list[int], factor: int) -> None:
    spike = factor * max(baseline) + 10 * USD
    series = series_of([*baseline, spike])
    day = DAY0 + timedelta(days=BASELINE_DAYS)
    findings = find_anomalies(series, days(BASELINE_DAYS + 1), last_complete_day=day)
    assert [(f.day, f.spend, f.direction) for f in findings] == [(day, spike, "spike")]
    [finding] = findings
    assert finding.z >= Z_THRESHOLD and finding.baseline_days == BASELINE_DAYS
    reason = anomaly_reason(finding)
    assert reason.startswith(f"Spend of {usd_text(spike)} USD on {day} is ")
    assert "x the 14-day median of" in reason and "(robust z " in reason


@given(amounts, st.integers(min_value=1, max_value=40))
def test_a_flat_series_flags_nothing(level: int, length: int) -> None:
    series = series_of([level] * (BASELINE_DAYS + length))
    assert find_anomalies(series, list(series), last_complete_day=max(series)) == []


@given(steady)
def test_a_steady_series_that_repeats_itself_flags_nothing(baseline: list[int]) -> None:
    # Once the window holds a whole round, every day's spend is one it has seen before.
    series = series_of(baseline * 3)
    later = days(2 * BASELINE_DAYS, DAY0 + timedelta(days=BASELINE_DAYS))
    assert find_anomalies(series, later, last_complete_day=max(series)) == []


def test_a_flat_baseline_then_a_spike_uses_the_floor_on_the_scale() -> None:
    series = series_of([6_700_000_000] * BASELINE_DAYS + [42_100_000_000])
    day = date(2026, 11, 15)
    [finding] = find_anomalies(series, [day], last_complete_day=day)
    # MAD is 0: the scale is 10% of the median, 0.67 USD.
    assert finding.z == Fraction(42_100_000_000 - 6_700_000_000, 670_000_000)  # 10% of 6.70
    assert anomaly_reason(finding) == (
        "Spend of 42.10 USD on 2026-11-15 is 6.3x the 14-day median of 6.70 USD (robust z 52.8)"
    )


@given(st.integers(min_value=1, max_value=MIN_BASELINE_DAYS - 1), st.integers(1, 10**6))
def test_too_short_a_history_flags_nothing(history: int, spike: int) -> None:
    series = series_of([5 * USD] * history + [spike * USD])
    assert find_anomalies(series, list(series), last_complete_day=max(series)) == []
    # Days before the first spend are not zeros of the window, even when asked about.
    padded = {DAY0 - timedelta(days=10): 0, **series}
    assert find_anomalies(padded, list(series), last_complete_day=max(series)) == []


@given(st.lists(st.integers(1, 5 * 10**7), min_size=14, max_size=14), st.integers(0, 99))
def test_cents_do_not_alarm(baseline: list[int], cents: int) -> None:
    spike = max(baseline) + cents * 10**7  # at most about a dollar above a few cents
    assume(spike - median(baseline) < MATERIAL_CHANGE_NANOS)
    series = series_of([*baseline, spike])
    assert find_anomalies(series, list(series), last_complete_day=max(series)) == []


def test_a_drop_is_flagged_only_once_its_day_is_over() -> None:
    baseline = [10 * USD, 11 * USD, 9 * USD, 10 * USD, 12 * USD, 10 * USD, 9 * USD] * 2
    series = series_of([*baseline, USD // 2])
    day = DAY0 + timedelta(days=BASELINE_DAYS)
    assert find_anomalies(series, [day], last_complete_day=day - timedelta(days=1)) == []
    [finding] = find_anomalies(series, [day], last_complete_day=day)
    assert finding.direction == "drop" and finding.z < -Z_THRESHOLD
    assert anomaly_reason(finding) == (
        "Spend of 0.50 USD on 2026-11-15 is 95.0% below the 14-day median of 10.00 USD "
        "(robust z -6.4)"
    )


def test_a_spike_from_nothing_says_so() -> None:
    finding = Finding(date(2026, 11, 15), 12 * USD, Fraction(0), Fraction(120), 14)
    assert anomaly_reason(finding) == (
        "Spend of 12.00 USD on 2026-11-15 against a 14-day median of 0 USD (robust z 120.0)"
    )


# --- money in words, movers, sentences -----------------------------------------------------------


@given(st.integers(min_value=0, max_value=10**18))
def test_usd_in_words_is_exact(nanos: int) -> None:
    words = usd_text(nanos)
    assert Decimal(words) * USD == nanos
    assert len(words.partition(".")[2]) >= 2


spend_pairs = st.dictionaries(
    st.text("abcdefgh", min_size=1, max_size=4), st.tuples(amounts, amounts), max_size=12
)


@given(spend_pairs)
def test_movers_account_for_the_whole_change_largest_first(
    spend: dict[str, tuple[int, int]],
) -> None:
    movers = [Mover("member", key, key, now, before) for key, (now, before) in spend.items()]
    ranked = rank_movers(movers)
    total_change = sum(now for now, _ in spend.values()) - sum(b for _, b in spend.values())
    assert sum(m.change for m in ranked) == total_change
    assert all(m.change for m in ranked)
    changes = [abs(m.change) for m in ranked]
    assert changes == sorted(changes, reverse=True)


@given(spend_pairs)
def test_the_sentences_state_the_exact_totals_and_the_top_mover(
    spend: dict[str, tuple[int, int]],
) -> None:
    period = Period(date(2026, 11, 24), date(2026, 11, 30))
    members = [Mover("member", key, f"member {key}", a, b) for key, (a, b) in spend.items()]
    models = [Mover("model", key, f"model {key}", a, b) for key, (a, b) in spend.items()]
    total, previous = sum(m.current for m in members), sum(m.previous for m in members)
    ranked = {"member": rank_movers(members), "model": rank_movers(models)}
    sentences = summary_sentences(period, total, previous, ranked, top_spender(models))
    first = sentences[0]
    assert "from 2026-11-24 to 2026-11-30" in first
    if total or previous:
        assert f"{usd_text(total)} USD" in first
    if previous:
        assert f"{usd_text(previous)} USD" in first
        assert "previous 7 days (2026-11-17 to 2026-11-23)" in first
    if ranked["member"]:
        top = ranked["member"][0]
        assert any(s.startswith(f"Among members, {top.label} ") for s in sentences)
        assert f"{usd_text(abs(top.change))} USD" in " ".join(sentences)
    if total:
        leader = top_spender(models)
        assert leader is not None
        assert sentences[-1].startswith(f"{leader.label} was the top model with ")


def test_a_summary_in_words() -> None:
    period = Period(date(2026, 11, 24), date(2026, 11, 30))
    alice = Mover("member", "usr_a", "Alice", 73_700_000_000, 36_600_000_000)
    model = Mover("model", "gpt-4o", "gpt-4o", 73_700_000_000, 36_600_000_000)
    flat = Mover("model", "claude", "claude", 21 * USD, 21 * USD)
    total, previous = 94_700_000_000, 57_600_000_000
    ranked = {"member": rank_movers([alice]), "model": rank_movers([model, flat])}
    assert summary_sentences(period, total, previous, ranked, top_spender([model, flat])) == [
        "Spend was 94.70 USD from 2026-11-24 to 2026-11-30, up 64.4% from 57.60 USD in the "
        "previous 7 days (2026-11-17 to 2026-11-23).",
        "Among members, Alice rose the most: 73.70 USD, up 37.10 USD from 36.60 USD.",
        "Among models, gpt-4o rose the most: 73.70 USD, up 37.10 USD from 36.60 USD.",
        "gpt-4o was the top model with 77.8% of spend (73.70 USD).",
    ]
    assert change_pct(0, 0) is None and change_pct(5, 10) == -50
    assert summary_sentences(period, 0, 0, {}, None) == [
        "No spend from 2026-11-24 to 2026-11-30, nor in the previous 7 days "
        "(2026-11-17 to 2026-11-23)."
    ]
