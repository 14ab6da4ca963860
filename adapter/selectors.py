"""Kubernetes label selectors: parsed once, matched many times (pure).

The metrics API (issue 3) calls `parse_selector` on `labelSelector` and `metricLabelSelector`
query parameters and matches pods' labels with `Selector.matches`. The grammar is the one
`k8s.io/apimachinery/pkg/labels` accepts: requirements separated by commas, each one of
`key`, `!key`, `key=value`, `key==value`, `key!=value`, `key in (a,b)`, `key notin (a,b)`.
A malformed selector raises `SelectorError`, which the API answers with a 400 `Status`; its
message quotes at most a short prefix of the offending text (`adapter.errors.quote`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from adapter.errors import quote

# A label key: an optional DNS-subdomain prefix and "/", then a name of at most 63 characters.
_NAME = r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_PREFIX = r"[a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?"
_KEY = re.compile(rf"(?:{_PREFIX}/)?{_NAME}")
_VALUE = re.compile(rf"(?:{_NAME})?")

_SET = re.compile(r"^(?P<key>\S+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)$")
_EQUALITY = re.compile(r"^(?P<key>[^=!\s]+)\s*(?P<op>==|=|!=)\s*(?P<value>\S*)$")


class SelectorError(ValueError):
    """A selector that does not parse; the message says which requirement and why."""


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str  # "in", "notin", "exists", "!exists" ("=" is "in" with one value)
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "exists":
            return self.key in labels
        if self.operator == "!exists":
            return self.key not in labels
        if self.operator == "in":
            return labels.get(self.key) in self.values  # values are strings, never None
        # notin (and !=) also match objects that do not have the label at all.
        return labels.get(self.key) not in self.values


@dataclass(frozen=True)
class Selector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        for requirement in self.requirements:  # a loop, not all(...): no generator per pod
            if not requirement.matches(labels):
                return False
        return True

    @property
    def empty(self) -> bool:
        return not self.requirements


def _split(text: str) -> list[str]:
    """Split on the commas that are not inside an `in (...)` list."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError(f"unbalanced ')' in {quote(text)}")
        elif char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth:
        raise SelectorError(f"unbalanced '(' in {quote(text)}")
    parts.append(text[start:])
    return [part.strip() for part in parts]


def _key(key: str, part: str) -> str:
    if not _KEY.fullmatch(key):
        raise SelectorError(f"invalid label key {quote(key)} in {quote(part)}")
    return key


def _value(value: str, part: str) -> str:
    if not _VALUE.fullmatch(value):
        raise SelectorError(f"invalid label value {quote(value)} in {quote(part)}")
    return value


def _requirement(part: str) -> Requirement:
    if not part:
        raise SelectorError("empty requirement (a stray comma?)")
    if match := _SET.match(part):
        values = [v.strip() for v in match["values"].split(",")]
        if values == [""]:
            raise SelectorError(f"{match['op']} needs at least one value in {quote(part)}")
        return Requirement(
            _key(match["key"], part),
            match["op"],
            frozenset(_value(v, part) for v in values),
        )
    if match := _EQUALITY.match(part):
        operator = "notin" if match["op"] == "!=" else "in"
        return Requirement(
            _key(match["key"], part), operator, frozenset({_value(match["value"], part)})
        )
    if part.startswith("!"):
        return Requirement(_key(part[1:].strip(), part), "!exists")
    return Requirement(_key(part, part), "exists")


def parse_selector(text: str | None) -> Selector:
    """`None` or "" selects everything."""
    if text is None or not text.strip():
        return Selector()
    return Selector(tuple(_requirement(part) for part in _split(text)))
