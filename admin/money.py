"""Money on the command line: decimal amounts typed by people, int64 micros on the wire (SPEC §1)."""

from decimal import Context, Decimal, Inexact, InvalidOperation

MICROS_PER_UNIT = 1_000_000
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# Wide enough that scaling any sane amount is exact; Inexact traps the rest instead of rounding them.
_EXACT = Context(prec=100, traps=[Inexact, InvalidOperation])


def parse_money(text: str) -> int:
    """ "100.50" -> 100500000. Raises ValueError rather than round: a lost micro is lost money."""
    try:
        amount = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"not a decimal amount: {text!r}") from None
    if not amount.is_finite():
        raise ValueError(f"not a decimal amount: {text!r}")
    try:
        micros = amount.scaleb(6, context=_EXACT)
    except (Inexact, InvalidOperation):
        raise ValueError(f"amount out of range: {text!r}") from None
    if micros != micros.to_integral_value():
        raise ValueError(f"at most 6 decimal places (micros) allowed: {text!r}")
    value = int(micros)
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError(f"amount out of range: {text!r}")
    return value


# Prices (per-minute rates, connect and local-call fees) are printed with every micro, the way the CDR export
# prints rate_per_min: with the company's 2 decimals 0.0042 would read 0.00. Always 6, so a column lines up
# and 0.0090 does not come back as 0.009.
RATE_DECIMALS = 6


def format_amount(micros: int, decimals: int) -> str:
    """An amount of money with the company's decimals, rounded like the CSV exports and invoices
    (control/accounts/export.py money()): 4038 micros with 4 decimals -> "0.0040". Display only."""
    return str((Decimal(micros) / MICROS_PER_UNIT).quantize(Decimal(1).scaleb(-decimals)))


def format_rate(micros: int) -> str:
    """A price: 9000 -> "0.009000", exact."""
    return format_amount(micros, RATE_DECIMALS)
