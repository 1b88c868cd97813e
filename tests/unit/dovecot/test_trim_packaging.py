"""Trimming Debian's dovecot packaging to the packages a relay installs."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "roles" / "dovecot" / "files" / "trim-packaging.py"
_spec = importlib.util.spec_from_file_location("trim_packaging", SCRIPT)
trim = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(trim)

# Packaging shaped like Debian's: every dropped piece once, among kept ones.
CONTROL = (
    "Source: dovecot\nSection: mail\nBuild-Depends: debhelper-compat (= 13),\n"
    + "".join(f"               {dep},\n" for dep in trim.DROPPED_BUILD_DEPENDS)
    + "               libssl-dev,\n"
    "               libunwind-dev [amd64 arm64],\n"
    "               zlib1g-dev\nStandards-Version: 4.6.1\n\n"
    "Package: dovecot-core\nArchitecture: any\nDescription: core\n .\n more\n\n"
    + "".join(f"Package: {p}\nArchitecture: any\nDepends: x\n\n" for p in trim.DROPPED_PACKAGES)
    + "Package: dovecot-lmtpd\nArchitecture: any\nDescription: lmtp\n"
)
RULES = (
    "#!/usr/bin/make -f\nPIGEONHOLE_DIR=$(CURDIR)/pigeonhole\n"
    "export DEB_BUILD_MAINT_OPTIONS=hardening=+all optimize=+lto\n\n"
    "override_dh_auto_configure:\n\tdh_auto_configure -- \\\n"
    "\t            --with-ssl=openssl \\\n"
    + "".join(f"\t            {option} \\\n" for option in trim.DROPPED_CONFIGURE_OPTIONS)
    + "\t            --with-lua=plugin \\\n"
    "\t            --disable-static\n"
    "\ttouch $(PIGEONHOLE_DIR)/stamp.h.in\n"
    "\tdh_auto_configure -D $(PIGEONHOLE_DIR) -- \\\n"
    "\t        --with-dovecot=../ \\\n"
    "\t\t--disable-static\n\n"
    "override_dh_auto_build:\n\tdh_auto_build\n\tdh_auto_build -D $(PIGEONHOLE_DIR)\n\n"
    "override_dh_auto_install:\n\t$(MAKE) install DESTDIR=$(CORE_DIR)\n"
    "\t$(MAKE) -C $(PIGEONHOLE_DIR) install DESTDIR=$(CORE_DIR)\n"
    "\trm $(CORE_DIR)/etc/dovecot/README\n"
)


def packages(control: str) -> list[str]:
    return [line.split()[1] for line in control.splitlines() if line.startswith("Package:")]


def test_control_keeps_only_what_a_relay_builds():
    control = trim.trim_control(CONTROL)
    assert packages(control) == ["dovecot-core", "dovecot-lmtpd"]
    assert "Description: core\n .\n more\n" in control
    assert (
        "Build-Depends: debhelper-compat (= 13),\n               libssl-dev,\n"
        "               libunwind-dev [amd64 arm64],\n               zlib1g-dev\n"
        "Standards-Version: 4.6.1\n"
    ) in control


def test_rules_build_once_without_lto_plugins_or_pigeonhole():
    rules = trim.trim_rules(RULES)
    assert "optimize=-lto" in rules and "+lto" not in rules
    assert not any(option in rules for option in trim.DROPPED_CONFIGURE_OPTIONS)
    assert "PIGEONHOLE_DIR)" not in rules and "--with-dovecot" not in rules
    assert (
        "\tdh_auto_configure -- \\\n\t            --with-ssl=openssl \\\n"
        "\t            --with-lua=plugin \\\n\t            --disable-static\n\n"
    ) in rules
    assert "\tdh_auto_build\n\n" in rules
    assert "\t$(MAKE) install DESTDIR=$(CORE_DIR)\n\trm $(CORE_DIR)/etc/dovecot/README\n" in rules


@pytest.mark.parametrize(
    ("function", "text", "missing"),
    [
        (
            trim.trim_control,
            CONTROL.replace("Package: dovecot-solr\n", "Package: other\n"),
            "binary packages in debian/control not found: dovecot-solr",
        ),
        (
            trim.trim_control,
            CONTROL.replace("libicu-dev", "libicu-dev2"),
            "build dependencies in debian/control not found: libicu-dev",
        ),
        (
            trim.trim_control,
            CONTROL.replace("Build-Depends:", "Build-Depends-Arch:"),
            "Build-Depends not found",
        ),
        (
            trim.trim_rules,
            RULES.replace("optimize=+lto", "optimize=+all"),
            "optimize=+lto not found in debian/rules",
        ),
        (
            trim.trim_rules,
            RULES.replace("--with-solr \\\n", "--with-solr=yes \\\n"),
            "configure options in debian/rules not found: --with-solr",
        ),
        (trim.trim_rules, RULES.replace("$(PIGEONHOLE_DIR)", "pigeonhole"), "no Pigeonhole step"),
    ],
)
def test_a_changed_packaging_fails_naming_what_is_missing(function, text, missing):
    with pytest.raises(trim.PackagingChanged, match=re.escape(missing)):
        function(text)


def test_the_command_edits_a_source_tree_and_reports_errors(tmp_path):
    debian = tmp_path / "debian"
    debian.mkdir()
    (debian / "control").write_text(CONTROL)
    (debian / "rules").write_text(RULES)
    run = [sys.executable, str(SCRIPT), str(tmp_path)]
    assert subprocess.run(run, check=False).returncode == 0
    assert packages((debian / "control").read_text()) == ["dovecot-core", "dovecot-lmtpd"]
    assert "optimize=-lto" in (debian / "rules").read_text()

    # Run again, the pieces are gone: the second trim refuses instead of guessing.
    again = subprocess.run(run, capture_output=True, text=True, check=False)
    assert again.returncode == 1
    assert again.stderr.startswith("trim-packaging.py: binary packages in debian/control not found")

    usage = subprocess.run(run[:2], capture_output=True, text=True, check=False)
    assert (usage.returncode, usage.stderr) == (2, "usage: trim-packaging.py SOURCE_DIR\n")
