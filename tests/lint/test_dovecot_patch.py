"""The version of our Dovecot build changes whenever what it is built from does.

Hosts only get a rebuilt Dovecot if its version differs from the installed one:
apt never reinstalls a version it has. So each patch, together with the
trimming of Debian's packaging, has its own version suffix.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

FILES = Path(__file__).resolve().parents[2] / "roles" / "dovecot" / "files"
INPUTS = ("remove-idle-notify-delay.patch", "trim-packaging.py")

# Version suffix → sha256 of the INPUTS, concatenated, built with it. After
# changing either, raise local_suffix in build-dovecot.sh and add a line here.
RELEASED = {
    "+chatmail2": "922ea7c11590a5b9901daa3885177aa05f4d6781f285cb3eb08d100302c72d85",
}


def test_the_version_suffix_belongs_to_what_is_built():
    script = (FILES / "build-dovecot.sh").read_text()
    [suffix] = re.findall(r"^readonly local_suffix=(\S+)$", script, re.MULTILINE)
    digest = hashlib.sha256(b"".join((FILES / name).read_bytes() for name in INPUTS)).hexdigest()
    assert suffix in RELEASED, f"record the build {suffix}: {digest}"
    assert RELEASED[suffix] == digest, (
        f"{' or '.join(INPUTS)} changed since {suffix} was built from them: relays that "
        f"have {suffix} would keep the old build. Raise local_suffix in build-dovecot.sh "
        f"and record the new suffix with sha256 {digest} in RELEASED."
    )
