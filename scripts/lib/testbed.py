"""The test bed's systemd container, defined once: the platform in .config/molecule/config.yml.

Molecule creates its scenarios' containers from that platform; scripts and
tests that start relay containers of their own take the same settings from
here, as `docker run` arguments:

    python3 scripts/lib/testbed.py docker-run NAME [RELEASE]   # one argument per line
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import yaml

CONFIG = Path(__file__).resolve().parents[2] / ".config" / "molecule" / "config.yml"


def platform(scenario: str = "${MOLECULE_SCENARIO_NAME}") -> dict:
    """The platform, for a container that stands where Molecule's SCENARIO would."""
    text = CONFIG.read_text().replace("${MOLECULE_SCENARIO_NAME}", scenario)
    return yaml.safe_load(text)["platforms"][0]


def relay_settings() -> dict:
    """The settings of the test bed's relays (the group_vars of chatmail_relays)."""
    config = yaml.safe_load(CONFIG.read_text())
    return config["provisioner"]["inventory"]["group_vars"]["chatmail_relays"]


def image(release: str) -> str:
    """The test bed's image of Debian RELEASE ("12", "13"): the one Dovecot is built in."""
    return relay_settings()["dovecot_build_images"][release]


def docker_run_args(name: str, release: str | None = None) -> list[str]:
    """Arguments of `docker run` for a detached test-bed container NAME (of Debian RELEASE)."""
    spec = platform(name)
    args = ["--detach", "--name", name, "--hostname", name]
    args += [f"--network={network['name']}" for network in spec.get("networks", [])]
    if "cgroupns_mode" in spec:
        args.append(f"--cgroupns={spec['cgroupns_mode']}")
    args += [f"--volume={volume}" for volume in spec.get("volumes", [])]
    args += [f"--tmpfs={path}" for path in spec.get("tmpfs", [])]
    args += [f"--cap-add={capability}" for capability in spec.get("capabilities", [])]
    args += [f"--security-opt={option}" for option in spec.get("security_opts", [])]
    return [*args, image(release) if release else spec["image"], *shlex.split(spec["command"])]


def main(argv: list[str]) -> int:
    if len(argv) not in (3, 4) or argv[1] != "docker-run":
        print("usage: testbed.py docker-run NAME [RELEASE]", file=sys.stderr)
        return 2
    print("\n".join(docker_run_args(*argv[2:])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
