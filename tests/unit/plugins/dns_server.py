"""A tiny authoritative DNS server on a loopback address, for tests of DNS clients.

It answers UDP queries from a dict of records, in a thread of the test process:

    with AuthoritativeServer("example.test.", {"example.test.": {"MX": ["10 example.test."]}}):
        ...

Names outside the zone get REFUSED, unknown names NXDOMAIN and known names without the
type NODATA, both with the zone's SOA in the authority section, like a real server.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Mapping, Sequence
from types import TracebackType

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

Records = Mapping[str, Mapping[str, Sequence[str]]]


class AuthoritativeServer:
    """Serves ``records`` ({name: {type: [presentation values]}}) for ``zone``."""

    def __init__(
        self,
        zone: str,
        records: Records,
        address: str = "127.0.0.1",
        port: int = 0,
        authoritative: bool = True,
        silent: bool = False,
    ) -> None:
        self.zone = dns.name.from_text(zone)
        self.records = {
            dns.name.from_text(name): {
                dns.rdatatype.from_text(rdtype): list(values) for rdtype, values in types.items()
            }
            for name, types in records.items()
        }
        self.authoritative = authoritative
        self.silent = silent
        self.queries: list[dns.message.Message] = []
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind((address, port))
        self.socket.settimeout(0.05)
        self.address, self.port = self.socket.getsockname()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> AuthoritativeServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        self.socket.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                wire, client = self.socket.recvfrom(65535)
            except TimeoutError:
                continue
            query = dns.message.from_wire(wire)
            self.queries.append(query)
            if not self.silent:
                self.socket.sendto(self.answer(query).to_wire(), client)

    def answer(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.flags &= ~dns.flags.RA
        question = query.question[0]
        if not question.name.is_subdomain(self.zone):
            response.set_rcode(dns.rcode.REFUSED)
            return response
        if self.authoritative:
            response.flags |= dns.flags.AA
        types = self.records.get(question.name)
        values = types.get(question.rdtype) if types else None
        if values is None and types and dns.rdatatype.CNAME in types:
            values = types[dns.rdatatype.CNAME]
            rdtype = dns.rdatatype.CNAME
        else:
            rdtype = question.rdtype
        if values:
            response.answer.append(self._rrset(question.name, rdtype, values))
            if rdtype != question.rdtype:
                target = dns.name.from_text(values[0])
                found = self.records.get(target, {}).get(question.rdtype)
                if found:
                    response.answer.append(self._rrset(target, question.rdtype, found))
            return response
        if types is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
        soa = self.records[self.zone][dns.rdatatype.SOA]
        response.authority.append(self._rrset(self.zone, dns.rdatatype.SOA, soa))
        return response

    @staticmethod
    def _rrset(name: dns.name.Name, rdtype: dns.rdatatype.RdataType, values: Sequence[str]):
        return dns.rrset.from_text_list(name, 3600, dns.rdataclass.IN, rdtype, list(values))
