""""SPEC §n" in the code, tests and docs refers to docs/BEHAVIOUR.md §n: every section cited must exist there.

A citation is "SPEC §n", "SPEC §n, §m", "SPEC §n–§m" (each section of the range), "SPEC §n and §m" or
"SPEC §n.m" (a numbered subsection heading, "### n.m ..."), with digits for n and m. Plain files only; no
fixtures, no services.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEHAVIOUR = ROOT / "docs" / "BEHAVIOUR.md"
_REF = r"§\s*\d+(?:\.\d+)*"
CITATION = re.compile(rf"SPEC\s+{_REF}(?:\s*(?:,|and|–|-)\s*{_REF})*")
PART = re.compile(rf"({_REF})(\s*[–-]\s*)?")
HEADING = re.compile(r"^#{2,}\s+(\d+(?:\.\d+)*)\.?\s", re.MULTILINE)


def sections() -> list[str]:
    """The numbered headings of docs/BEHAVIOUR.md, in order ("1", "2", ..., "9.2")."""
    return HEADING.findall(BEHAVIOUR.read_text(encoding="utf-8"))


def _files() -> list[Path]:
    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                                capture_output=True, text=True, check=True).stdout.splitlines()
        return [ROOT / name for name in listed]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: every file but hidden and built ones
        return [p for p in ROOT.rglob("*") if p.is_file() and not any(
            part.startswith(".") or part in ("run", "build", "__pycache__") or part.endswith(".egg-info")
            for part in p.relative_to(ROOT).parts)]


def cited() -> dict[str, set[str]]:
    """Section number -> the files citing it."""
    found: dict[str, set[str]] = {}
    for path in _files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # binary or vanished
        for citation in CITATION.finditer(text):
            numbers: list[str] = []
            range_from: str | None = None
            for part in PART.finditer(citation.group(0)):
                number = re.sub(r"[§\s]", "", part.group(1))
                if range_from is not None and "." not in number + range_from:
                    numbers += [str(n) for n in range(int(range_from) + 1, int(number))]
                numbers.append(number)
                range_from = number if part.group(2) else None
            for number in numbers:
                found.setdefault(number, set()).add(str(path.relative_to(ROOT)))
    return found


def test_behaviour_sections_are_numbered_1_to_n_without_gaps():
    top = [s for s in sections() if "." not in s]
    assert top == [str(n) for n in range(1, len(top) + 1)], top


def test_every_spec_section_cited_in_the_repository_is_in_behaviour_md():
    known = set(sections())
    citations = cited()
    assert citations, "no SPEC citations found: is the pattern still right?"
    missing = {number: sorted(files) for number, files in citations.items() if number not in known}
    assert not missing, f"cited as SPEC §n but not a section of docs/BEHAVIOUR.md: {missing}"
