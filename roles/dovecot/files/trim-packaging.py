#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Trim Debian's dovecot packaging to what a chatmail relay installs.

Debian builds every binary package of the source: SQL, LDAP, Kerberos and
full-text-search plugins, Pigeonhole (Sieve), debug symbols, all with link-time
optimisation. A relay installs dovecot-core, -imapd and -lmtpd. This drops the
plugin packages together with the configure options and build dependencies
that only they need, the Pigeonhole build, and LTO, so the build compiles the
Dovecot tree once at -O2. The packages that stay are Debian's own, made by
Debian's rules; those whose programs the core tree builds anyway (pop3d,
submissiond, auth-lua) and dovecot-dev (the ABI version the others depend on)
stay too, so no file moves into dovecot-core.

Usage: trim-packaging.py SOURCE_DIR   (edits debian/control and debian/rules)

Any expected piece that is missing fails the build, naming it: a newer Debian
packaging needs this script looked at again.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

DROPPED_PACKAGES = (
    "dovecot-gssapi",
    "dovecot-ldap",
    "dovecot-lucene",
    "dovecot-managesieved",
    "dovecot-mysql",
    "dovecot-pgsql",
    "dovecot-sieve",
    "dovecot-solr",
    "dovecot-sqlite",
)
DROPPED_CONFIGURE_OPTIONS = (
    "--with-gssapi=plugin",
    "--with-icu",
    "--with-ldap=plugin",
    "--with-lucene",
    "--with-mysql",
    "--with-pgsql",
    "--with-solr",
    "--with-sql=plugin",
    "--with-sqlite",
)
DROPPED_BUILD_DEPENDS = (
    "default-libmysqlclient-dev",
    "krb5-multidev",
    "libclucene-dev",
    "libexpat-dev",
    "libexttextcat-dev",
    "libicu-dev",
    "libldap2-dev",
    "libpq-dev",
    "libsqlite3-dev",
    "libstemmer-dev",
)
LTO_ON, LTO_OFF = "optimize=+lto", "optimize=-lto"
PIGEONHOLE = "$(PIGEONHOLE_DIR)"


class PackagingChanged(Exception):
    """Debian's packaging no longer looks the way this script expects."""


def _missing(what: str, names: set[str]) -> None:
    if names:
        raise PackagingChanged(f"{what} not found: {', '.join(sorted(names))}")


def trim_control(text: str) -> str:
    stanzas = text.strip("\n").split("\n\n")
    source, binaries = stanzas[0], stanzas[1:]
    kept, dropped = [], set()
    for stanza in binaries:
        name = re.match(r"Package:\s*(\S+)", stanza)
        if name and name.group(1) in DROPPED_PACKAGES:
            dropped.add(name.group(1))
        else:
            kept.append(stanza)
    _missing("binary packages in debian/control", set(DROPPED_PACKAGES) - dropped)

    field = re.search(r"^Build-Depends:(.*(?:\n[ \t].*)*)", source, re.MULTILINE)
    if not field:
        raise PackagingChanged("Build-Depends not found in debian/control")
    depends = [d.strip() for d in field.group(1).split(",") if d.strip()]
    left = [d for d in depends if d.split()[0] not in DROPPED_BUILD_DEPENDS]
    _missing(
        "build dependencies in debian/control",
        set(DROPPED_BUILD_DEPENDS) - {d.split()[0] for d in depends},
    )
    source = source.replace(field.group(0), "Build-Depends: " + ",\n               ".join(left))
    return "\n\n".join([source, *kept]) + "\n"


def _logical_lines(text: str) -> list[str]:
    """Makefile lines with their backslash continuations joined."""
    lines, current = [], ""
    for line in text.splitlines(keepends=True):
        current += line
        if not line.rstrip("\n").endswith("\\"):
            lines.append(current)
            current = ""
    if current:
        lines.append(current)
    return lines


def trim_rules(text: str) -> str:
    if LTO_ON not in text:
        raise PackagingChanged(f"{LTO_ON} not found in debian/rules")
    text = text.replace(LTO_ON, LTO_OFF)

    found = set()
    for option in DROPPED_CONFIGURE_OPTIONS:
        pattern = re.compile(rf"^[ \t]+{re.escape(option)} \\\n", re.MULTILINE)
        text, count = pattern.subn("", text)
        if count:
            found.add(option)
    _missing("configure options in debian/rules", set(DROPPED_CONFIGURE_OPTIONS) - found)

    lines = _logical_lines(text)
    kept = [line for line in lines if PIGEONHOLE not in line]
    if len(kept) == len(lines):
        raise PackagingChanged(f"no Pigeonhole step ({PIGEONHOLE}) found in debian/rules")
    return "".join(kept)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: trim-packaging.py SOURCE_DIR", file=sys.stderr)
        return 2
    debian = Path(argv[1]) / "debian"
    try:
        for name, trim in (("control", trim_control), ("rules", trim_rules)):
            path = debian / name
            path.write_text(trim(path.read_text()))
    except (OSError, PackagingChanged) as error:
        print(f"trim-packaging.py: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
