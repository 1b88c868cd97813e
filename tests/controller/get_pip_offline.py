"""ansible-test's pip bootstrap for its sanity venvs, offline: pip from the wheelhouse.

ansible-test starts each venv of a sanity test with get-pip.py, which it downloads from
ci-files.testing.ansible.com into ~/.ansible/test/cache unless a copy is there; the
controller container fetches nothing but from PyPI and Debian, and nothing once set up.
Saved under that cache name, this does what get-pip.py does with ansible-test's
arguments: installs the pip they name (pip==VERSION), from its wheel in the wheelhouse
(where /etc/pip.conf sends every pip of the container).
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

WHEELS = Path("/root/.cache/pip/wheelhouse")
# get-pip.py's own options, which pip does not know.
GET_PIP_OPTIONS = frozenset({"--no-setuptools", "--no-wheel"})


def main() -> None:
    args = [arg for arg in sys.argv[1:] if arg not in GET_PIP_OPTIONS]
    version = next(arg.partition("==")[2] for arg in args if arg.startswith("pip=="))
    sys.path.insert(0, str(WHEELS / f"pip-{version}-py3-none-any.whl"))
    sys.argv = ["pip", "install", *args]
    runpy.run_module("pip", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
