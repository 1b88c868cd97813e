"""The dict-proxy protocol server: parsing, escaping, transactions, robustness."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from chatrelay import dictproto
from chatrelay.dictproto import (
    Change,
    DictServer,
    DictSession,
    split_namespace,
    tab_escape,
    tab_unescape,
)
from dict_client import RunningServer, request
from hypothesis import given, settings
from hypothesis import strategies as st


class MemoryDict(DictServer):
    """A dict kept in memory that records what the protocol layer hands it."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.lookups: list[tuple[str, str]] = []
        self.commits: list[tuple[list[Change], str]] = []
        self.lock = threading.Lock()

    def lookup(self, key: str, user: str) -> str | None:
        self.lookups.append((key, user))
        if key == "shared/explode":
            raise RuntimeError("backend broke")
        return self.data.get(key)

    def iterate(self, path: str, user: str) -> Iterator[tuple[str, str]]:
        if path == "shared/explode/":
            raise RuntimeError("backend broke")
        return iter(sorted((k, v) for k, v in self.data.items() if k.startswith(path)))

    def commit(self, changes: list[Change], user: str) -> bool:
        with self.lock:
            self.commits.append((changes, user))
            if any(key == "shared/refuse" for key, _unused in changes):
                return False
            for key, value in changes:
                if value is None:
                    self.data.pop(key, None)
                else:
                    self.data[key] = value
            return True


@pytest.fixture
def backend() -> MemoryDict:
    return MemoryDict()


@pytest.fixture
def served(backend: MemoryDict) -> Iterator[RunningServer]:
    running = RunningServer(backend)
    yield running
    running.stop()


# --- escaping ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plain", "escaped"),
    [
        ("plain", "plain"),
        ("a\tb", "a\x01tb"),
        ("line\nbreak\r", "line\x01nbreak\x01r"),
        ("\x01", "\x011"),
        ("nul\0", "nul\x010"),
        ("\x01t", "\x011t"),
    ],
)
def test_tab_escape_matches_dovecot(plain: str, escaped: str) -> None:
    assert tab_escape(plain) == escaped
    assert tab_unescape(escaped) == plain


def test_unknown_escape_keeps_the_character_and_trailing_escape_stays() -> None:
    assert tab_unescape("a\x01xb") == "axb"
    assert tab_unescape("end\x01") == "end\x01"


@given(st.text())
def test_tab_escape_round_trips_and_leaves_no_separators(text: str) -> None:
    escaped = tab_escape(text)
    assert not set(escaped) & {"\t", "\n", "\r", "\0"}
    assert tab_unescape(escaped) == text


def test_split_namespace() -> None:
    assert split_namespace("shared/passdb/x") == ("shared", "passdb/x")
    assert split_namespace("priv/quota/storage") == ("priv", "quota/storage")
    assert split_namespace("sharedfoo") == ("", "sharedfoo")


# --- requests over a real socket --------------------------------------------------------


def test_hello_gets_no_reply_and_lookup_finds_or_misses(
    served: RunningServer, backend: MemoryDict
) -> None:
    backend.data["shared/key"] = "value"
    with served.connect() as client:
        client.hello(user="hello@example.org")
        # Had the hello been answered, that answer would be read here instead.
        assert client.ask(request("L", "shared/key", "u@example.org")) == "Ovalue"
        assert client.ask(request("L", "shared/missing", "u@example.org")) == "N"
    assert backend.lookups == [
        ("shared/key", "u@example.org"),
        ("shared/missing", "u@example.org"),
    ]


def test_lookup_without_user_field_uses_the_hello_user(
    served: RunningServer, backend: MemoryDict
) -> None:
    with served.connect() as client:
        client.hello(user="from-hello@example.org")
        assert client.ask(request("L", "shared/k")) == "N"
        assert client.ask(request("L", "shared/k", "")) == "N"
    assert [user for _unused, user in backend.lookups] == ["from-hello@example.org"] * 2


def test_escapes_are_undone_in_requests_and_applied_in_replies(
    served: RunningServer, backend: MemoryDict
) -> None:
    key = "shared/odd\tkey\nwith\x01escapes"
    backend.data[key] = "tab\there\nnewline\x01soh"
    with served.connect() as client:
        client.hello()
        reply = client.ask(request("L", key, "user"))
    assert reply == "Otab\x01there\x01nnewline\x011soh"
    assert backend.lookups == [(key, "user")]


def test_failing_lookup_replies_f_and_the_connection_goes_on(
    served: RunningServer, backend: MemoryDict
) -> None:
    backend.data["shared/ok"] = "yes"
    with served.connect() as client:
        client.hello()
        assert client.ask(request("L", "shared/explode", "u")).startswith("F")
        assert client.ask(request("L", "shared/ok", "u")) == "Oyes"


