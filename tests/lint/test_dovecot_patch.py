"""The version of our Dovecot build changes whenever its patch does.

Hosts only get a rebuilt Dovecot if its version differs from the installed one:
apt never reinstalls a version it has. So each patch has its own version suffix.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

FILES = Path(__file__).resolve().parents[2] / "roles" / "dovecot" / "files"

# Version suffix → sha256 of remove-idle-notify-delay.patch built with it. After
# changing the patch, raise local_suffix in build-dovecot.sh and add a line here.
RELEASED = {
    "+chatmail1": "ac36f820538106c367509e7a8617cc5acc1e9a91a7d374e6ffdc5961ff6c27ca",
}


def test_the_version_suffix_belongs_to_the_patch():
    script = (FILES / "build-dovecot.sh").read_text()
    [suffix] = re.findall(r"^readonly local_suffix=(\S+)$", script, re.MULTILINE)
    patch = hashlib.sha256((FILES / "remove-idle-notify-delay.patch").read_bytes()).hexdigest()
    assert suffix in RELEASED, f"record the patch built as {suffix}: {patch}"
    assert RELEASED[suffix] == patch, (
        f"the Dovecot patch changed since {suffix} was built from it: relays that have "
        f"{suffix} would keep the old build. Raise local_suffix in build-dovecot.sh and "
        f"record the new suffix with sha256 {patch} in RELEASED."
    )
