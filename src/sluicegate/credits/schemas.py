"""Request and response shapes of the credit pool, and the CSV form of the ledger. Money: a decimal
USD string out; a string or number in."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from sluicegate.api.fields import USD
from sluicegate.core.money import nanos_to_usd
from sluicegate.credits.service import CreditBalance, LedgerLine
from sluicegate.metering.ledger import LedgerEntry

LedgerKind = Literal["topup", "usage", "adjustment", "refund"]
NOTE_LIMIT = 500
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _printable(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return value


Note = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=NOTE_LIMIT),
    AfterValidator(_printable),
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TopUpIn(Strict):
    amount_usd: USD = Field(description="more than 0")
    note: Note | None = Field(default=None, description="e.g. the invoice or payment reference")


class AdjustmentIn(Strict):
    amount_usd: USD = Field(
        description="signed, not 0: positive adds credit, negative takes it away (refunds are "
        "positive)"
    )
    kind: Literal["adjustment", "refund"] = "adjustment"
    note: Note = Field(description="why the balance changes; required")


class LedgerEntryOut(BaseModel):
    id: str
    kind: LedgerKind
    amount_usd: str = Field(description="signed: top-ups and refunds positive, usage negative")
    note: str | None
    actor_user_id: str | None = Field(description="who made it; null for usage debits")
    period_start: datetime | None = Field(description="usage debits: the UTC hour they cover")
    requests: int | None = Field(description="usage debits: how many billed requests")
    created_at: datetime = Field(description="usage debits: their UTC hour")

    @classmethod
    def of(cls, entry: LedgerEntry) -> LedgerEntryOut:
        return cls(**_fields(entry))


class LedgerLineOut(LedgerEntryOut):
    balance_usd: str = Field(description="the balance right after this entry")

    @classmethod
    def of_line(cls, line: LedgerLine) -> LedgerLineOut:
        return cls(**_fields(line.entry), balance_usd=nanos_to_usd(line.balance))


def _fields(entry: LedgerEntry) -> dict[str, object]:
    return {
        "id": entry.id,
        "kind": entry.kind,
        "amount_usd": nanos_to_usd(entry.amount_nusd),
        "note": entry.note,
        "actor_user_id": entry.actor_user_id,
        "period_start": entry.period_start,
        "requests": entry.requests,
        "created_at": entry.created_at,
    }


class CreditsOut(BaseModel):
    balance_usd: str = Field(
        description="when credit is enforced, the live balance: settled usage counts before it "
        "reaches the ledger; otherwise the ledger's balance"
    )
    reserved_usd: str = Field(description="held by requests in flight (0 when not enforced)")
    available_usd: str = Field(description="balance - reserved: what new requests may spend")
    enforced: bool = Field(description="requests the available credit cannot cover are refused")
    ledger_balance_usd: str = Field(description="sum of the ledger's entries")

    @classmethod
    def of(cls, credit: CreditBalance) -> CreditsOut:
        return cls(
            balance_usd=nanos_to_usd(credit.balance),
            reserved_usd=nanos_to_usd(credit.reserved),
            available_usd=nanos_to_usd(credit.available),
            enforced=credit.enforced,
            ledger_balance_usd=nanos_to_usd(credit.ledger_balance),
        )


# --- CSV -----------------------------------------------------------------------------------------

CSV_COLUMNS = (
    "id",
    "created_at",
    "kind",
    "amount_usd",
    "balance_usd",
    "requests",
    "note",
    "actor_user_id",
)
# A spreadsheet runs a cell starting with one of these as a formula: free text gets a leading
# apostrophe so an exported note is shown, never executed.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _text_cell(value: str | None) -> str:
    if not value:
        return ""
    return "'" + value if value.startswith(_FORMULA_START) else value


async def ledger_csv(pages: AsyncIterator[list[LedgerLine]]) -> AsyncIterator[str]:
    """The header, then one chunk of rows per page of the ledger."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    yield buffer.getvalue()
    async for page in pages:
        buffer.seek(0)
        buffer.truncate()
        for line in page:
            entry = line.entry
            writer.writerow(
                (
                    entry.id,
                    entry.created_at.isoformat().replace("+00:00", "Z"),
                    entry.kind,
                    nanos_to_usd(entry.amount_nusd),
                    nanos_to_usd(line.balance),
                    "" if entry.requests is None else entry.requests,
                    _text_cell(entry.note),
                    entry.actor_user_id or "",
                )
            )
        yield buffer.getvalue()
