"""The page every document shares (fpdf2): the issuer's letterhead, the addressee, tables, money and the footer.

Text is set in DejaVu Sans (the Debian package fonts-dejavu-core), which covers the Latin, Greek and Cyrillic
names and addresses customers type; without it the PDF core font Helvetica is used, and characters it lacks
print as "?" (logged once). Output is deterministic: the creation date is the document's issue time, so the
same document always renders to the same bytes.
"""

from __future__ import annotations

import io
import logging
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from fpdf import FPDF, XPos, YPos

log = logging.getLogger("tollgate.documents")

FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/dejavu", "/usr/share/fonts/TTF",
             "/usr/local/share/fonts")
LEFT, RIGHT_EDGE, TOP = 18.0, 192.0, 16.0  # mm on A4 (210 x 297)
WIDTH = RIGHT_EDGE - LEFT
ACCENT = (31, 56, 100)
MUTED = (110, 116, 128)
RULE = (205, 210, 218)
SHADE = (240, 243, 247)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
_warned_no_font = False
PAGES_ALIAS = "{pages}"  # the page count, filled in at the end; as wide as a 6-digit count, so none overflows


def _font_files() -> tuple[Path, Path] | None:
    for folder in FONT_DIRS:
        regular, bold = Path(folder, "DejaVuSans.ttf"), Path(folder, "DejaVuSans-Bold.ttf")
        if regular.is_file() and bold.is_file():
            return regular, bold
    return None


def money_text(micros: int, decimals: int) -> str:
    """12345678 micros with 4 decimals -> "12.3457"; thousands separated: "1,234.5000". Display only."""
    value = (Decimal(micros) / 1_000_000).quantize(Decimal(1).scaleb(-decimals))
    return f"{value:,}"


def duration_text(seconds: int) -> str:
    """Billable seconds as h:mm:ss (hours not wrapped at a day)."""
    hours, rest = divmod(seconds, 3600)
    return f"{hours:,}:{rest // 60:02d}:{rest % 60:02d}"


@dataclass(frozen=True)
class Issuer:
    name: str
    address: str
    tax_number: str
    email: str
    currency: str
    decimals: int
    logo: bytes | None

    @classmethod
    def of(cls, snapshot: dict, logo: bytes | None) -> Issuer:
        return cls(snapshot.get("name", ""), snapshot.get("address", ""), snapshot.get("tax_number", ""),
                   snapshot.get("email", ""), snapshot.get("currency", ""), int(snapshot.get("decimals", 4)), logo)


@dataclass(frozen=True)
class Column:
    title: str
    width: float
    right: bool = False  # numbers: right-aligned
    chars: int = 40  # longer text is cut with an ellipsis (cheaper than measuring every cell)


