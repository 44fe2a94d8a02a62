"""Scenario files (TOML): several weighted requests, variables, CSV feeders, values extracted
from one response into later requests, and thresholds. See docs/load-scenarios.md.

Each connection is a *virtual user* with its own variables: the file's ``[vars]``, then the
next row of each feeder (round robin across users), then whatever its responses extracted.
Requests marked ``once`` run first, in file order (a login, say); then the others are picked by
weight. A request whose template needs a variable the user does not have yet is not sent and
counts as the error ``missing-variable``.
"""

from __future__ import annotations

import csv
import json
import random
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .target import HttpRequest

VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
SOURCES = ("json", "regex", "header")


class MissingVariable(Exception):
    pass


def render(template: str, values: dict[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        try:
            return values[m[1]]
        except KeyError:
            raise MissingVariable(m[1]) from None

    return VARIABLE.sub(sub, template)


@dataclass(frozen=True)
class Extract:
    var: str
    source: str  # json | regex | header
    expr: str

    def apply(self, headers: dict[str, str], body: bytes) -> str | None:
        if self.source == "header":
            return headers.get(self.expr.lower())
        if self.source == "regex":
            m = re.search(self.expr, body.decode("utf-8", "replace"))
            return None if m is None else (m[1] if m.groups() else m[0])
        try:
            value: Any = json.loads(body)
        except ValueError:
            return None
        for part in re.findall(r"[^.\[\]]+", self.expr.removeprefix("$")):
            if isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            elif isinstance(value, dict) and part in value:
                value = value[part]
            else:
                return None
        return value if isinstance(value, str) else json.dumps(value)


@dataclass(frozen=True)
class RequestSpec:
    name: str
    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: str
    weight: float
    once: bool
    extract: tuple[Extract, ...]

    def encode(self, host_header: str, values: dict[str, str]) -> bytes:
        request = HttpRequest(
            self.method,
            render(self.path, values),
            tuple((k, render(v, values)) for k, v in self.headers),
            render(self.body, values).encode(),
        )
        return request.encode(host_header)


@dataclass
class Scenario:
    base: str | None
    requests: list[RequestSpec]
    variables: dict[str, str] = field(default_factory=dict)
    feeders: list[list[dict[str, str]]] = field(default_factory=list)
    thresholds: list[str] = field(default_factory=list)


def _fail(path: Path, where: str, problem: str) -> UsageError:
    return UsageError(f"scenario {path}: {where}: {problem}")


def load_scenario(path: Path) -> Scenario:
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise UsageError(f"cannot read scenario {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"scenario {path} is not valid TOML: {exc}") from None
    unknown = set(data) - {"base", "vars", "feeder", "request", "thresholds"}
    if unknown:
        raise _fail(path, "top level", f"unknown key(s) {', '.join(sorted(unknown))}")
    specs = [_request(path, i, r) for i, r in enumerate(data.get("request", []))]
    if not specs:
        raise _fail(path, "request", "at least one [[request]] is needed")
    if not any(s.weight > 0 and not s.once for s in specs):
        raise _fail(path, "request", "at least one request must have weight > 0 and not once")
    variables = {str(k): str(v) for k, v in data.get("vars", {}).items()}
    feeders = [_feeder(path, i, f) for i, f in enumerate(data.get("feeder", []))]
    thresholds = data.get("thresholds", [])
    if not isinstance(thresholds, list) or not all(isinstance(t, str) for t in thresholds):
        raise _fail(path, "thresholds", "expected a list of strings like 'p99 < 50ms'")
    base = data.get("base")
    if base is not None and not isinstance(base, str):
        raise _fail(path, "base", "expected a URL string")
    return Scenario(base, specs, variables, feeders, thresholds)


def _request(path: Path, index: int, raw: Any) -> RequestSpec:
    where = f"request #{index + 1}"
    if not isinstance(raw, dict):
        raise _fail(path, where, "expected a table")
    allowed = {"name", "method", "path", "headers", "body", "weight", "once", "extract"}
    unknown = set(raw) - allowed
    if unknown:
        raise _fail(path, where, f"unknown key(s) {', '.join(sorted(unknown))}")
    name = str(raw.get("name", f"request-{index + 1}"))
    target = raw.get("path", "/")
    if not isinstance(target, str) or not target.startswith("/"):
        raise _fail(path, f"{where} ({name})", "path must be a string starting with /")
    weight = raw.get("weight", 1)
    if not isinstance(weight, int | float) or weight < 0:
        raise _fail(path, f"{where} ({name})", "weight must be a number >= 0")
    headers = raw.get("headers", {})
    if not isinstance(headers, dict):
        raise _fail(path, f"{where} ({name})", "headers must be a table of strings")
    extracts = []
    for var, spec in raw.get("extract", {}).items():
        source, sep, expr = str(spec).partition(":")
        if not sep or source not in SOURCES or not expr:
            raise _fail(path, f"{where} ({name}) extract {var}",
                        "expected 'json:$.path', 'regex:PATTERN' or 'header:Name'")  # fmt: skip
        if source == "regex":
            try:
                re.compile(expr)
            except re.error as exc:
                raise _fail(path, f"{where} ({name}) extract {var}", f"bad regex: {exc}") from None
        extracts.append(Extract(str(var), source, expr))
    return RequestSpec(
        name=name,
        method=str(raw.get("method", "GET")).upper(),
        path=target,
        headers=tuple((str(k), str(v)) for k, v in headers.items()),
        body=str(raw.get("body", "")),
        weight=float(weight),
        once=bool(raw.get("once", False)),
        extract=tuple(extracts),
    )


def _feeder(path: Path, index: int, raw: Any) -> list[dict[str, str]]:
    where = f"feeder #{index + 1}"
    if not isinstance(raw, dict) or not isinstance(raw.get("file"), str):
        raise _fail(path, where, "expected file = 'rows.csv'")
    file = (path.parent / raw["file"]).resolve()
    try:
        with file.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise _fail(path, where, f"cannot read {file}: {exc.strerror}") from None
    if not rows:
        raise _fail(path, where, f"{file} has a header but no rows")
    return rows


class VirtualUser:
    """One connection's variables and its choice of the next request."""

    __slots__ = ("_host", "_once", "_rand", "_scenario", "_weights", "values")

    def __init__(self, scenario: Scenario, host_header: str, number: int, seed: int | None) -> None:
        self._scenario = scenario
        self._host = host_header
        self._rand = random.Random(None if seed is None else seed * 1_000_003 + number)
        self.values = dict(scenario.variables)
        for rows in scenario.feeders:
            self.values.update(rows[number % len(rows)])
        self._once = [s for s in scenario.requests if s.once]
        self._weights = [0.0 if s.once else s.weight for s in scenario.requests]

    def next(self) -> tuple[RequestSpec, bytes | None]:
        """The next request and its bytes (``None``: a variable is missing)."""
        spec = (
            self._once.pop(0)
            if self._once
            else self._rand.choices(self._scenario.requests, self._weights)[0]
        )
        try:
            return spec, spec.encode(self._host, self.values)
        except MissingVariable:
            return spec, None

    def extracted(self, spec: RequestSpec, headers: dict[str, str], body: bytes) -> None:
        for rule in spec.extract:
            value = rule.apply(headers, body)
            if value is not None:
                self.values[rule.var] = value
