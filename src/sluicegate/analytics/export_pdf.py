"""PDF reports of the analytics views (fpdf2): a title with the window, the summary cards, cost
over time drawn as bars (a line past BARS_UP_TO buckets) with the library's drawing primitives,
and the top rows as tables. Built in memory (a few pages: tables stop at TABLE_ROWS rows); the
CSV exports carry every row."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from fpdf import FPDF
from fpdf.enums import XPos, YPos

from sluicegate.analytics.service import (
    Activity,
    Cards,
    KeyDetail,
    Labelled,
    MemberDetail,
    Members,
    Point,
    View,
    error_rate,
    member_label,
)
from sluicegate.core.money import NANOS_PER_USD, nanos_to_usd

TABLE_ROWS = 40
BARS_UP_TO = 120
PAGE_WIDTH = 190.0  # A4 less 10 mm margins, in mm
CHART_HEIGHT = 55.0
INK = (33, 37, 41)
MUTED = (108, 117, 125)
ACCENT = (13, 110, 253)
RULE = (222, 226, 230)
CARD = (241, 243, 245)


@dataclass(frozen=True, slots=True)
class Table:
    title: str
    headers: tuple[str, ...]
    widths: tuple[float, ...]  # mm; the first column is text, the others numbers
    rows: Sequence[tuple[str, ...]]
    more: int = 0  # rows left out past TABLE_ROWS


def _latin(text: str) -> str:
    # The PDF's core fonts hold Latin-1 only; anything else is shown as '?', never an error.
    return text.encode("latin-1", "replace").decode("latin-1")


def _usd(nanos: int) -> str:
    return nanos_to_usd(nanos)


def _count(value: int) -> str:
    return f"{value:,}"


class _Report(FPDF):
    def __init__(self, title: str) -> None:
        super().__init__(orientation="P", unit="mm", format="A4")
        self.set_margins(10, 12, 10)
        self.set_auto_page_break(auto=True, margin=14)
        self.set_title(_latin(title))
        self.set_creator("Sluicegate")
        self.set_creation_date(datetime.now(UTC))

    def footer(self) -> None:
        self.set_y(-10)
        self.set_font("helvetica", size=7)
        self.set_text_color(*MUTED)
        self.cell(0, 4, f"Page {self.page_no()}", align="R")

    def text_line(self, text: str, size: float, *, bold: bool = False, muted: bool = False) -> None:
        self.set_font("helvetica", "B" if bold else "", size)
        self.set_text_color(*(MUTED if muted else INK))
        self.cell(0, size * 0.5, _latin(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def fitted(self, text: str, width: float) -> str:
        text = _latin(text)
        if self.get_string_width(text) <= width - 2:
            return text
        while text and self.get_string_width(text + "...") > width - 2:
            text = text[:-1]
        return text + "..."


def _window_text(view: View) -> str:
    window = view.window
    tz = ZoneInfo(window.timezone)
    if window.local_days is not None:
        last = window.local_days[-1] - timedelta(days=1)
        span = f"{window.local_days[0].isoformat()} to {last.isoformat()} (inclusive)"
    else:
        start = window.start.astimezone(tz).strftime("%Y-%m-%d %H:%M")
        end = window.end.astimezone(tz).strftime("%Y-%m-%d %H:%M")
        span = f"{start} to {end} (exclusive)"
    return f"{span}, {window.timezone}, by {window.granularity}"


def _header(pdf: _Report, title: str, view: View, subject: str | None = None) -> None:
    pdf.add_page()
    pdf.text_line(title, 18, bold=True)
    pdf.ln(1)
    pdf.text_line(view.org_name + (f"  |  {subject}" if subject else ""), 10)
    pdf.text_line(_window_text(view), 9, muted=True)
    pdf.ln(3)


def _cards(pdf: _Report, cards: list[tuple[str, str]]) -> None:
    per_row, gap, height = 3, 4.0, 17.0
    width = (PAGE_WIDTH - gap * (per_row - 1)) / per_row
    for index, (label, value) in enumerate(cards):
        column, row = index % per_row, index // per_row
        if column == 0 and row:
            pdf.set_y(pdf.get_y() + height + gap)
        x = pdf.l_margin + column * (width + gap)
        y = pdf.get_y()
        pdf.set_fill_color(*CARD)
        pdf.rect(x, y, width, height, style="F")
        pdf.set_xy(x + 3, y + 2.5)
        pdf.set_font("helvetica", "", 8)
        pdf.set_text_color(*MUTED)
        pdf.cell(width - 6, 4, _latin(label))
        pdf.set_xy(x + 3, y + 8)
        pdf.set_font("helvetica", "B", 12)
        pdf.set_text_color(*INK)
        pdf.cell(width - 6, 6, pdf.fitted(value, width - 6))
    pdf.set_xy(pdf.l_margin, pdf.get_y() + height + 6)


def _summary(cards: Cards) -> list[tuple[str, str]]:
    sums = cards.sums
    return [
        ("Total spend (USD)", _usd(sums.cost_nusd)),
        ("Requests", _count(sums.requests)),
        ("Tokens", _count(sums.tokens)),
        ("Average tokens per member", _count(cards.avg_tokens_per_member)),
        ("Average cost per call (USD)", _usd(cards.avg_cost_per_call_nusd)),
        ("Models in use", _count(cards.models)),
        ("Active members", _count(cards.members)),
        ("Errors / blocked", f"{_count(sums.errors)} / {_count(sums.blocked)}"),
        ("Error rate", f"{error_rate(sums) * 100:.2f} %"),
    ]


def _cost_per_bucket(view: View, series: Sequence[Point]) -> list[int]:
    index = {start: position for position, start in enumerate(view.window.starts)}
    costs = [0] * len(view.window.starts)
    for point in series:
        costs[index[point.bucket_start]] += point.sums.cost_nusd
    return costs


def _bucket_label(view: View, start: datetime) -> str:
    local = start.astimezone(ZoneInfo(view.window.timezone))
    if view.window.granularity == "hour":
        return local.strftime("%Y-%m-%d %H:%M")
    if view.window.granularity == "month":
        return local.strftime("%Y-%m")
    return local.strftime("%Y-%m-%d")


def _chart(pdf: _Report, view: View, series: Sequence[Point]) -> None:
    """Cost per bucket: bars, or a line when there are too many buckets for bars."""
    costs = _cost_per_bucket(view, series)
    pdf.text_line(f"Cost over time (USD per {view.window.granularity})", 11, bold=True)
    pdf.ln(2)
    if pdf.get_y() + CHART_HEIGHT + 12 > pdf.h - pdf.b_margin:
        pdf.add_page()
    axis = 22.0
    left, top = pdf.l_margin + axis, pdf.get_y()
    width, height = PAGE_WIDTH - axis, CHART_HEIGHT
    peak = max(costs, default=0) or 1
    pdf.set_draw_color(*RULE)
    pdf.set_line_width(0.2)
    pdf.set_font("helvetica", "", 7)
    pdf.set_text_color(*MUTED)
    for step in range(5):
        y = top + height - height * step / 4
        pdf.line(left, y, left + width, y)
        pdf.set_xy(pdf.l_margin, y - 2)
        pdf.cell(axis - 2, 4, _axis_usd(peak * step // 4), align="R")
    slot = width / max(len(costs), 1)
    pdf.set_fill_color(*ACCENT)
    pdf.set_draw_color(*ACCENT)
    if len(costs) <= BARS_UP_TO:
        for position, cost in enumerate(costs):
            bar = height * cost / peak
            if bar > 0:
                x = left + position * slot + slot * 0.15
                pdf.rect(x, top + height - bar, slot * 0.7, bar, "F")
    else:
        pdf.set_line_width(0.4)
        points = [
            (left + (position + 0.5) * slot, top + height - height * cost / peak)
            for position, cost in enumerate(costs)
        ]
        pdf.polyline(points)
    pdf.set_text_color(*MUTED)
    pdf.set_xy(left, top + height + 1)
    starts = view.window.starts
    pdf.cell(width / 2, 4, _bucket_label(view, starts[0]))
    pdf.cell(width / 2, 4, _bucket_label(view, starts[-1]), align="R")
    pdf.set_xy(pdf.l_margin, top + height + 9)


def _axis_usd(nanos: int) -> str:
    usd = nanos / NANOS_PER_USD
    return f"{usd:,.2f}" if usd >= 1 else f"{usd:.4f}"


def _table(pdf: _Report, table: Table) -> None:
    if pdf.get_y() + 20 > pdf.h - pdf.b_margin:
        pdf.add_page()
    pdf.text_line(table.title, 11, bold=True)
    pdf.ln(1)
    pdf.set_font("helvetica", "B", 8)
    pdf.set_text_color(*MUTED)
    pdf.set_draw_color(*RULE)
    for position, (header, width) in enumerate(zip(table.headers, table.widths, strict=True)):
        pdf.cell(width, 6, _latin(header), border="B", align="L" if position == 0 else "R")
    pdf.ln(6)
    pdf.set_font("helvetica", "", 8)
    pdf.set_text_color(*INK)
    if not table.rows:
        pdf.set_text_color(*MUTED)
        pdf.cell(0, 6, "No usage in this window.", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    for row in table.rows:
        for position, (value, width) in enumerate(zip(row, table.widths, strict=True)):
            pdf.cell(width, 5.5, pdf.fitted(value, width), align="L" if position == 0 else "R")
        pdf.ln(5.5)
    if table.more:
        pdf.set_text_color(*MUTED)
        pdf.cell(0, 6, f"... and {table.more:,} more (the CSV export has every row)")
        pdf.ln(6)
    pdf.ln(4)


def _groups_table(title: str, groups: Sequence[Labelled], total: int) -> Table:
    rows = [
        (
            group.label,
            _usd(group.sums.cost_nusd),
            _share(group.sums.cost_nusd, total),
            _count(group.sums.requests),
            _count(group.sums.tokens),
        )
        for group in groups[:TABLE_ROWS]
    ]
    return Table(
        title,
        ("Name", "Cost (USD)", "Share", "Requests", "Tokens"),
        (80.0, 35.0, 20.0, 25.0, 30.0),
        rows,
        max(0, len(groups) - TABLE_ROWS),
    )


def _share(part: int, whole: int) -> str:
    return f"{part * 100 / whole:.1f} %" if whole else "-"


def _output(pdf: _Report) -> bytes:
    return bytes(pdf.output())


def activity_pdf(activity: Activity) -> bytes:
    view = activity.view
    pdf = _Report("Activity")
    _header(pdf, "Activity", view)
    _cards(pdf, _summary(view.cards))
    _chart(pdf, view, activity.series)
    if activity.group_by is not None:
        title = f"Top by {activity.group_by} (sorted by {activity.metric})"
        _table(pdf, _groups_table(title, activity.groups, view.cards.sums.cost_nusd))
    return _output(pdf)


def members_pdf(members: Members) -> bytes:
    view = members.view
    pdf = _Report("Members")
    _header(pdf, "Members", view)
    _cards(pdf, _summary(view.cards))
    _chart(pdf, view, members.series)
    rows = [
        (
            member_label(member.user_id, member.name, member.email),
            _usd(member.sums.cost_nusd),
            _count(member.sums.requests),
            _count(member.sums.tokens),
            f"{error_rate(member.sums) * 100:.2f} %",
            _count(member.key_count),
        )
        for member in members.members[:TABLE_ROWS]
    ]
    table = Table(
        "Members by spend",
        ("Member", "Spend (USD)", "Requests", "Tokens", "Error rate", "Keys"),
        (70.0, 32.0, 22.0, 26.0, 22.0, 18.0),
        rows,
        max(0, len(members.members) - TABLE_ROWS),
    )
    _table(pdf, table)
    return _output(pdf)


def member_pdf(detail: MemberDetail) -> bytes:
    view, member = detail.view, detail.member
    pdf = _Report("Member")
    _header(pdf, "Member", view, member_label(member.user_id, member.name, member.email))
    cards = _summary(view.cards)[:6]
    cards[3] = ("Keys", _count(member.key_count))
    cards[5] = ("Error rate", f"{error_rate(view.cards.sums) * 100:.2f} %")
    for label, top in (
        ("Top model", detail.top_model),
        ("Top provider", detail.top_provider),
        ("Top app", detail.top_app),
    ):
        cards.append((label, top.label if top else "-"))
    _cards(pdf, cards)
    _chart(pdf, view, detail.series)
    _table(pdf, _groups_table("Cost by model", detail.by_model, view.cards.sums.cost_nusd))
    return _output(pdf)


def key_pdf(detail: KeyDetail) -> bytes:
    view = detail.view
    pdf = _Report("API key")
    _header(pdf, "API key", view, f"{detail.name} ({detail.prefix})")
    sums = view.cards.sums
    latency = round(sums.latency_ms_sum / sums.requests) if sums.requests else 0
    cards = [
        ("Cost (USD)", _usd(sums.cost_nusd)),
        ("Requests", _count(sums.requests)),
        ("Tokens", _count(sums.tokens)),
        ("Error rate", f"{error_rate(sums) * 100:.2f} %"),
        ("Average cost per call (USD)", _usd(view.cards.avg_cost_per_call_nusd)),
        ("Average latency", f"{latency:,} ms"),
    ]
    _cards(pdf, cards)
    _chart(pdf, view, detail.series)
    _table(pdf, _groups_table("Cost by model", detail.by_model, sums.cost_nusd))
    return _output(pdf)
