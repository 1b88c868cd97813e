"""Each role's argument spec declares what the role reads, with its defaults."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import role_variables

UNDECLARED = role_variables.UNDECLARED
ROLES = Path(__file__).resolve().parents[2] / "roles"


def test_every_role_declares_what_it_reads():
    assert role_variables.check_roles(ROLES) == []


@pytest.fixture
def roles(tmp_path: Path) -> Path:
    """A copy of the collection's roles, to break one of them."""
    copy = tmp_path / "roles"
    shutil.copytree(ROLES, copy)
    return copy


def append(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as out:
        out.write(text)


def replace_once(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_an_undeclared_setting_in_a_template_is_reported(roles):
    append(
        roles / "postfix/templates/etc/postfix/main.cf.j2", "smtpd_banner = {{ postfix_banner }}\n"
    )
    assert role_variables.check_roles(roles) == [f"role postfix reads postfix_banner, {UNDECLARED}"]


def test_an_undeclared_shared_setting_in_a_condition_is_reported(roles):
    append(
        roles / "turn/tasks/main.yml",
        "\n- name: Say hello\n  ansible.builtin.debug:\n    msg: hello\n"
        "  when: chatmail_privacy_mail | length > 0\n",
    )
    assert role_variables.check_roles(roles) == [
        f"role turn reads chatmail_privacy_mail, {UNDECLARED}"
    ]


def test_another_roles_setting_is_reported(roles):
    append(roles / "nginx/templates/etc/nginx/nginx.conf.j2", "# {{ postfix_queue_lifetime }}\n")
    assert role_variables.check_roles(roles) == [
        "role nginx reads postfix_queue_lifetime, a setting of role postfix: "
        "share it through role chatmail"
    ]


def test_what_a_role_sets_itself_is_not_a_setting(roles):
    append(
        roles / "turn/tasks/main.yml",
        "\n- name: Count\n  ansible.builtin.set_fact:\n    turn_counted: 1\n"
        "\n- name: Show\n  ansible.builtin.debug:\n    msg: '{{ turn_counted }}'\n",
    )
    assert role_variables.check_roles(roles) == []


def test_a_default_that_disagrees_with_the_spec_is_reported(roles):
    replace_once(
        roles / "postfix/defaults/main.yml",
        "postfix_queue_lifetime: 2d",
        "postfix_queue_lifetime: 5d",
    )
    assert role_variables.check_roles(roles) == [
        "role postfix: postfix_queue_lifetime defaults to '5d' in defaults/main.yml "
        "but to '2d' in meta/argument_specs.yml"
    ]


def test_an_undeclared_default_is_reported(roles):
    append(roles / "turn/defaults/main.yml", "turn_colour: blue\n")
    problems = role_variables.check_roles(roles)
    assert problems == [f"role turn defaults turn_colour, {UNDECLARED}"]


def test_a_second_default_of_a_shared_setting_is_reported(roles):
    replace_once(
        roles / "tls/meta/argument_specs.yml",
        "      chatmail_acme_webroot:\n        type: path\n",
        "      chatmail_acme_webroot:\n        type: path\n        default: /srv/acme\n",
    )
    assert role_variables.check_roles(roles) == [
        "role tls gives chatmail_acme_webroot a default; role chatmail holds it"
    ]


def test_a_declared_option_nothing_reads_is_reported(roles):
    replace_once(
        roles / "turn/meta/argument_specs.yml",
        "    options:\n",
        "    options:\n      turn_colour:\n        type: str\n        description: Unused.\n",
    )
    assert role_variables.check_roles(roles) == [
        "role turn declares turn_colour but never reads it"
    ]


def test_a_template_that_does_not_parse_is_an_error(roles):
    append(roles / "turn/templates/broken.j2", "{{ turn_realm \n")
    with pytest.raises(ValueError, match=r"turn/templates/broken\.j2"):
        role_variables.check_roles(roles)
