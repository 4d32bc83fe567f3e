"""Memory of a live process, read from /proc (Linux), in KiB: what the benches print per process.

    from _memory import pss_kib     # in a bench run as `python bench/NAME.py` (bench/ is on sys.path)

PSS (proportional set size) counts a process's private pages whole and each page it shares with N processes
as 1/N: the sum over a node's processes is the node's memory, so a deck image mapped by every process shows
up once, split between them, while a per-process copy shows up in full in each.
"""

from __future__ import annotations


def _rollup(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise ValueError(f"/proc/{pid}/smaps_rollup has no {field}")


def pss_kib(pid: int) -> int:
    """Proportional set size of a live process (Pss in /proc/<pid>/smaps_rollup)."""
    return _rollup(pid, "Pss")


def private_kib(pid: int) -> int:
    """Pages only this process maps (Private_Clean + Private_Dirty in /proc/<pid>/smaps_rollup)."""
    return _rollup(pid, "Private_Clean") + _rollup(pid, "Private_Dirty")
