"""Checkpoints of the audit chains: a chain's head (how many events, the last hash) at a moment,
signed with a key derived from SLUICEGATE_SECRET_KEY, to be kept OUTSIDE the database (a log, an
alert receiver, a file). The database cannot prove what it no longer holds; a checkpoint can:
`audit verify --checkpoint` reports a chain shorter than a checkpoint saw (events deleted from
the end, the head moved back) or different up to it (history rewritten).

A checkpoint is one line, `sgcp1:<chain>:<seq>:<hash>:<unix seconds>:<signature>`, the signature
the hex HMAC-SHA256 of everything before it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from sluicegate.core.sealing import derive_key

PREFIX = "sgcp1"
KEY_PURPOSE = "sluicegate audit checkpoint v1"
# Finds checkpoints anywhere in a text: a log line, a JSON document, a file of them.
FOUND = re.compile(r"sgcp1:[A-Za-z0-9_]{1,40}:\d{1,19}:[0-9a-f]{64}:\d{1,12}:[0-9a-f]{64}")


class CheckpointInvalid(ValueError):
    """Not a checkpoint, or one this key did not sign."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    chain: str  # an org id, or "platform"
    seq: int  # events in the chain when it was taken
    hash: str  # the hash of event #seq (the genesis hash for an empty chain)
    taken_at: datetime

    def body(self) -> str:
        return f"{PREFIX}:{self.chain}:{self.seq}:{self.hash}:{int(self.taken_at.timestamp())}"


def checkpoint_key(secret: bytes) -> bytes:
    return derive_key(secret, KEY_PURPOSE)


def sign(checkpoint: Checkpoint, key: bytes) -> str:
    body = checkpoint.body()
    return f"{body}:{hmac.new(key, body.encode(), hashlib.sha256).hexdigest()}"


def parse(text: str, key: bytes) -> Checkpoint:
    """A signed checkpoint; CheckpointInvalid when it is malformed or its signature is not ours."""
    value = text.strip()
    if FOUND.fullmatch(value) is None:
        raise CheckpointInvalid(f"not a checkpoint ({PREFIX}:<chain>:<seq>:<hash>:<time>:<mac>)")
    body, _, signature = value.rpartition(":")
    expected = hmac.new(key, body.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        raise CheckpointInvalid("its signature does not match: not signed with this secret key")
    _prefix, chain, seq, digest, seconds = body.split(":")
    return Checkpoint(chain, int(seq), digest, datetime.fromtimestamp(int(seconds), UTC))


def find_all(text: str, key: bytes) -> list[Checkpoint]:
    """Every checkpoint in `text` (e.g. a log file), each checked; CheckpointInvalid for the
    first one whose signature fails."""
    return [parse(match.group(0), key) for match in FOUND.finditer(text)]
