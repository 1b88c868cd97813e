"""The lookup chatmail.relay.secret, loaded the way Ansible loads it."""

from __future__ import annotations

import multiprocessing
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
from ansible.errors import AnsibleError, AnsibleLookupError
from ansible.plugins.loader import lookup_loader
from passlib.hash import sha512_crypt

PREFIX = "{SHA512-CRYPT}"


def lookup() -> Any:
    return lookup_loader.get("chatmail.relay.secret")


def host_vars(inventory: Path, host: str = "relay1") -> dict[str, Any]:
    return {"inventory_hostname": host, "inventory_dir": str(inventory)}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_call_creates_later_calls_return_the_same(tmp_path):
    (value,) = lookup().run(["turn"], host_vars(tmp_path), host="relay1")
    path = tmp_path / "secrets" / "relay1" / "turn"
    assert path.read_text() == value + "\n"
    assert len(value) == 32
    assert value.isalnum()
    assert mode(path) == 0o600
    assert mode(tmp_path / "secrets") == 0o700
    assert mode(tmp_path / "secrets" / "relay1") == 0o700
    assert lookup().run(["turn"], host_vars(tmp_path)) == [value]
    assert lookup().run(["turn"], host_vars(tmp_path), length=8) == [value]


def test_host_defaults_to_inventory_hostname(tmp_path):
    (mine,) = lookup().run(["turn"], host_vars(tmp_path, "relay1"))
    (other,) = lookup().run(["turn"], host_vars(tmp_path, "relay1"), host="relay2")
    assert mine != other
    assert (tmp_path / "secrets" / "relay2" / "turn").read_text().strip() == other


def test_several_names_and_options(tmp_path):
    store = tmp_path / "elsewhere"
    values = lookup().run(
        ["a", "b"], host_vars(tmp_path), store=str(store), length=12, alphabet="digits"
    )
    assert [len(v) for v in values] == [12, 12]
    assert all(v.isdigit() for v in values)
    assert [(store / "relay1" / n).read_text().strip() for n in "ab"] == values
    assert not (tmp_path / "secrets").exists()


def test_hash_is_stable_and_verifies(tmp_path):
    (value,) = lookup().run(["metrics"], host_vars(tmp_path))
    (hashed,) = lookup().run(["metrics"], host_vars(tmp_path), hash="sha512_crypt")
    assert hashed.startswith(PREFIX + "$6$")
    assert sha512_crypt.verify(value, hashed.removeprefix(PREFIX))
    assert lookup().run(["metrics"], host_vars(tmp_path), hash="sha512_crypt") == [hashed]
    (fresh,) = lookup().run(["fresh"], host_vars(tmp_path), hash="sha512_crypt")
    stored = (tmp_path / "secrets" / "relay1" / "fresh").read_text().strip()
    assert sha512_crypt.verify(stored, fresh.removeprefix(PREFIX))


@pytest.mark.parametrize(
    ("terms", "options", "message"),
    [
        (["../turn"], {}, r"^chatmail\.relay\.secret: name '\.\./turn' may not begin with '\.'"),
        (["a/b"], {}, r"^chatmail\.relay\.secret: name 'a/b' may not contain '/'"),
        ([""], {}, r"^chatmail\.relay\.secret: name must be a non-empty string, got ''"),
        (["turn"], {"host": "../x"}, r"^chatmail\.relay\.secret: host '\.\./x' may not begin"),
        (["turn"], {"length": 0}, r"^chatmail\.relay\.secret: length must be an integer from 1"),
        (["turn"], {"alphabet": "x"}, r"^chatmail\.relay\.secret: alphabet 'x' needs at least"),
    ],
)
def test_bad_options_are_named(tmp_path, terms, options, message):
    with pytest.raises(AnsibleLookupError, match=message):
        lookup().run(terms, host_vars(tmp_path), **options)
    assert not (tmp_path / "secrets").exists()


def test_unknown_hash_is_refused(tmp_path):
    with pytest.raises(AnsibleError, match=r"Invalid value .md5. for config .hash."):
        lookup().run(["turn"], host_vars(tmp_path), hash="md5")


def test_without_inventory_dir_a_store_is_needed(tmp_path):
    with pytest.raises(AnsibleLookupError, match=r"store is not set .* pass store=<directory>"):
        lookup().run(["turn"], {"inventory_hostname": "localhost", "inventory_dir": None})
    with pytest.raises(AnsibleLookupError, match=r"host must be a non-empty string, got None"):
        lookup().run(["turn"], {}, store=str(tmp_path))


def test_a_hand_made_file_open_to_others_is_warned_about(tmp_path, monkeypatch):
    plugin = lookup()
    warnings: list[str] = []
    monkeypatch.setattr(sys.modules[type(plugin).__module__].display, "warning", warnings.append)
    path = tmp_path / "secrets" / "relay1" / "smtp"
    path.parent.mkdir(parents=True)
    path.write_text("from the provider\n")
    path.chmod(0o640)
    assert plugin.run(["smtp"], host_vars(tmp_path)) == ["from the provider"]
    assert warnings == [
        f"chatmail.relay.secret: {path} is readable by group or others; run chmod 0600 on it"
    ]


def _run_lookup(inventory: str, barrier: Any, results: Any) -> None:
    barrier.wait()
    results.put(lookup().run(["turn"], host_vars(Path(inventory)))[0])


def test_parallel_forks_agree_on_one_value(tmp_path):
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(8)
    results = context.Queue()
    workers = [
        context.Process(target=_run_lookup, args=(str(tmp_path), barrier, results))
        for _unused in range(8)
    ]
    for worker in workers:
        worker.start()
    values = [results.get(timeout=60) for _unused in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert len(set(values)) == 1
    assert (tmp_path / "secrets" / "relay1" / "turn").read_text() == values[0] + "\n"
    assert sorted(p.name for p in (tmp_path / "secrets" / "relay1").iterdir()) == [
        ".lock",
        "turn",
    ]
