"""What a decision says (both implementations answer with these), and the call it is about."""

from __future__ import annotations

from dataclasses import dataclass

# The stage a decision stopped at, in SPEC §5 order. Kamailio's Redis checks (CPS, concurrent calls)
# sit between "account" and "number" (the dialled number after localization): a refusal from a later stage
# yields to theirs.
STAGES = ("account", "number", "direction", "cli", "rate", "balance", "route", "done")
# The stages before the money check: a refusal there needs no balance to be decided.
BEFORE_BALANCE = STAGES[1:STAGES.index("balance")]

# What a call presents when its caller id is not plain digits and no default caller id applies: the
# KEMI script sends From "Anonymous" <sip:anonymous@anonymous.invalid> and no P-Asserted-Identity.
ANONYMOUS = "anonymous"
MAX_CALLER_ID_DIGITS = 32  # the longest caller id or DID the control plane stores


MAX_USER_LENGTH = 64  # a SIP device username's longest
MAX_DIALLED = 64  # a dialled user part longer than any tech prefix + number: answered 484 before identification

# A decision's trace (Engine.trace; the route simulator shows it): the facts the decision went through, in
# order, as plain tuples, so that the two implementations are held to the same trace exactly
# (tests/test_fastpath_differential.py). Deciding without a trace (Engine.decide, every INVITE) records nothing.
#   ("localize", rule list, owner, index, before, after)  one rule applied; owner "" = the account's profile,
#                                                          else the trunk whose profile it is
#   ("fallback", caller id, presented)                     a caller id that cannot be presented, replaced
#   ("cli", option, pool size, outcome, caller id, rate group id)      outcome: one of CLI_OUTCOMES
#   ("rate", rate group id, outcome, prefix, base rate, terms)          outcome: one of RATE_OUTCOMES; terms as
#                                                          Decision.terms (markup and group defaults applied)
#   ("candidates", "forced" | "group", trunk ids)           the trunks routing considers, in the rate group's order
#   ("trunk", trunk id, verdict, prefix, rate_per_min)     "" = kept, else one of TRUNK_VERDICTS
CLI_OUTCOMES = ("disabled", "in_pool", "random", "empty_pool", "non_cli", "no_non_cli_group", "reject")
RATE_OUTCOMES = ("matched", "unknown_group", "inactive_group", "no_match")
TRUNK_VERDICTS = ("", "unknown", "inactive", "provider_disabled", "no_gateways", "no_rates", "provider_expired",
                  "no_rate", "loss")


def is_user(text: str) -> bool:
    """A plain SIP user part: 1..64 ASCII letters, digits, '.', '_' or '-' (a device username or a number).
    Calls that stay on this switch (local, DID) may present one; calls to carriers present digits only."""
    return 0 < len(text) <= MAX_USER_LENGTH and text.isascii() and text.replace(".", "").replace("_", "").replace(
        "-", "").isalnum() and text[0] not in "._-"


def is_number(text: str, longest: int, shortest: int = 1) -> bool:
    """shortest..longest ASCII digits: what a switch can dial and a carrier can be sent (str.isdigit() alone
    would accept other scripts' digits)."""
    return max(shortest, 1) <= len(text) <= longest and text.isascii() and text.isdigit()


@dataclass(frozen=True)
class Call:
    account: str  # identified caller (device's account or IP map's account)
    caller_id: str  # as received
    destination: str  # as dialled (tech prefix already removed)
    available: int  # micros the account may spend now (balance [+ credit] - reserved)
    now: int  # epoch seconds
    entropy: int = 0  # picks the "random" DID / caller id of CLI pool options 1 and 2


@dataclass(frozen=True)
class Route:
    trunk: str
    provider: str
    gateways: tuple[tuple[str, str], ...]  # (host:port, transport) in failover order
    destination: str  # as sent: after the trunk's localization, strip and prepend
    caller_id: str  # as sent: after the trunk's caller-id localization
    prefix: str  # matched termination prefix
    rate_per_min: int
    cost: int  # what the provider charges for the granted duration
    max_concurrent_calls: int
    cps: int
    terms: tuple[int, int, int, int, int] = ()  # provider's (connect_fee, included, rate, initial, increment)


@dataclass(frozen=True)
class Decision:
    code: int  # 200 = go ahead; otherwise the SIP answer
    reason: str
    stage: str
    direction: str = ""  # outbound | local | inbound
    caller_id: str = ""  # to present
    destination: str = ""  # after the account's localization
    rate_group: str = ""
    prefix: str = ""  # matched origination prefix
    rate_per_min: int = 0  # effective (markup included)
    granted_seconds: int = 0
    reserve: int = 0  # micros to reserve = cost(granted_seconds)
    routes: tuple[Route, ...] = ()
    callee: str = ""  # local: the device username; inbound: the DID owner's account
    callee_devices: tuple[str, ...] = ()  # inbound: the owner's active devices
    record: bool = False
    # What the caller pays, resolved (markup and group defaults applied), when the call goes ahead:
    # (connect_fee, included_seconds, rate_per_min, initial_increment, increment). Billing uses these.
    terms: tuple[int, int, int, int, int] = ()

    def as_tuple(self) -> tuple:
        return (self.code, self.reason, self.stage, self.direction, self.caller_id, self.destination,
                self.rate_group, self.prefix, self.rate_per_min, self.granted_seconds, self.reserve,
                tuple(tuple(vars(r).values()) for r in self.routes), self.callee, self.callee_devices, self.record,
                self.terms)


def refusal(code: int, reason: str, stage: str, **fields) -> Decision:
    return Decision(code=code, reason=reason, stage=stage, **fields)
