"""The values a policy is made of, checked as the admin API takes them: description, model
patterns, IP networks and limits (422 naming the field)."""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import ip_network

from sluicegate.core.errors import InvalidInput

MAX_PATTERNS = 100
MAX_NETWORKS = 100
PATTERN_LENGTH = 200
DESCRIPTION_LENGTH = 1000
# Far above any real limit, well inside the columns (INTEGER rpm and max_tokens, BIGINT tpm).
MAX_RPM = 10_000_000
MAX_TPM = 10_000_000_000
MAX_MAX_TOKENS = 10_000_000
LIMITS = {"rpm": MAX_RPM, "tpm": MAX_TPM, "max_tokens": MAX_MAX_TOKENS}


def check_description(text: str | None) -> str | None:
    if text is None:
        return None
    value = text.strip()
    if len(value) > DESCRIPTION_LENGTH or "\x00" in value:
        raise InvalidInput(
            f"description: at most {DESCRIPTION_LENGTH} characters, no NUL",
            details={"field": "description"},
        )
    return value or None


def check_patterns(field: str, patterns: Sequence[str] | None) -> list[str] | None:
    if patterns is None:
        return None
    if len(patterns) > MAX_PATTERNS or not all(
        isinstance(p, str) and 0 < len(p) <= PATTERN_LENGTH and p.isprintable() for p in patterns
    ):
        raise InvalidInput(
            f"{field}: a list of at most {MAX_PATTERNS} model ids or glob patterns (e.g. "
            "'anthropic/*', 'gpt-4o-*'), each 1 to 200 printable characters",
            details={"field": field},
        )
    return list(dict.fromkeys(patterns))


def check_networks(entries: Sequence[str] | None) -> list[str] | None:
    """IP addresses and CIDR networks, stored normalized ('10.1.2.3/8' -> '10.0.0.0/8',
    '192.0.2.7' -> '192.0.2.7/32')."""
    if entries is None:
        return None
    if len(entries) > MAX_NETWORKS:
        raise InvalidInput(
            f"ip_allowlist: at most {MAX_NETWORKS} addresses or networks",
            details={"field": "ip_allowlist"},
        )
    networks = []
    for entry in entries:
        try:
            # A scoped IPv6 address ('fe80::1%eth0') names an interface of one host, not an
            # address a caller can be matched against.
            if not isinstance(entry, str) or "%" in entry:
                raise ValueError(entry)
            networks.append(str(ip_network(entry.strip(), strict=False)))
        except ValueError:
            raise InvalidInput(
                f"ip_allowlist: {entry!r} is not an IP address or CIDR network (e.g. "
                "'203.0.113.7', '10.0.0.0/8', '2001:db8::/32')",
                details={"field": "ip_allowlist", "entry": str(entry)},
            ) from None
    return list(dict.fromkeys(networks))


def check_limit(field: str, value: int | None) -> int | None:
    if value is None:
        return None
    most = LIMITS[field]
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise InvalidInput(f"{field}: must be 1 to {most}", details={"field": field})
    return value
