"""Invariants of the nearest-wins combination of routing overrides along a chain (hypothesis):
each field comes from the nearest group that sets it and names that group, a field nobody sets
stays unset, and the proxy's per-org snapshot answers exactly what `effective` does."""

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


@settings(max_examples=500)
@given(chains)
def test_each_field_comes_from_the_nearest_group_that_sets_it(
    chain: list[tuple[str, RoutingOverride]],
) -> None:
    combined = effective(chain)
    for name in OVERRIDE_FIELDS:
        setters = [(group, getattr(o, name)) for group, o in chain if getattr(o, name) is not None]
        if setters:
            group, value = setters[-1]
            assert getattr(combined.override, name) == value
            assert combined.source[name] == group
        else:
            assert getattr(combined.override, name) is None
            assert name not in combined.source
    assert combined.empty == (not combined.source)
    if combined.empty:
        assert combined is NO_OVERRIDE


@settings(max_examples=300)
@given(chains, st.text(min_size=1, max_size=8), overrides)
def test_a_nearer_group_overrides_only_the_fields_it_sets(
    chain: list[tuple[str, RoutingOverride]], nearest: str, own: RoutingOverride
) -> None:
    before = effective(chain)
    after = effective([*chain, (f"near_{nearest}", own)])
    for name in OVERRIDE_FIELDS:
        mine = getattr(own, name)
        if mine is None:
            assert getattr(after.override, name) == getattr(before.override, name)
            assert after.source.get(name) == before.source.get(name)
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
