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


def format_money(micros: int) -> str:
    """12345000 -> "12.345", 100500000 -> "100.50": exact, at least two decimals, no trailing noise."""
    sign = "-" if micros < 0 else ""
    units, fraction = divmod(abs(micros), MICROS_PER_UNIT)
    return f"{sign}{units}.{f'{fraction:06d}'.rstrip('0').ljust(2, '0')}"
