"""Number localization rules (SPEC §7): parsing (used by control to validate) and applying.

Syntax, one rule per string, applied in order, each to the previous result:
- `match/replace`  a number starting with `match` has that prefix replaced by `replace`;
- `*/replace`      prepend `replace`;
- `match/*`, `match/`  strip the prefix `match`;
- `/regex/replacement/`  a full regular-expression rewrite (Python `re` syntax, `\\1` groups; `$1` works too).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PREFIX_PART = re.compile(r"[0-9+#*]*")


class RuleError(ValueError):
    """A rule that cannot be parsed; the message says why."""


@dataclass(frozen=True)
class PrefixRule:
    match: str  # "" = every number
    replace: str

    def apply(self, number: str) -> str:
        if number.startswith(self.match):
            return self.replace + number[len(self.match):]
        return number


@dataclass(frozen=True)
class RegexRule:
    pattern: re.Pattern
    replacement: str

    def apply(self, number: str) -> str:
        return self.pattern.sub(self.replacement, number, count=1)


Rule = PrefixRule | RegexRule


def _split_regex(text: str) -> tuple[str, str]:
    """'/a\\/b/c/' -> ('a\\/b', 'c'): split on the unescaped slashes."""
    parts, current, escaped = [], [], False
    for char in text[1:]:
        if char == "/" and not escaped:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        escaped = char == "\\" and not escaped
    if current or len(parts) != 2:
        raise RuleError("a regex rule is /pattern/replacement/ with exactly three slashes")
    return parts[0], parts[1]


def parse_rule(text: str) -> Rule:
    text = text.strip()
    if text.startswith("/"):
        pattern, replacement = _split_regex(text)
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise RuleError(f"bad regular expression: {exc}") from None
        replacement = re.sub(r"\$(\d+)", r"\\\1", replacement)
        try:
            compiled.sub(replacement, "")  # a replacement naming a missing group fails here, not per call
            compiled.sub(replacement, "0" * 16)
        except (re.error, IndexError) as exc:
            raise RuleError(f"bad replacement: {exc}") from None
        return RegexRule(compiled, replacement)
    match, slash, replace = text.partition("/")
    if not slash:
        raise RuleError("a rule is match/replace, */prepend, match/ or /regex/replacement/")
    match = "" if match == "*" else match
    replace = "" if replace == "*" else replace
    if not match and not replace:
        raise RuleError("a rule must match or replace something")
    for part in (match, replace):
        if not _PREFIX_PART.fullmatch(part):
            raise RuleError(f"{part!r}: prefixes are digits (and + # *)")
    return PrefixRule(match, replace)


def parse_rules(texts: list[str]) -> list[Rule]:
    return [parse_rule(t) for t in texts]


def localize(number: str, rules: list[Rule]) -> str:
    for rule in rules:
        number = rule.apply(number)
    return number
