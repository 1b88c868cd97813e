"""What each role reads, against what its argument spec declares.

A role's `meta/argument_specs.yml` is the one documentation of its
variables. This module finds the variables a role's tasks, handlers, vars,
defaults and templates read (by parsing their Jinja expressions) and reports:

- settings read but not declared: a name starting with `chatmail_` or with
  the role's own prefix that no entry point declares and the role does not
  set itself (vars/main.yml, set_fact, register);
- another role's setting read directly (e.g. `nginx_*` in role tls): shared
  values go through role chatmail's contracts instead;
- a default that disagrees with the spec: each `defaults/main.yml` value is
  the spec's `default`, except templated values, which the spec describes
  without a default, and placeholders of required options; a spec default
  without a value in `defaults/main.yml`; a declared option the role never
  reads;
- a `chatmail_*` declaration outside role chatmail that gives a default or
  another type: role chatmail holds the one default.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
import yaml

SHARED_PREFIX = "chatmail_"
SHARED_ROLE = "chatmail"
UNDECLARED = "which meta/argument_specs.yml does not declare"
# Keys whose values are bare Jinja expressions, not templates.
EXPRESSION_KEYS = {"when", "that", "until", "failed_when", "changed_when"}
READ_PARTS = ("tasks", "handlers", "vars", "defaults", "templates")


class _AnyName(dict):
    """Filters and tests of Ansible and its collections: any name parses."""

    def __contains__(self, name: object) -> bool:
        return True

    def get(self, name: Any, default: Any = None) -> Any:
        return super().get(name) or (lambda *args, **kwargs: None)

    def __missing__(self, name: Any) -> Any:
        return self.get(name)


_ENV = jinja2.Environment(extensions=["jinja2.ext.do", "jinja2.ext.loopcontrols"])
_ENV.filters = _AnyName(_ENV.filters)
_ENV.tests = _AnyName(_ENV.tests)


def template_names(text: str, where: str) -> set[str]:
    """The variables a Jinja template reads; a template that does not parse is an error."""
    try:
        with warnings.catch_warnings():
            # Regular expressions in Jinja string literals ('\.ini$') are the role's business.
            warnings.simplefilter("ignore", DeprecationWarning)
            return set(jinja2.meta.find_undeclared_variables(_ENV.parse(text)))
    except jinja2.TemplateSyntaxError as error:
        raise ValueError(f"{where}: {error.message} in {text[:80]!r}") from error


def _yaml_strings(node: Any, key: str | None = None) -> Iterator[tuple[str | None, str]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _yaml_strings(v, str(k))
    elif isinstance(node, list):
        for v in node:
            yield from _yaml_strings(v, key)
    elif isinstance(node, str):
        yield key, node


def _set_here(node: Any) -> set[str]:
    """Names a task list sets: register, set_fact keys, loop_var."""
    names: set[str] = set()
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("register", "loop_var") and isinstance(v, str):
                names.add(v)
            elif k.endswith("set_fact") and isinstance(v, dict):
                names.update(n for n in v if n != "cacheable")
            names |= _set_here(v)
    elif isinstance(node, list):
        for v in node:
            names |= _set_here(v)
    return names


@dataclass
class RoleReads:
    read: set[str]
    set_here: set[str]


def role_reads(role: Path) -> RoleReads:
    """Every variable a role's files read, and those it sets itself."""
    read: set[str] = set()
    set_here: set[str] = set()
    for part in READ_PARTS:
        for path in sorted((role / part).rglob("*")):
            if not path.is_file():
                continue
            where = str(path.relative_to(role.parent))
            if part == "templates":
                read |= template_names(path.read_text(), where)
                continue
            if path.suffix not in (".yml", ".yaml"):
                continue
            data = yaml.safe_load(path.read_text())
            if part == "vars" and isinstance(data, dict):
                set_here.update(data)
            set_here |= _set_here(data)
            for key, value in _yaml_strings(data):
                if key in EXPRESSION_KEYS and "{{" not in value:
                    read |= template_names("{{ " + value + " }}", where)
                elif "{{" in value or "{%" in value:
                    read |= template_names(value, where)
    return RoleReads(read, set_here)


