"""The guard's Lua scripts (guard/lua, each run after prelude.lua) and the values they take and
give: seeds of rebuilt counters, and the charges waiting in a usage stream."""

from __future__ import annotations

from importlib.resources import files

from sluicegate.guard.counters import CreditSeed, PendingCharge, Seed
from sluicegate.metering.stream import decode_event

# The scripts' version is part of their text (and so of their SHA): a rolling deploy runs old and
# new side by side, each calling its own.
SCRIPT_VERSION = "guard-v4"


def script(name: str) -> str:
    folder = files("sluicegate.guard") / "lua"
    prelude = (folder / "prelude.lua").read_text()
    return f"-- {SCRIPT_VERSION}\n{prelude}\n{(folder / f'{name}.lua').read_text()}"


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def seed_text(seed: Seed | None, misses: int = 0) -> str:
    """A rebuilt value as the scripts take it: "<value>@<misses>" (see prelude.lua `seed`)."""
    if seed is None:
        return ""
    if isinstance(seed, CreditSeed):
        return f"{seed.balance},{seed.total},{seed.version}@{misses}"
    return f"{seed}@{misses}"


def pending_charge(fields: dict[bytes, bytes]) -> PendingCharge | None:
    """The charge of a usage stream entry; None for one that is not a usage event (the drain
    moves those to the dead-letter stream)."""
    try:
        event = decode_event(fields[b"e"])
        return PendingCharge(
            str(event["request_id"]),
            event["created_at"],
            int(event["cost_nusd"] or 0),
            str(event["key_id"]),
            str(event["user_id"]),
            str(event["group_id"]),
        )
    except (KeyError, ValueError, TypeError):
        return None
