"""Shared pytest hooks. Keep this file small and generic: every test module sees it."""

from __future__ import annotations

from collections import Counter
from typing import Any

SUMMARY_PROPERTY = "summary"
"""A test calls ``record_property("summary", (group, categories, category[, count]))`` to be
counted (once, or ``count`` times) in its group's line at the end of the run; ``categories``
fixes the order of the line (zeros shown)."""


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print one ``group: N category, M category, ...`` line per group tests recorded."""
    groups: dict[str, tuple[tuple[str, ...], Counter[str]]] = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            if getattr(report, "when", None) != "call":
                continue
            for key, value in getattr(report, "user_properties", ()):
                if key == SUMMARY_PROPERTY:
                    group, categories, category, *count = value
                    entry = groups.setdefault(group, (tuple(categories), Counter()))
                    entry[1][category] += count[0] if count else 1
    for group, (categories, counts) in groups.items():
        terminalreporter.write_line(
            f"{group}: " + ", ".join(f"{counts[c]} {c}" for c in categories))
