"""gcloud's ``--filter`` expressions, applied to resources as the REST API shows them.

Terms are ``KEY:VALUE`` (has: case-insensitive, a whole word of the value or the value itself,
``VALUE*`` a prefix, ``KEY:*`` the key is set), ``KEY=VALUE`` and ``KEY!=VALUE`` (equal,
case-insensitive), ``KEY<VALUE``, ``<=``, ``>``, ``>=`` (numbers as numbers, else as text, so
RFC 3339 times compare), ``KEY~REGEX`` and ``KEY!~REGEX``. ``:`` and ``=`` also take a list,
``state:(PAUSED DISABLED)``. Terms combine with ``AND`` (or a space), ``OR``, ``NOT`` or ``-``,
and parentheses.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_OPERATORS = ("!=", "!~", "<=", ">=", ":", "=", "<", ">", "~")
_KEY = re.compile(r"[A-Za-z_][\w.-]*")


@dataclass(frozen=True)
class Filter:
    """A parsed expression; ``matches`` says whether a resource passes."""

    test: Callable[[dict[str, Any]], bool]

    def matches(self, resource: dict[str, Any]) -> bool:
        return self.test(resource)


def parse_filter(text: str) -> Filter:
    """Parse ``text``; ValueError names what is wrong and where."""
    parser = _Parser(text)
    test = parser.disjunction()
    parser.skip_space()
    if parser.position < len(text):
        raise parser.error("unexpected text")
    return Filter(test)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.position = 0

    def error(self, what: str) -> ValueError:
        return ValueError(f"{what} at column {self.position + 1} of '{self.text}'")

    def skip_space(self) -> None:
        while self.position < len(self.text) and self.text[self.position].isspace():
            self.position += 1

    def keyword(self, word: str) -> bool:
        self.skip_space()
        end = self.position + len(word)
        if self.text[self.position : end] == word and (end == len(self.text) or self.text[end] in " \t()"):
            self.position = end
            return True
        return False

    def disjunction(self) -> Callable[[dict[str, Any]], bool]:
        tests = [self.conjunction()]
        while self.keyword("OR"):
            tests.append(self.conjunction())
        return tests[0] if len(tests) == 1 else (lambda r: any(t(r) for t in tests))

    def conjunction(self) -> Callable[[dict[str, Any]], bool]:
        tests = [self.negation()]
        while True:
            self.keyword("AND")
            self.skip_space()
            if self.position >= len(self.text) or self.text[self.position] == ")" or self._at_or():
                break
            tests.append(self.negation())
        return tests[0] if len(tests) == 1 else (lambda r: all(t(r) for t in tests))

    def _at_or(self) -> bool:
        start = self.position
        found = self.keyword("OR")
        self.position = start
        return found

    def negation(self) -> Callable[[dict[str, Any]], bool]:
        self.skip_space()
        if self.keyword("NOT") or self._take("-"):
            inner = self.negation()
            return lambda r: not inner(r)
        if self._take("("):
            inner = self.disjunction()
            self.skip_space()
            if not self._take(")"):
                raise self.error("missing )")
            return inner
        return self.term()

    def _take(self, char: str) -> bool:
        if self.text.startswith(char, self.position):
            self.position += len(char)
            return True
        return False

    def term(self) -> Callable[[dict[str, Any]], bool]:
        key = _KEY.match(self.text, self.position)
        if key is None:
            raise self.error("expected a KEY")
        self.position = key.end()
        self.skip_space()
        operator = next((op for op in _OPERATORS if self.text.startswith(op, self.position)), None)
        if operator is None:
            raise self.error(f"expected an operator ({' '.join(_OPERATORS)}) after '{key[0]}'")
        self.position += len(operator)
        self.skip_space()
        values = self.values() if operator in (":", "=", "!=") and self._take("(") else [self.value()]
        return _term(key[0].split("."), operator, values)

    def values(self) -> list[str]:
        found: list[str] = []
        while True:
            self.skip_space()
            if self._take(")"):
                return found
            if self.position >= len(self.text):
                raise self.error("missing )")
            found.append(self.value())
            self.keyword("OR")

    def value(self) -> str:
        self.skip_space()
        if self.position < len(self.text) and self.text[self.position] in "\"'":
            quote = self.text[self.position]
            end = self.text.find(quote, self.position + 1)
            if end < 0:
                raise self.error("unclosed quote")
            value, self.position = self.text[self.position + 1 : end], end + 1
            return value
        start = self.position
        while self.position < len(self.text) and self.text[self.position] not in " \t()":
            self.position += 1
        if start == self.position:
            raise self.error("expected a VALUE")
        return self.text[start : self.position]


def _term(path: list[str], operator: str, values: list[str]) -> Callable[[dict[str, Any]], bool]:
    def test(resource: dict[str, Any]) -> bool:
        found = _lookup(resource, path)
        items = found if isinstance(found, list) else [found]
        if operator in ("!=", "!~"):
            return not any(_compare(item, operator[1:], values) for item in items)
        return any(_compare(item, operator, values) for item in items)

    return test


def _lookup(resource: Any, path: list[str]) -> Any:
    for key in path:
        resource = resource.get(key) if isinstance(resource, dict) else None
    return resource


def _compare(value: Any, operator: str, patterns: list[str]) -> bool:
    if operator == ":":
        return any(_has(value, pattern) for pattern in patterns)
    if operator == "=":
        return any(_equal(value, pattern) for pattern in patterns)
    if operator == "~":
        return value is not None and re.search(patterns[0], _text(value)) is not None
    return value is not None and _ordered(value, operator, patterns[0])


def _has(value: Any, pattern: str) -> bool:
    if pattern == "*":
        return value not in (None, "", [], {})
    if value is None:
        return False
    text, wanted = _text(value).lower(), pattern.lower()
    if wanted.endswith("*"):
        return any(word.startswith(wanted[:-1]) for word in [text, *re.split(r"[^a-z0-9]+", text)])
    return text == wanted or wanted in re.split(r"[^a-z0-9]+", text) or _equal(value, pattern)


def _equal(value: Any, pattern: str) -> bool:
    number = _number(pattern)
    if isinstance(value, int | float) and not isinstance(value, bool) and number is not None:
        return float(value) == number
    return value is not None and _text(value).lower() == pattern.lower()


def _ordered(value: Any, operator: str, pattern: str) -> bool:
    left: Any = _number(value) if not isinstance(value, bool) else None
    right: Any = _number(pattern)
    if left is None or right is None:
        left, right = _text(value), pattern
    result: bool = {"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[operator]
    return result


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)
