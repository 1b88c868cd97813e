"""How long each part of the run took: printed after pytest's summary of failures.

Parts are the directories under tests/ (unit, lint, controller, integration,
relay); each Molecule scenario adds its phases (tests/integration/test_molecule.py
records them). Durations are the sum over tests, their fixtures' setup and
teardown included (tests/controller's container, say), so with parallel workers
they add up to more than the wall clock, which is printed too. A test may note
what it ran on (user property ``ran_on``); the notes are printed after the parts.
"""

from __future__ import annotations

import time
from collections import defaultdict

_started = time.monotonic()
_seconds: dict[str, float] = defaultdict(float)
_tests: dict[str, int] = defaultdict(int)
_phases: dict[str, list[tuple[str, float]]] = {}
_notes: dict[str, str] = {}


def pytest_runtest_logreport(report):
    part = report.nodeid.split("/")[1] if report.nodeid.startswith("tests/") else "other"
    _seconds[part] += report.duration
    if report.when == "call" or (report.when == "setup" and report.skipped):
        _tests[part] += 1
    for name, value in report.user_properties:
        if name == "phases":
            _phases[report.nodeid.split("[")[-1].rstrip("]")] = value
        elif name == "ran_on":
            _notes[report.nodeid] = value


def pytest_terminal_summary(terminalreporter):
    if not _tests:
        return
    write = terminalreporter.write_line
    terminalreporter.section(f"time per part (wall clock {time.monotonic() - _started:.0f} s)")
    for part, count in sorted(_tests.items()):
        write(f"{part:<12} {_seconds[part]:8.1f} s  {count:5d} tests")
    for scenario, phases in sorted(_phases.items()):
        steps = "  ".join(f"{phase} {seconds:.0f}" for phase, seconds in phases)
        write(f"  scenario {scenario:<9} {sum(s for _unused, s in phases):6.0f} s: {steps}")
    for nodeid, note in sorted(_notes.items()):
        write(f"{nodeid.split('/')[1]} ran on {note}")
