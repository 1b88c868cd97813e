"""Each Molecule scenario, end to end, one phase at a time.

The phases are the scenario's own test sequence (as `molecule test` runs it);
each is a `molecule <phase>` of its own, so the time of each is known and
printed at the end of the run. A failed phase is followed by the scenario's
cleanup and destroy, as `molecule test` does.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
LOGS = ROOT / "build" / "logs"
SCENARIOS = sorted(p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml"))


def phases_of(scenario: str) -> list[str]:
    """The scenario's phases: its own test_sequence, else the shared one."""
    for config in (
        ROOT / "molecule" / scenario / "molecule.yml",
        ROOT / ".config/molecule/config.yml",
    ):
        sequence = (
            (yaml.safe_load(config.read_text()) or {}).get("scenario", {}).get("test_sequence")
        )
        if sequence:
            return sequence
    raise LookupError(f"no test_sequence for scenario {scenario}")


@pytest.mark.scenario
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario(scenario, record_property):
    LOGS.mkdir(parents=True, exist_ok=True)
    log = LOGS / f"molecule-{scenario}.log"
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "NO_COLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "PY_COLORS": "0",
    }
    sequence = phases_of(scenario)
    phases: list[tuple[str, float]] = []
    failed = None
    with log.open("w") as out:

        def run(phase: str) -> bool:
            out.write(f"\n=== molecule {phase} -s {scenario}\n")
            out.flush()
            started = time.monotonic()
            result = subprocess.run(
                ["molecule", phase, "-s", scenario],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                check=False,
            )
            phases.append((phase, time.monotonic() - started))
            return result.returncode == 0

        for index, phase in enumerate(sequence):
            if not run(phase):
                failed = phase
                # As `molecule test`: whatever failed, clean up and destroy.
                for after in ("cleanup", "destroy"):
                    if after in sequence[index + 1 :]:
                        run(after)
                break
    record_property("phases", phases)
    if failed:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-150:])
        pytest.fail(f"molecule {failed} -s {scenario} failed (full log: {log}):\n{tail}")
