"""Results: figures with their targets, one JSON line per scenario, and a Markdown table.

Every figure says whether it met the issue's target for a 2-core machine
(``met`` is ``null`` where there is no target, or when the target is relative
to a baseline that was not measured), and, where the plain-Celery baseline
measured the same thing, its ratio to it.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import typing as t


@dataclasses.dataclass
class Figure:
    """One measured number, its unit, and the target it is held to (``>= x`` or ``<= x``)."""

    name: str
    value: float | None
    unit: str
    target: str | None = None  # e.g. ">= 3000", "<= 50"
    vs_celery: float | None = None
    note: str | None = None

    @property
    def met(self) -> bool | None:
        if self.target is None or self.value is None:
            return None
        op, _, limit = self.target.partition(" ")
        bound = float(limit)
        return self.value >= bound if op == ">=" else self.value <= bound

    def as_dict(self) -> dict[str, t.Any]:
        doc: dict[str, t.Any] = {"value": _round(self.value), "unit": self.unit}
        if self.target is not None:
            doc.update(target=self.target, met=self.met)
        if self.vs_celery is not None:
            doc["vs_celery"] = round(self.vs_celery, 3)
        if self.note:
            doc["note"] = self.note
        return doc


@dataclasses.dataclass
class ScenarioResult:
    """A scenario's figures plus the parameters it ran with."""

    scenario: str
    figures: list[Figure] = dataclasses.field(default_factory=list)
    params: dict[str, t.Any] = dataclasses.field(default_factory=dict)
    error: str | None = None

    def add(self, *args: t.Any, **kwargs: t.Any) -> Figure:
        figure = Figure(*args, **kwargs)
        self.figures.append(figure)
        return figure

    def get(self, name: str) -> float | None:
        return next((f.value for f in self.figures if f.name == name), None)

    def json_line(self, machine: dict[str, t.Any]) -> str:
        doc = {"scenario": self.scenario, **machine, "params": self.params,
               "figures": {f.name: f.as_dict() for f in self.figures}}
        if self.error:
            doc["error"] = self.error
        return json.dumps(doc, separators=(",", ":"))


def machine() -> dict[str, t.Any]:
    """What every JSON line carries about where it was measured."""
    return {"cores": os.cpu_count(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "python": platform.python_version(), "host": platform.node()}


def markdown(results: t.Sequence[ScenarioResult]) -> str:
    """All figures as one Markdown table."""
    rows = ["| scenario | figure | value | target | met | vs plain Celery |",
            "|---|---|---|---|---|---|"]
    for r in results:
        if r.error:
            rows.append(f"| {r.scenario} | error | {r.error[:80]} | | | |")
        for f in r.figures:
            met = {True: "yes", False: "**no**", None: ""}[f.met]
            ratio = f"{f.vs_celery:.2f}x" if f.vs_celery is not None else ""
            rows.append(f"| {r.scenario} | {f.name} | {_fmt(f.value)} {f.unit} | {f.target or ''} | {met} | {ratio} |")
    return "\n".join(rows)


def _round(value: float | None) -> float | None:
    if value is None:
        return None
    return round(value, 3) if abs(value) < 100 else round(value, 1)


def _fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


def percentile(values: t.Sequence[float], q: float) -> float | None:
    """The q-th percentile (nearest rank) of ``values``."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[rank]
