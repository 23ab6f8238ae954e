"""Policies as the proxy applies them: every bound policy must allow (intersection), block lists
win, IP allowlists in IPv4 and IPv6, the smallest max_tokens cap, and X-Forwarded-For believed
only from trusted proxies."""

from __future__ import annotations

from ipaddress import ip_network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sluicegate.guard.policy import Bound, EffectivePolicy, PolicyRule, client_address


def rule(name: str, **fields: object) -> Bound:
    values = {
        "allowed_models": None,
        "blocked_models": None,
        "ip_allowlist": None,
        "rpm": None,
        "tpm": None,
        "max_tokens": None,
        **fields,
    }
    return Bound(PolicyRule.build(f"pol_{name}", name, **values), f"group '{name}'", "group", name)  # type: ignore[arg-type]


def test_no_policy_allows_everything() -> None:
    policy = EffectivePolicy(())
    assert policy.empty and policy.model_denial("anything") is None
    assert policy.ip_denial(None) is None


def test_every_allow_list_must_match_and_any_block_wins() -> None:
    policy = EffectivePolicy(
        (
            rule("org", allowed_models=["gpt-*", "claude-*"]),
            rule("team", allowed_models=["gpt-4o*", "claude-3-5-*"], blocked_models=["gpt-4o"]),
        )
    )
    assert policy.model_denial("gpt-4o-mini") is None
    assert policy.model_denial("claude-3-5-haiku") is None
    assert "policy 'team'" in (policy.model_denial("gpt-4o") or "")  # blocked by the team
    assert "policy 'team'" in (policy.model_denial("gpt-5") or "")  # not in the team's list
    assert "policy 'org'" in (policy.model_denial("mistral-large") or "")  # not in the org's


def test_an_empty_allow_list_allows_nothing() -> None:
    assert EffectivePolicy((rule("closed", allowed_models=[]),)).model_denial("gpt-4o") is not None


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("10.1.2.3", True),
        ("10.2.0.1", False),
        ("2001:db8::7", True),
        ("2001:db9::7", False),
        ("not an address", False),
        (None, False),
    ],
)
def test_ip_allowlists_hold_for_ipv4_and_ipv6(address: str | None, allowed: bool) -> None:
    policy = EffectivePolicy((rule("net", ip_allowlist=["10.1.0.0/16", "2001:db8::/32"]),))
    assert (policy.ip_denial(address) is None) is allowed


def test_every_ip_allowlist_must_contain_the_caller() -> None:
    policy = EffectivePolicy(
        (rule("wide", ip_allowlist=["10.0.0.0/8"]), rule("narrow", ip_allowlist=["10.1.0.0/16"]))
    )
    assert policy.ip_denial("10.1.0.1") is None
    assert "policy 'narrow'" in (policy.ip_denial("10.2.0.1") or "")


def test_the_smallest_max_tokens_cap_applies() -> None:
    policy = EffectivePolicy((rule("a", max_tokens=500), rule("b", max_tokens=200), rule("c")))
    assert policy.max_tokens is not None and policy.max_tokens.rule.name == "b"


TRUSTED = (ip_network("127.0.0.1/32"), ip_network("10.0.0.0/8"))


def test_forwarded_for_is_ignored_from_an_untrusted_peer() -> None:
    assert client_address("198.51.100.4", "203.0.113.9", TRUSTED) == "198.51.100.4"
    assert client_address("127.0.0.1", "203.0.113.9", ()) == "127.0.0.1"


def test_the_right_most_untrusted_hop_is_the_caller() -> None:
    # The caller may write anything on the left; only the hops our proxies appended count.
    assert client_address("127.0.0.1", "1.2.3.4, 203.0.113.9, 10.0.0.5", TRUSTED) == "203.0.113.9"
    assert client_address("10.0.0.1", "203.0.113.9", TRUSTED) == "203.0.113.9"


@given(
    hops=st.lists(st.ip_addresses(v=4).map(str), min_size=1, max_size=5),
    peer=st.sampled_from(["127.0.0.1", "10.9.9.9"]),
)
def test_a_spoofed_left_part_never_becomes_the_caller(hops: list[str], peer: str) -> None:
    """Whatever the client prepends, the answer is the last hop outside the trusted proxies."""
    chosen = client_address(peer, ", ".join(hops), TRUSTED)
    untrusted = [h for h in hops if not h.startswith("10.") and h != "127.0.0.1"]
    assert chosen == (untrusted[-1] if untrusted else hops[0])
