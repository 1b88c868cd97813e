"""How long each part of the run took: printed after pytest's summary of failures.

Parts are the directories under tests/ (unit, lint, integration, relay); each
Molecule scenario adds its phases (tests/integration/test_molecule.py records
them). Durations are the sum over tests, so with parallel workers they add up
to more than the wall clock, which is printed too.
"""

from __future__ import annotations

import time
from collections import defaultdict

_started = time.monotonic()
_parts: dict[str, list[float]] = defaultdict(list)
_phases: dict[str, list[tuple[str, float]]] = {}


def pytest_runtest_logreport(report):
    if report.when == "call" or (report.when == "setup" and report.skipped):
        part = report.nodeid.split("/")[1] if report.nodeid.startswith("tests/") else "other"
        _parts[part].append(report.duration)
    for name, value in report.user_properties:
        if name == "phases":
            _phases[report.nodeid.split("[")[-1].rstrip("]")] = value


def pytest_terminal_summary(terminalreporter):
    if not _parts:
        return
    write = terminalreporter.write_line
    terminalreporter.section(f"time per part (wall clock {time.monotonic() - _started:.0f} s)")
    for part, durations in sorted(_parts.items()):
        write(f"{part:<12} {sum(durations):8.1f} s  {len(durations):5d} tests")
    for scenario, phases in sorted(_phases.items()):
        steps = "  ".join(f"{phase} {seconds:.0f}" for phase, seconds in phases)
        write(f"  scenario {scenario:<9} {sum(s for _, s in phases):6.0f} s: {steps}")
