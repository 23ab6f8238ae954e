"""The SSRF check of URLs set by org admins (core/egress.py): only public unicast addresses,
unless the operator allows a network; every address a name resolves to must pass."""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sluicegate.core.egress import EgressRefused, address_allowed, check_url

NON_PUBLIC_V4 = [
    ip_network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/29",  # (the rest of 192.0.0.0/24 holds two globally reachable anycasts)
        "192.168.0.0/16",
        "198.18.0.0/15",
        "224.0.0.0/4",
        "240.0.0.0/4",
    )
]
LOOPBACK = [ip_network("127.0.0.0/8"), ip_network("::1/128")]


def fixed(addresses: Sequence[str]):  # type: ignore[no-untyped-def]
    async def resolve(host: str, port: int) -> Sequence[str]:
        return addresses

    return resolve


@given(
    st.sampled_from(NON_PUBLIC_V4).flatmap(
        lambda n: st.integers(0, n.num_addresses - 1).map(lambda i: n.network_address + i)
    )
)
def test_no_private_loopback_link_local_or_reserved_ipv4_address_passes(
    address: IPv4Address,
) -> None:
    assert not address_allowed(address, [])
    # ... nor the same address written as IPv6.
    assert not address_allowed(IPv6Address(f"::ffff:{address}"), [])


@given(st.integers(0, 2**32 - 1).map(IPv4Address))
def test_an_ipv4_address_passes_exactly_when_it_is_public_unicast(address: IPv4Address) -> None:
    public = address.is_global and not address.is_multicast
    assert address_allowed(address, []) is public
    assert not any(address in network for network in NON_PUBLIC_V4) or not public


@pytest.mark.parametrize(
    "text", ["::1", "fe80::1", "fc00::5", "fd12:3456::1", "ff02::1", "::", "::ffff:10.0.0.1"]
)
def test_non_public_ipv6_addresses_are_refused(text: str) -> None:
    assert not address_allowed(ip_address(text), [])


def test_a_network_the_operator_allows_passes_and_nothing_beside_it() -> None:
    allowed = [ip_network("10.1.0.0/16")]
    assert address_allowed(ip_address("10.1.2.3"), allowed)
    assert not address_allowed(ip_address("10.2.0.1"), allowed)
    assert address_allowed(ip_address("::ffff:10.1.0.9"), allowed)


async def test_public_urls_pass_with_the_addresses_they_were_approved_for() -> None:
    checked = await check_url(
        "https://hooks.example.com/services/T0/B0/x", [], resolve=fixed(["93.184.215.14"])
    )
    assert (checked.host, checked.port, checked.addresses) == (
        "hooks.example.com",
        443,
        ("93.184.215.14",),
    )
    literal = await check_url("http://8.8.8.8:8080/hook", [])
    assert (literal.port, literal.addresses) == (8080, ("8.8.8.8",))


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://[::1]:8080/hook",
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata
        "http://10.0.0.5/hook",
        "http://0.0.0.0/",
        "http://[::ffff:127.0.0.1]/",
    ],
)
async def test_private_address_literals_are_refused_with_a_clear_reason(url: str) -> None:
    with pytest.raises(EgressRefused, match="non-public address"):
        await check_url(url, [])


async def test_a_name_is_refused_if_any_of_its_addresses_is_private() -> None:
    with pytest.raises(EgressRefused, match=r"'mixed.example' \(10.0.0.7\)"):
        await check_url("https://mixed.example/", [], resolve=fixed(["93.184.215.14", "10.0.0.7"]))


async def test_names_that_the_system_resolves_to_loopback_are_refused() -> None:
    # The real resolver: localhost, and 127.0.0.1 written as one decimal number.
    for url in ("http://localhost:9/hook", "http://2130706433/hook"):
        with pytest.raises(EgressRefused, match="non-public"):
            await check_url(url, [])


async def test_loopback_passes_when_the_operator_allows_it() -> None:
    checked = await check_url("http://localhost:9/hook", LOOPBACK)
    assert set(checked.addresses) <= {"127.0.0.1", "::1"}


@pytest.mark.parametrize(
    "url", ["ftp://example.com/x", "file:///etc/passwd", "gopher://h/", "https://", "nonsense"]
)
async def test_only_http_and_https_urls_with_a_host_are_accepted(url: str) -> None:
    with pytest.raises(EgressRefused, match="http:// or https://"):
        await check_url(url, [])


async def test_an_unresolvable_host_is_refused() -> None:
    with pytest.raises(EgressRefused, match="cannot be resolved"):
        await check_url("https://no-such-host.invalid/hook", [])
