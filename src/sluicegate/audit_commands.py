"""The `sluicegate audit` commands: verify a chain (against checkpoints kept outside the database,
too) and print signed checkpoints of the chains' heads. Exit 0 when all is well, 1 naming what is
not (the same codes as the rest of the CLI)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sluicegate.command_settings import settings_said
from sluicegate.settings import Settings

if TYPE_CHECKING:
    from sluicegate.audit.checkpoints import Checkpoint
    from sluicegate.audit.service import ChainReport

# A chain, head or checkpoint that does not fit, or a chain that does not exist.
EXIT_BROKEN = 1


def add_audit_commands(commands: Any) -> None:
    """`sluicegate audit verify` and `sluicegate audit checkpoint`, on the CLI's subparsers."""
    audit = commands.add_parser(
        "audit",
        help="work with the audit trail",
        description="Work with the tamper-evident audit trail.",
    )
    audit_commands = audit.add_subparsers(title="audit commands", required=True, metavar="COMMAND")
    verify = audit_commands.add_parser(
        "verify",
        help="recompute an org's hash chain and name the first broken link",
        description="Recompute an organization's audit hash chain (or, with --platform, the chain "
        "of identity events: logins, tokens, freezes) from its first event, and check its sealed "
        "head. With --checkpoint, also compare it with checkpoints kept outside the database: a "
        "chain shorter than one saw was truncated, one that differs up to it was rewritten. "
        "Exits 0 when intact, 1 naming the first event or checkpoint that does not fit.",
    )
    chain = verify.add_mutually_exclusive_group(required=True)
    chain.add_argument("--org", help="the organization id (org_...)")
    chain.add_argument(
        "--platform", action="store_true", help="the platform chain of identity events"
    )
    verify.add_argument(
        "--checkpoint",
        metavar="FILE|VALUE",
        help="a checkpoint (sgcp1:...) or a file holding some (a log, a list); those of this "
        "chain are compared",
    )
    verify.set_defaults(command=_audit_verify)
    checkpoint = audit_commands.add_parser(
        "checkpoint",
        help="print a signed checkpoint of an audit chain's head, to keep outside the database",
        description="Print one line per chain, sgcp1:<chain>:<seq>:<hash>:<time>:<signature>, "
        "signed with a key derived from SLUICEGATE_SECRET_KEY. Keep it somewhere the database's "
        "administrators cannot change; `audit verify --checkpoint` compares the chain with it.",
    )
    target = checkpoint.add_mutually_exclusive_group(required=True)
    target.add_argument("--org", help="the organization id (org_...)")
    target.add_argument(
        "--platform", action="store_true", help="the platform chain of identity events"
    )
    target.add_argument("--all", action="store_true", help="every chain")
    checkpoint.set_defaults(command=_audit_checkpoint)


def _audit_verify(args: argparse.Namespace) -> int:
    from sluicegate.audit.checkpoints import CheckpointInvalid, checkpoint_key, find_all
    from sluicegate.audit.models import PLATFORM_CHAIN

    settings = settings_said()
    chain = PLATFORM_CHAIN if args.platform else args.org
    checkpoints = []
    if args.checkpoint is not None:
        source = Path(args.checkpoint)
        text = source.read_text(errors="replace") if source.is_file() else args.checkpoint
        try:
            found = find_all(text, checkpoint_key(settings.secret))
        except CheckpointInvalid as exc:
            print(f"sluicegate: --checkpoint: a checkpoint is not valid: {exc}", file=sys.stderr)
            return EXIT_BROKEN
        checkpoints = [c for c in found if c.chain == chain]
        if not checkpoints:
            print(f"sluicegate: --checkpoint: no checkpoint of {chain} in it", file=sys.stderr)
            return EXIT_BROKEN
    report = asyncio.run(_verify_chain(settings, chain, checkpoints))
    if report is None:
        print(f"sluicegate: no organization {args.org}", file=sys.stderr)
        return EXIT_BROKEN
    name = "the platform" if args.platform else args.org
    if report.intact:
        against = f", as {len(checkpoints)} checkpoint(s) saw it" if checkpoints else ""
        print(f"audit chain of {name}: intact ({report.checked} events{against})")
        return 0
    where = (
        f"event {report.broken_event_id} (#{report.broken_seq})"
        if report.broken_event_id
        else "the chain head"
    )
    print(
        f"audit chain of {name}: broken at {where}: {report.problem}; "
        f"{report.checked} events before it are intact"
    )
    return 1


async def _verify_chain(
    settings: Settings, chain: str, checkpoints: Sequence[Checkpoint] = ()
) -> ChainReport | None:
    """The report of an org's chain (None when there is no such org) or the platform chain."""
    from sluicegate.audit.models import PLATFORM_CHAIN
    from sluicegate.audit.service import verify_chain
    from sluicegate.orgs.models import Organization
    from sluicegate.runtime import Runtime

    runtime = Runtime.build(settings)
    try:
        async with runtime.sessions() as session:
            if chain != PLATFORM_CHAIN and await session.get(Organization, chain) is None:
                return None
            return await verify_chain(session, chain, checkpoints)
    finally:
        await runtime.close()


def _audit_checkpoint(args: argparse.Namespace) -> int:
    from sluicegate.audit.models import PLATFORM_CHAIN

    settings = settings_said()
    settings.secret  # noqa: B018 - raises ConfigurationError when the secret key is missing
    chain = None if args.all else PLATFORM_CHAIN if args.platform else args.org
    lines, problems = asyncio.run(_checkpoints(settings, chain))
    for line in lines:
        print(line)
    for problem in problems:
        print(f"sluicegate: {problem}", file=sys.stderr)
    return EXIT_BROKEN if problems else 0


async def _checkpoints(settings: Settings, chain: str | None) -> tuple[list[str], list[str]]:
    """Signed checkpoints of `chain` (None: every chain), and the chains refused, each with
    why (a head whose seal does not match is never vouched for)."""
    from sluicegate.audit.checkpoints import checkpoint_key, sign
    from sluicegate.audit.models import PLATFORM_CHAIN
    from sluicegate.audit.service import HeadUnsealed, chains, checkpoint_of
    from sluicegate.orgs.models import Organization
    from sluicegate.runtime import Runtime

    runtime = Runtime.build(settings)
    key = checkpoint_key(settings.secret)
    lines: list[str] = []
    problems: list[str] = []
    try:
        async with runtime.sessions() as session:
            if chain is None:
                names = await chains(session)
            elif chain != PLATFORM_CHAIN and await session.get(Organization, chain) is None:
                return [], [f"no organization {chain}"]
            else:
                names = [chain]
            for name in names:
                try:
                    checkpoint = await checkpoint_of(session, name, runtime.clock.now())
                except HeadUnsealed as exc:
                    problems.append(f"{exc}; run `sluicegate audit verify` on it")
                    continue
                lines.append(sign(checkpoint, key))
        return lines, problems
    finally:
        await runtime.close()