class Document(FPDF):
    """An A4 page with the issuer's footer; `letterhead` and `addressee` draw the top of the first page."""

    def __init__(self, issuer: Issuer, title: str, issued: datetime):
        super().__init__(orientation="P", unit="mm", format="A4")
        self.issuer = issuer
        self.unicode = self._load_fonts()
        self.set_margins(LEFT, TOP, 210 - RIGHT_EDGE)
        self.set_auto_page_break(True, margin=22)
        self.set_title(self.clean(title))
        self.set_author(self.clean(issuer.name))
        self.set_creator("tollgate")
        self.set_creation_date(issued)
        self.alias_nb_pages(PAGES_ALIAS)
        self._widths: dict[str, float] = {}
        self.add_page()

    def _load_fonts(self) -> bool:
        global _warned_no_font
        files = _font_files()
        if files is None:
            if not _warned_no_font:
                log.warning("DejaVu Sans not found in %s: documents use Helvetica, Latin-1 only", FONT_DIRS)
                _warned_no_font = True
            return False
        self.add_font("body", "", str(files[0]))
        self.add_font("body", "B", str(files[1]))
        return True

    # ------------------------------------------------------------------ text
    def clean(self, text: str) -> str:
        """What can be printed: no control or direction characters; Latin-1 only with the core font."""
        text = _CONTROL.sub(" ", unicodedata.normalize("NFC", str(text)))
        if not self.unicode:
            text = text.encode("latin-1", "replace").decode("latin-1")
        return text

    def font(self, size: float, bold: bool = False, color: tuple[int, int, int] = (20, 20, 20)) -> None:
        self.set_font("body" if self.unicode else "helvetica", "B" if bold else "", size)
        self.set_text_color(*color)

    def line_of(self, text: str, height: float = 4.6, width: float = 0, align: str = "L", fill: bool = False,
                ) -> None:
        self.cell(width, height, self.clean(text), align=align, fill=fill, new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def money(self, micros: int) -> str:
        return money_text(micros, self.issuer.decimals)

    def width_of(self, text: str) -> float:
        """get_string_width in the current font, remembered: the detail's numbers repeat a lot (the CDR detail
        sets one font for all its lines)."""
        width = self._widths.get(text)
        if width is None:
            if len(self._widths) > 100_000:
                self._widths.clear()
            width = self._widths[text] = self.get_string_width(text)
        return width

    # ------------------------------------------------------------------ page parts
    def footer(self) -> None:
        self.set_y(-16)
        self.set_draw_color(*RULE)
        self.line(LEFT, self.get_y(), RIGHT_EDGE, self.get_y())
        self.font(7.5, color=MUTED)
        parts = [self.issuer.name] + ([f"Tax number {self.issuer.tax_number}"] if self.issuer.tax_number else []) \
            + ([self.issuer.email] if self.issuer.email else [])
        self.set_y(-14)
        self.cell(WIDTH * 0.75, 4, self.clean(" · ".join(p for p in parts if p)))
        self.cell(WIDTH * 0.25, 4, f"Page {self.page_no()} of {PAGES_ALIAS}", align="R")

    def letterhead(self, title: str, facts: list[tuple[str, str]]) -> None:
        """The issuer (logo, name, address, tax number) on the left; the title and the document's facts right."""
        y = TOP
        if self.issuer.logo:
            self.image(io.BytesIO(self.issuer.logo), x=LEFT, y=y, h=16, keep_aspect_ratio=True, w=60)
            y += 19
        self.set_xy(LEFT, y)
        self.font(13, bold=True, color=ACCENT)
        self.multi_cell(95, 6, self.clean(self.issuer.name or " "), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.font(8.5, color=(60, 60, 60))
        for line in self.issuer.address.splitlines():
            self.line_of(line, 4.2, 95)
        if self.issuer.tax_number:
            self.line_of(f"Tax number: {self.issuer.tax_number}", 4.2, 95)
        if self.issuer.email:
            self.line_of(self.issuer.email, 4.2, 95)
        left_bottom = self.get_y()
        self.set_xy(120, TOP)
        self.font(22, bold=True, color=ACCENT)
        self.cell(RIGHT_EDGE - 120, 10, title, align="R", new_x=XPos.LEFT, new_y=YPos.NEXT)
        self.set_y(self.get_y() + 2)
        for label, value in facts:
            self.set_x(120)
            self.font(8.5, color=MUTED)
            self.cell(30, 5, label)
            self.font(8.5, bold=True)
            self.cell(RIGHT_EDGE - 150, 5, self.clean(value), align="R", new_x=XPos.LEFT, new_y=YPos.NEXT)
        self.set_y(max(left_bottom, self.get_y()) + 8)

    def addressee(self, label: str, lines: list[str]) -> None:
        self.font(7.5, bold=True, color=MUTED)
        self.line_of(label.upper(), 4.5)
        self.font(9.5)
        for index, line in enumerate(line for line in lines if line.strip()):
            if index == 0:
                self.font(10, bold=True)
            self.line_of(line, 4.8, 110)
            self.font(9.5)
        self.ln(6)

    def heading(self, text: str) -> None:
        self.font(10.5, bold=True, color=ACCENT)
        self.line_of(text, 6)
        self.ln(1)

    def table_header(self, columns: list[Column], height: float = 6.5, size: float = 8.5) -> None:
        self.set_fill_color(*SHADE)
        self.font(size, bold=True, color=(50, 50, 50))
        for column in columns:
            self.cell(column.width, height, column.title, align="R" if column.right else "L", fill=True)
        self.ln(height)

    def table_row(self, columns: list[Column], values: list[str], height: float = 6.0, size: float = 9,
                  bold: bool = False) -> None:
        self.font(size, bold=bold)
        for column, value in zip(columns, values, strict=True):
            self.cell(column.width, height, self.clean(value), align="R" if column.right else "L")
        self.ln(height)
        self.set_draw_color(*RULE)
        self.line(LEFT, self.get_y(), LEFT + sum(c.width for c in columns), self.get_y())

    def totals(self, rows: list[tuple[str, str]], emphasis: tuple[str, str]) -> None:
        """Right-aligned label/amount pairs, the last one (`emphasis`) on the accent colour."""
        label_x, label_w, amount_w = 112.0, 44.0, RIGHT_EDGE - 156.0
        self.ln(2)
        for label, amount in rows:
            self.set_x(label_x)
            self.font(9, color=(60, 60, 60))
            self.cell(label_w, 6, self.clean(label))
            self.font(9)
            self.cell(amount_w, 6, amount, align="R", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.set_x(label_x)
        self.set_fill_color(*ACCENT)
        self.font(10.5, bold=True, color=(255, 255, 255))
        self.cell(label_w, 8, " " + self.clean(emphasis[0]), fill=True)
        self.cell(amount_w, 8, emphasis[1] + " ", align="R", fill=True, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.ln(4)

    def paragraph(self, text: str, size: float = 9, color: tuple[int, int, int] = (40, 40, 40)) -> None:
        self.font(size, color=color)
        self.multi_cell(WIDTH, 4.6, self.clean(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def boxed(self, label: str, text: str) -> None:
        self.font(7.5, bold=True, color=MUTED)
        self.line_of(label.upper(), 5)
        self.set_fill_color(*SHADE)
        self.font(9, color=(40, 40, 40))
        self.multi_cell(WIDTH, 4.8, self.clean(text), fill=True, padding=2.5, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.ln(3)

    def render(self) -> bytes:
        return bytes(self.output())


def address_lines(bill_to: dict, country_name: str) -> list[str]:
    """The addressee as an envelope shows it: company, person, street lines, zip and city, province, country."""
    person = " ".join(p for p in (bill_to.get("first_name", ""), bill_to.get("last_name", "")) if p)
    city = " ".join(p for p in (bill_to.get("zip", ""), bill_to.get("city", "")) if p)
    lines = [bill_to.get("company", "") or person, person if bill_to.get("company") else "",
             bill_to.get("address1", ""), bill_to.get("address2", ""), city, bill_to.get("province", ""),
             country_name]
    return [line for line in lines if line]
