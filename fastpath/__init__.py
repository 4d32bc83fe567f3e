"""The per-call decision core: rating, CLI pool, localization, LCR, authorization, fed from Redis.

Two implementations decide alike: the compiled `fastpath._core` (used in Kamailio) and the plain-Python
`fastpath.reference` (the executable spec). `engine_class()` picks one once: the compiled one when it
is built, or whichever TOLLGATE_FASTPATH ("cython" | "reference") names, failing loudly when a named
one cannot be loaded. `__impl__` says which was picked.
"""

from __future__ import annotations

import logging
import os

_log = logging.getLogger(__name__)
__impl__ = ""


def engine_class() -> type:
    global __impl__
    wanted = os.environ.get("TOLLGATE_FASTPATH", "")
    if wanted not in ("", "cython", "reference"):
        raise ImportError(f"TOLLGATE_FASTPATH={wanted!r}: use 'cython' or 'reference'")
    if wanted != "reference":
        try:
            from fastpath._core import Engine
        except ImportError:
            if wanted == "cython":
                raise
            _log.warning("fastpath._core is not built; deciding with the slow reference implementation")
        else:
            __impl__ = "cython"
            return Engine
    from fastpath.reference.decision import Engine

    __impl__ = "reference"
    return Engine
