#!/usr/bin/env python3
"""Print how to reach a relay running in a local container."""

from __future__ import annotations

import json
import subprocess
import sys


def container_ip(name: str) -> str:
    out = subprocess.run(
        ["docker", "inspect", "--format", "{{json .NetworkSettings.Networks}}", name],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return next(net["IPAddress"] for net in json.loads(out).values() if net.get("IPAddress"))


def main(name: str, domain: str) -> None:
    print()
    print(f"relay {domain} is running in container {name} at {container_ip(name)}")
    print(f"  shell:  docker exec -it {name} bash")
    print(f"  logs:   docker exec {name} journalctl -f")


if __name__ == "__main__":
    main(*sys.argv[1:3])
