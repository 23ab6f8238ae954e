"""Invariants of combining routing overrides along a chain (hypothesis): preferences come from
the nearest group that sets them, restrictions only tighten on the way down (requirements add
up, allow-lists narrow, the lowest ceiling holds), a field nobody sets stays unset, and the
proxy's per-org snapshot answers exactly what `effective` does."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sluicegate.routing.cache import OrgOverrides
from sluicegate.routing.overrides import (
    CERTIFICATIONS,
    DATA_POLICIES,
    NO_OVERRIDE,
    OVERRIDE_FIELDS,
    RoutingOverride,
    effective,
)

names = st.sampled_from(["a", "b", "c", "d"])
name_lists = st.lists(names, max_size=3).map(tuple)


def maybe(values: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.one_of(st.none(), values)


overrides = st.builds(
    RoutingOverride,
    provider_order=maybe(name_lists),
    allowed_providers=maybe(name_lists),
    ignored_providers=maybe(name_lists),
    required_policies=maybe(st.frozensets(st.sampled_from(DATA_POLICIES))),
    required_certifications=maybe(st.frozensets(st.sampled_from(CERTIFICATIONS))),
    allowed_regions=maybe(name_lists),
    fallbacks=maybe(name_lists),
    max_cost_per_request_nusd=maybe(st.integers(1, 10**12)),
    on_cost_exceeded=maybe(st.sampled_from(["refuse", "cheaper"])),
)
# A key's chain, root first: distinct group ids, each with the override it sets.
chains = st.lists(
    st.tuples(st.sampled_from([f"grp_{i}" for i in range(8)]), overrides),
    max_size=6,
    unique_by=lambda entry: entry[0],
)


PREFERENCES = ("provider_order", "fallbacks")
ADDED_UP = ("ignored_providers", "required_policies", "required_certifications")
NARROWED = ("allowed_providers", "allowed_regions")


def setters(chain: list[tuple[str, RoutingOverride]], name: str) -> list[tuple[str, object]]:
    return [(group, getattr(o, name)) for group, o in chain if getattr(o, name) is not None]


@settings(max_examples=500)
@given(chains)
def test_preferences_come_from_the_nearest_group_and_restrictions_only_tighten(
    chain: list[tuple[str, RoutingOverride]],
) -> None:
    combined = effective(chain)
    for name in OVERRIDE_FIELDS:
        set_by = setters(chain, name)
        value = getattr(combined.override, name)
        if not set_by:
            assert value is None and name not in combined.source
            continue
        assert combined.source[name] in [group for group, _ in set_by]
        values = [v for _, v in set_by]
        if name in PREFERENCES:
            assert (value, combined.source[name]) == (set_by[-1][1], set_by[-1][0])
        elif name in ADDED_UP:
            # Everything any group requires (or ignores) stays required (or ignored).
            assert set(value) == set().union(*map(set, values))
        elif name in NARROWED:
            # Only what every group that sets the list allows.
            assert set(value) == set.intersection(*map(set, values))
        elif name == "max_cost_per_request_nusd":
            assert value == min(values)
    for group, override in chain:
        for item in (
            *(override.required_policies or ()),
            *(override.required_certifications or ()),
        ):
            # Named after the first group that required it.
            first = next(
                g
                for g, o in chain
                if item in (o.required_policies or ()) or item in (o.required_certifications or ())
            )
            assert combined.origin[item] == first
    assert combined.empty == (not combined.source)
    if combined.empty:
        assert combined is NO_OVERRIDE


@settings(max_examples=300)
@given(chains, st.text(min_size=1, max_size=8), overrides)
def test_a_nearer_group_can_add_requirements_but_never_remove_one(
    chain: list[tuple[str, RoutingOverride]], nearest: str, own: RoutingOverride
) -> None:
    before = effective(chain)
    after = effective([*chain, (f"near_{nearest}", own)])
    for name in ("required_policies", "required_certifications", "ignored_providers"):
        assert set(getattr(before.override, name) or ()) <= set(getattr(after.override, name) or ())
    for name in NARROWED:
        if getattr(before.override, name) is not None:
            assert set(getattr(after.override, name)) <= set(getattr(before.override, name))
    ceiling = before.override.max_cost_per_request_nusd
    if ceiling is not None:
        assert after.override.max_cost_per_request_nusd <= ceiling
    for name in PREFERENCES:
        mine = getattr(own, name)
        if mine is None:
            assert getattr(after.override, name) == getattr(before.override, name)
        else:
            assert getattr(after.override, name) == mine
            assert after.source[name] == f"near_{nearest}"


@settings(max_examples=300)
@given(chains, st.lists(st.sampled_from([f"grp_{i}" for i in range(10)]), max_size=6, unique=True))
def test_the_snapshot_answers_what_effective_does_for_any_chain(
    stored: list[tuple[str, RoutingOverride]], chain: list[str]
) -> None:
    """Groups of the chain without an override are skipped; those of other branches ignored."""
    by_group = dict(stored)
    snapshot = OrgOverrides(by_group)
    expected = effective([(g, by_group[g]) for g in chain if g in by_group])
    assert snapshot.for_chain(tuple(chain)) == expected
    # Asked again, the memo answers the same.
    assert snapshot.for_chain(tuple(chain)) == expected
