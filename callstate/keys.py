"""Every Redis key name of the call state, built and parsed in one place.

An account's keys share the hash tag {a:<account>} and a trunk's {t:<trunk>}, so that one script touches
one cluster slot: `<ns>:{a:1000000001}:money`, `<ns>:{t:carrier-fra}:calls`.
"""

from __future__ import annotations

from dataclasses import dataclass

# The per-account keys: the live money (HASH balance, reserved), the open calls (HASH call id ->
# "reserve:granted:admitted_at[:answered_at]"), settled call ids (ZSET scored by the second each settled, trimmed
# to callstate.store.SETTLED_WINDOW_SECONDS), settled calls' events (STREAM), payments applied (SET), and the CPS
# counter of one second (cps:<epoch second>).
# "settled_at", not "settled": the settled ids were a plain SET under "settled" until they became a sorted set;
# a new name lets a Redis upgraded in place keep working (a sorted-set command on the old SET is WRONGTYPE) while
# the old sets expire on their own within their 7 days.
MONEY, CALLS, SETTLED, EVENTS, PAYMENTS = "money", "calls", "settled_at", "events", "payments"


@dataclass(frozen=True)
class StateKeys:
    namespace: str

    def account(self, account: str, name: str) -> str:
        return f"{self.account_prefix(account)}{name}"

    def account_prefix(self, account: str) -> str:
        """`<ns>:{a:<account>}:` (a command format adds the key's own name)."""
        return f"{self.namespace}:{{a:{account}}}:"

    def cps(self, account: str, second: int) -> str:
        return self.account(account, f"cps:{second}")

    def trunk(self, trunk: str, name: str) -> str:
        return f"{self.namespace}:{{t:{trunk}}}:{name}"

    @property
    def nodes(self) -> str:
        """HASH Kamailio node -> its last heartbeat (epoch seconds)."""
        return f"{self.namespace}:{{cfg}}:nodes"

    @property
    def node_starts(self) -> str:
        """HASH Kamailio node -> "started:last heartbeat before" (epoch seconds) of its latest start."""
        return f"{self.namespace}:{{cfg}}:node_starts"

    def account_pattern(self, name: str) -> str:
        """A SCAN pattern for one kind of account key (`name` = CALLS, EVENTS, ...)."""
        return f"{self.namespace}:{{a:*}}:{name}"

    def trunk_pattern(self, name: str) -> str:
        return f"{self.namespace}:{{t:*}}:{name}"

    def account_of(self, key: str | bytes, name: str) -> str | None:
        """The account in an account key of that kind (the inverse of account()), None for another key."""
        text = key.decode() if isinstance(key, bytes) else key
        head, tail = f"{self.namespace}:{{a:", f"}}:{name}"
        if not (text.startswith(head) and text.endswith(tail)) or len(text) <= len(head) + len(tail):
            return None
        return text[len(head):-len(tail)]
