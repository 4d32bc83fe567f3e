"""The call state's Lua scripts (callstate/lua/<name>.lua), with the SHA-1 that EVALSHA names them by.

Kamailio's kamailio.cfg runs some of them natively through ndb_redis (kemi/render.py writes their SHA-1
into it), the KEMI script and the control service through redis-py; all load the same files.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from importlib import resources


@dataclass(frozen=True)
class Script:
    name: str
    text: str
    sha: str = field(init=False)  # computed once: commands name the script by it on every call

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.text.encode()).hexdigest())


_INCLUDE = "-- #include "


def _load(name: str) -> Script:
    """lua/<name>.lua, with each `-- #include LIB` line replaced by lua/lib/LIB.lua (Redis scripts cannot
    import: the shared cost function is spliced in)."""
    folder = resources.files("callstate") / "lua"
    lines = []
    for line in (folder / f"{name}.lua").read_text().splitlines(keepends=True):
        if line.startswith(_INCLUDE):
            line = (folder / "lib" / f"{line.removeprefix(_INCLUDE).strip()}.lua").read_text()
        lines.append(line)
    return Script(name, "".join(lines))


ADMIT_CALL = _load("admit_call")
SETTLE = _load("settle")
MARK_ANSWERED = _load("mark_answered")
CREDIT_PROVIDER = _load("credit_provider")
REAP = _load("reap")
RESTORE_ACCOUNT = _load("restore_account")
APPLY_PAYMENT = _load("apply_payment")
RECORD_REFUSAL = _load("record_refusal")
NODE_STARTED = _load("node_started")  # run by kamailio.cfg with EVAL, never by EVALSHA
SEIZE_TRUNK = _load("seize_trunk")
REAP_TRUNK = _load("reap_trunk")
ALL = (ADMIT_CALL, SETTLE, MARK_ANSWERED, CREDIT_PROVIDER, REAP, RESTORE_ACCOUNT, APPLY_PAYMENT, SEIZE_TRUNK,
       REAP_TRUNK, RECORD_REFUSAL, NODE_STARTED)
