"""IANA timezone names: validated once, where they enter the system."""

from __future__ import annotations

from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    """The zone for an IANA name such as 'Asia/Kathmandu'; ValueError for anything else."""
    if not name or name != name.strip() or ".." in name or name.startswith("/"):
        raise ValueError(f"{name!r} is not an IANA timezone name")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"{name!r} is not an IANA timezone name (e.g. 'Europe/Paris')") from exc