def spec_options(role: Path) -> dict[str, dict[str, Any]]:
    """The options of all the role's entry points (the first declaration of each)."""
    specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    options: dict[str, dict[str, Any]] = {}
    for entry in specs.values():
        for name, option in (entry.get("options") or {}).items():
            options.setdefault(name, option)
    return options


def _is_template(value: Any) -> bool:
    return any("{{" in s or "{%" in s for _unused, s in _yaml_strings(value))


def check_role(role: Path, roles: list[str]) -> list[str]:
    """Every disagreement between what the role reads or defaults and its spec."""
    name = role.name
    own_prefix = f"{name}_"
    other_prefixes = [f"{r}_" for r in roles if r != name and r != SHARED_ROLE]
    spec = spec_options(role)
    reads = role_reads(role)
    problems: list[str] = []
    for var in sorted(reads.read - reads.set_here):
        foreign = [
            p for p in other_prefixes if var.startswith(p) and not var.startswith(own_prefix)
        ]
        if foreign:
            problems.append(
                f"role {name} reads {var}, a setting of role {foreign[0][:-1]}: "
                "share it through role chatmail"
            )
        elif (var.startswith(SHARED_PREFIX) or var.startswith(own_prefix)) and var not in spec:
            problems.append(
                f"role {name} reads {var}, which meta/argument_specs.yml does not declare"
            )
    defaults_file = role / "defaults" / "main.yml"
    defaults = (yaml.safe_load(defaults_file.read_text()) if defaults_file.exists() else None) or {}
    for var, value in defaults.items():
        option = spec.get(var)
        if option is None:
            problems.append(f"role {name} defaults {var}, {UNDECLARED}")
        elif _is_template(value):
            if "default" in option:
                problems.append(
                    f"role {name}: {var} is computed in defaults/main.yml; "
                    f"its spec must describe it, not give default {option['default']!r}"
                )
        elif "default" not in option and option.get("required"):
            continue  # a placeholder the operator must replace (chatmail_domain)
        elif option.get("default") != value:
            problems.append(
                f"role {name}: {var} defaults to {value!r} in defaults/main.yml "
                f"but to {option.get('default')!r} in meta/argument_specs.yml"
            )
    for var, option in spec.items():
        if "default" in option and var not in defaults and not var.startswith(SHARED_PREFIX):
            problems.append(f"role {name}: spec default of {var} is missing from defaults/main.yml")
        elif var not in reads.read and var not in defaults:
            problems.append(f"role {name} declares {var} but never reads it")
    return problems


def check_shared(roles_dir: Path, roles: list[str]) -> list[str]:
    """`chatmail_*` declarations outside role chatmail: no default, role chatmail's type."""
    shared = spec_options(roles_dir / SHARED_ROLE)
    problems: list[str] = []
    for name in roles:
        if name == SHARED_ROLE:
            continue
        for var, option in spec_options(roles_dir / name).items():
            if not var.startswith(SHARED_PREFIX):
                continue
            if var not in shared:
                problems.append(f"role {name} declares {var}, which role chatmail does not")
                continue
            if "default" in option:
                problems.append(f"role {name} gives {var} a default; role chatmail holds it")
            if option.get("type") != shared[var].get("type"):
                problems.append(
                    f"role {name} declares {var} as {option.get('type')}, "
                    f"role chatmail as {shared[var].get('type')}"
                )
    return problems


def check_roles(roles_dir: Path) -> list[str]:
    roles = sorted(
        p.name for p in roles_dir.iterdir() if (p / "meta" / "argument_specs.yml").exists()
    )
    problems: list[str] = []
    for name in roles:
        problems += check_role(roles_dir / name, roles)
    return problems + check_shared(roles_dir, roles)