def test_iterate_returns_rows_then_an_empty_line(
    served: RunningServer, backend: MemoryDict
) -> None:
    backend.data.update({"shared/u/a": "1", "shared/u/b": "two\tparts", "shared/other": "x"})
    with served.connect() as client:
        client.hello()
        client.send(request("I", "0", "0", "shared/u/", "user"))
        assert client.read_rows() == ["Oshared/u/a\t1", "Oshared/u/b\ttwo\x01tparts"]
        client.send(request("I", "1", "1", "shared/u/", "user"))
        assert client.read_rows() == ["Oshared/u/a\t1"]
        client.send(request("I", str(dictproto.ITERATE_FLAG_NO_VALUE), "0", "shared/u/"))
        assert client.read_rows() == ["Oshared/u/a\t", "Oshared/u/b\t"]
        # Dovecot before 2.3 sends no row limit.
        client.send(request("I", "0", "shared/other"))
        assert client.read_rows() == ["Oshared/other\tx"]
        client.send(request("I", "0", "0", "shared/nothing/"))
        assert client.read_rows() == []
        assert client.ask(request("I", "0", "0", "shared/explode/")).startswith("F")
        assert client.ask(request("I", "x", "0", "shared/u/")).startswith("F")
        assert client.ask(request("I", "0")).startswith("F")


def test_transaction_commits_sets_and_unsets_with_the_begin_user(
    served: RunningServer, backend: MemoryDict
) -> None:
    backend.data["shared/gone"] = "old"
    with served.connect() as client:
        client.hello(user="hello-user")
        client.send(
            request("B", "1", "tx-user"),
            request("S", "1", "shared/a", "value\twith tab"),
            request("U", "1", "shared/gone"),
            request("T", "1", "1700000000", "0"),
        )
        assert client.ask(request("C", "1")) == "O1"
        client.send(request("B", "2"), request("S", "2", "shared/b", "2"))
        # The asynchronous commit of Dovecot 2.2 gets its reply tagged, as Dovecot does it.
        assert client.ask(request("D", "2")) == "AO2"
    assert backend.commits == [
        ([("shared/a", "value\twith tab"), ("shared/gone", None)], "tx-user"),
        ([("shared/b", "2")], "hello-user"),
    ]
    assert backend.data == {"shared/a": "value\twith tab", "shared/b": "2"}


def test_rollback_has_no_reply_and_discards_the_transaction(
    served: RunningServer, backend: MemoryDict
) -> None:
    with served.connect() as client:
        client.hello()
        client.send(request("B", "7", "u"), request("S", "7", "shared/x", "1"), request("R", "7"))
        assert client.ask(request("C", "7")).startswith("F7")
        assert client.ask(request("L", "shared/x", "u")) == "N"
    assert backend.commits == []


def test_commit_failures_reply_f_with_the_id(served: RunningServer, backend: MemoryDict) -> None:
    with served.connect() as client:
        client.hello()
        client.send(request("B", "1", "u"), request("S", "1", "shared/refuse", "1"))
        assert client.ask(request("C", "1")).startswith("F1")
        # A broken request inside a transaction gets no reply but fails the commit.
        client.send(request("B", "2", "u"), request("S", "2", "shared/only-a-key"))
        assert client.ask(request("C", "2")).split("\t")[0] == "F2"
        client.send(request("B", "3", "u"), request("A", "3", "shared/counter", "1"))
        assert client.ask(request("C", "3")).split("\t")[0] == "F3"
        assert client.ask(request("C", "99")).split("\t")[0] == "F99"
        assert client.ask(request("D", "98")).split("\t")[0] == "AF98"
    assert [changes for changes, _unused in backend.commits] == [[("shared/refuse", "1")]]


def test_empty_transaction_commits_without_calling_the_backend(
    served: RunningServer, backend: MemoryDict
) -> None:
    with served.connect() as client:
        client.hello()
        client.send(request("B", "5", "u"))
        assert client.ask(request("C", "5")) == "O5"
    assert backend.commits == []


def test_transactions_belong_to_their_connection(
    served: RunningServer, backend: MemoryDict
) -> None:
    with served.connect() as first, served.connect() as second:
        first.hello()
        second.hello()
        first.send(request("B", "1", "first"), request("S", "1", "shared/f", "1"))
        second.send(request("B", "1", "second"), request("S", "1", "shared/s", "2"))
        assert second.ask(request("C", "1")) == "O1"
        assert first.ask(request("C", "1")) == "O1"
        # Transaction 1 is gone on the first connection now, whatever the second does.
        second.send(request("B", "1", "second"))
        assert first.ask(request("C", "1")).startswith("F1")
    assert sorted(backend.commits) == [
        ([("shared/f", "1")], "first"),
        ([("shared/s", "2")], "second"),
    ]


