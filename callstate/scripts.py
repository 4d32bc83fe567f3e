"""The call state's Lua scripts (callstate/lua/<name>.lua), with the SHA-1 that EVALSHA names them by.

Kamailio's kamailio.cfg runs some of them natively through ndb_redis (kemi/render.py writes their SHA-1
into it), the KEMI script and the control service through redis-py; all load the same files.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources


@dataclass(frozen=True)
class Script:
    name: str
    text: str

    @property
    def sha(self) -> str:
        return hashlib.sha1(self.text.encode()).hexdigest()


def _load(name: str) -> Script:
    return Script(name, (resources.files("callstate") / "lua" / f"{name}.lua").read_text())


ADMIT_CALL = _load("admit_call")
SETTLE = _load("settle")
MARK_ANSWERED = _load("mark_answered")
REAP = _load("reap")
APPLY_PAYMENT = _load("apply_payment")
SEIZE_TRUNK = _load("seize_trunk")
REAP_TRUNK = _load("reap_trunk")
ALL = (ADMIT_CALL, SETTLE, MARK_ANSWERED, REAP, APPLY_PAYMENT, SEIZE_TRUNK, REAP_TRUNK)