def test_malformed_and_unknown_requests_get_f_and_the_connection_survives(
    served: RunningServer, backend: MemoryDict
) -> None:
    backend.data["shared/k"] = "v"
    with served.connect() as client:
        client.hello()
        assert client.ask(b"") == "F"
        assert client.ask(b"X\tnonsense") == "F"
        assert client.ask(b"\x01t") == "F"
        assert client.ask(b"\xff\xfe not utf-8") == "F"
        # Transaction requests never get replies, even broken ones, so order is kept.
        client.send(request("S", "404", "shared/k", "v"), request("U"), request("B"))
        client.send(request("R", "nope"), b"H")
        assert client.ask(request("L", "shared/k", "u")) == "Ov"


def test_pipelined_requests_are_answered_in_order(
    served: RunningServer, backend: MemoryDict
) -> None:
    backend.data.update({f"shared/{i}": str(i * i) for i in range(20)})
    with served.connect() as client:
        client.hello()
        client.send(*(request("L", f"shared/{i}", "u") for i in range(25)))
        replies = [client.read_line() for _unused in range(25)]
    assert replies == [f"O{i * i}" for i in range(20)] + ["N"] * 5


def test_oversized_lines_are_refused_without_losing_the_connection(
    served: RunningServer, backend: MemoryDict
) -> None:
    backend.data["shared/k"] = "v"
    huge = "x" * (dictproto.MAX_LINE_LENGTH + 10)
    with served.connect() as client:
        client.hello()
        assert client.ask(request("L", "shared/" + huge, "u")) == "F"
        client.send(request("B", "1", "u"), request("S", "1", "shared/k", huge))
        assert client.ask(request("C", "1")).startswith("F1")
        assert client.ask(request("L", "shared/k", "u")) == "Ov"
    assert backend.commits == []


def test_client_hanging_up_mid_line_does_not_disturb_others(
    served: RunningServer, backend: MemoryDict
) -> None:
    backend.data["shared/k"] = "v"
    with served.connect() as quitter:
        quitter.sock.sendall(b"Lshared/k")
    with served.connect() as client:
        client.hello()
        assert client.ask(request("L", "shared/k", "u")) == "Ov"


def test_unexpected_errors_keep_no_reply_commands_silent(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: DictSession, args: list[str]) -> str:
        raise RuntimeError("bug")

    monkeypatch.setattr(DictSession, "_set", broken)
    monkeypatch.setattr(DictSession, "_lookup", broken)
    session = DictSession(MemoryDict())
    assert session.handle_line(b"B1\tu\n") == b""
    assert session.handle_line(b"S1\tk\tv\n") == b""
    assert session.handle_line(b"Lk\tu\n") == b"F\n"


# --- robustness against arbitrary input ------------------------------------------------


def _assert_sane_reply(line: bytes, reply: bytes) -> None:
    """The reply a request line may get, whatever else it contains."""
    command = line[:1].decode("latin-1")
    if command and command in "HBSUATR":
        # Dovecot waits for no answer to these; any reply would shift all later ones.
        assert reply == b""
        return
    assert reply.endswith(b"\n"), reply
    lines = reply[:-1].split(b"\n")
    if command == "I":
        assert lines == [b""] or (len(lines) == 1 and lines[0].startswith(b"F")), reply
    elif command in ("L", "C"):
        assert len(lines) == 1 and lines[0][:1] in (b"O", b"N", b"F"), reply
    elif command == "D":
        assert len(lines) == 1 and lines[0][:2] in (b"AO", b"AF"), reply
    else:
        assert reply == b"F\n"


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_escape_as_exceptions(raw: bytes) -> None:
    session = DictSession(MemoryDict())
    _assert_sane_reply(raw, session.handle_line(raw))
    assert session.handle_line(b"Lshared/none\tu\n") == b"N\n"


protocol_line = st.builds(
    lambda command, fields: command + "\t".join(fields),
    st.sampled_from(list("HLIBSUATCDRXO \x01")),
    st.lists(st.text(alphabet=st.sampled_from("01at\x01\t\\\"'/x9-é\0"), max_size=8), max_size=6),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(protocol_line, min_size=1, max_size=10))
def test_random_protocol_lines_keep_the_session_usable(lines: list[str]) -> None:
    backend = MemoryDict()
    session = DictSession(backend)
    for line in lines:
        raw = line.encode("utf-8", "surrogateescape")
        _assert_sane_reply(raw, session.handle_line(raw))
    backend.data["shared/probe"] = "alive"
    assert session.handle_line(b"Lshared/probe\tu\n") == b"Oalive\n"
