"""A small authoritative DNS server for tests: UDP and TCP on one 127.0.0.1 port.

Tests publish the records they need (A, AAAA, MX, TXT for SPF/DMARC/DKIM,
PTR, CNAME...) and point the daemon's ``[dns] resolver`` at ``address``, so no
test ever touches the internet's DNS. Answers carry the AA flag. Unknown names
get NXDOMAIN, a known name without the asked type NOERROR with no answer, and
names passed to :meth:`TestDNSServer.fail` SERVFAIL. Records can be changed
while the server runs (one lock guards the table).

Built on dnspython's message codec with plain sockets served by daemon threads,
so it works the same from a test thread, the reactor thread or a subprocess
that queries it.
"""

from __future__ import annotations

import re
import socket
import struct
import threading

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset

import readiness

TTL = 60
# Negative answers carry an SOA (RFC 2308 §3) as real servers' do, so that
# resolvers can cache them for its minimum TTL. The root is an ancestor of any name.
_NEGATIVE_SOA = dns.rrset.from_text(".", TTL, "IN", "SOA", f"ns.test. hostmaster.test. 1 {TTL} {TTL} {TTL} {TTL}")
_QUOTED = re.compile(rb'"((?:[^"\\]|\\.)*)"')
_ESCAPE = re.compile(rb"\\(\d{3}|.)")
_MAX_CNAME_CHAIN = 8


def _unescape(text: bytes) -> bytes:
    """Undo zone-file escapes (``\\"``, ``\\\\``, ``\\DDD``) in a quoted string."""
    def one(match: re.Match) -> bytes:
        escaped = match.group(1)
        return bytes([int(escaped)]) if escaped.isdigit() else escaped
    return _ESCAPE.sub(one, text)


def _txt_rdata(text: str) -> dns.rdata.Rdata:
    """A TXT rdata from zone-file text; strings over 255 bytes are split.

    ``'"a" "b"'`` is two strings; unquoted text is one string. RFC 7208 §3.3:
    a long record is published as several strings and read back joined.
    """
    raw = text.encode("utf-8")
    strings = [_unescape(m) for m in _QUOTED.findall(raw)] if raw.startswith(b'"') else [raw]
    chunks = [s[i:i + 255] for s in strings for i in range(0, max(len(s), 1), 255)]
    return dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, chunks)


def _key(name: str) -> dns.name.Name:
    return dns.name.from_text(name.rstrip(".") + ".").canonicalize()


class TestDNSServer:
    """An in-process authoritative DNS server on 127.0.0.1 (UDP and TCP).

    Use: ``server = TestDNSServer().start()``; ``server.add(...)``; give
    ``server.address`` to the code under test; ``server.stop()`` at the end.
    ``queries`` counts the questions answered (for tests that check caching).
    """

    __test__ = False  # a helper, not a pytest test class

    def __init__(self) -> None:
        self.port = 0
        self.address = ""
        self.queries = 0
        self._records: dict[dns.name.Name, dict[int, list[dns.rdata.Rdata]]] = {}
        self._failing: set[dns.name.Name] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self._threads: list[threading.Thread] = []

    # --- lifecycle

    def start(self) -> "TestDNSServer":
        """Bind UDP and TCP on the same free port and serve them in daemon threads."""
        for _attempt in range(50):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind(("127.0.0.1", port))
            except OSError:
                udp.close()
                tcp.close()
                continue
            tcp.listen(16)
            break
        else:
            raise RuntimeError("no free port for both UDP and TCP")
        self._udp, self._tcp, self.port = udp, tcp, port
        self.address = f"127.0.0.1:{port}"
        for target in (self._serve_udp, self._serve_tcp):
            thread = threading.Thread(target=target, name=f"test-dns-{target.__name__}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop serving and close both sockets (waits for the threads)."""
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=5)
        for sock in (self._udp, self._tcp):
            if sock is not None:
                sock.close()
        self._threads.clear()

    # --- the record table

    def add(self, name: str, rtype: str, *rdata: str) -> None:
        """Publish records: ``add("example.test", "TXT", '"v=spf1 -all"')``.

        ``rdata`` is zone-file text for ``rtype`` (``"10 mx.example.test."``
        for MX, ``"127.0.0.1"`` for A). Adding to an existing name and type
        appends. Names are case-insensitive; the trailing dot is optional.
        """
        rdtype = dns.rdatatype.from_text(rtype)
        parsed = [
            _txt_rdata(text) if rdtype == dns.rdatatype.TXT
            else dns.rdata.from_text(dns.rdataclass.IN, rdtype, text,
                                 origin=dns.name.root, relativize=False)
            for text in rdata
        ]
        with self._lock:
            self._records.setdefault(_key(name), {}).setdefault(rdtype, []).extend(parsed)

    def fail(self, name: str) -> None:
        """Answer every query for ``name`` with SERVFAIL from now on."""
        with self._lock:
            self._failing.add(_key(name))

    def clear(self) -> None:
        """Forget every record and every failing name."""
        with self._lock:
            self._records.clear()
            self._failing.clear()

    # --- answering

    def answer(self, wire: bytes) -> bytes | None:
        """Return the wire response to one wire query, or ``None`` if unparsable."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response.to_wire()
        question = query.question[0]
        with self._lock:
            self.queries += 1
            self._fill(response, question.name.canonicalize(), question.rdtype)
        try:
            return response.to_wire()
        except dns.exception.DNSException:
            # A record the test published cannot be encoded: say so, stay up.
            failed = dns.message.make_response(query)
            failed.set_rcode(dns.rcode.SERVFAIL)
            return failed.to_wire()

    def _fill(self, response: dns.message.Message, qname: dns.name.Name, rdtype: int) -> None:
        """Put the answer for ``qname``/``rdtype`` into ``response`` (lock held)."""
        name = qname
        for _hop in range(_MAX_CNAME_CHAIN):
            if name in self._failing:
                response.set_rcode(dns.rcode.SERVFAIL)
                return
            types = self._records.get(name)
            if types is None:
                if name == qname:
                    response.set_rcode(dns.rcode.NXDOMAIN)
                    response.authority.append(_NEGATIVE_SOA)  # RFC 2308 §3
                return
            if rdtype in types:
                response.answer.append(dns.rrset.from_rdata_list(name, TTL, types[rdtype]))
                return
            cnames = types.get(dns.rdatatype.CNAME)
            if not cnames or rdtype == dns.rdatatype.CNAME:
                response.authority.append(_NEGATIVE_SOA)  # NODATA, RFC 2308 §2.2
                return
            response.answer.append(dns.rrset.from_rdata_list(name, TTL, cnames))
            name = cnames[0].target.canonicalize()

    def _serve_udp(self) -> None:
        assert self._udp is not None
        while not self._stopping.is_set():
            readable = readiness.readable([self._udp], 0.2)
            if not readable:
                continue
            try:
                wire, peer = self._udp.recvfrom(65535)
            except OSError:
                continue
            reply = self.answer(wire)
            if reply is None:
                continue
            if len(reply) > 512:
                reply = self._truncated(wire)
            self._udp.sendto(reply, peer)

    def _truncated(self, wire: bytes) -> bytes:
        """An empty TC=1 reply, so the client retries over TCP (RFC 1035 §4.2.1)."""
        response = dns.message.make_response(dns.message.from_wire(wire))
        response.flags |= dns.flags.AA | dns.flags.TC
        return response.to_wire()

    def _serve_tcp(self) -> None:
        assert self._tcp is not None
        while not self._stopping.is_set():
            readable = readiness.readable([self._tcp], 0.2)
            if not readable:
                continue
            try:
                conn, _peer = self._tcp.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve_connection, args=(conn,), daemon=True).start()

    def _serve_connection(self, conn: socket.socket) -> None:
        """Answer length-prefixed queries on one TCP connection (RFC 1035 §4.2.2)."""
        conn.settimeout(5)
        with conn:
            while not self._stopping.is_set():
                try:
                    header = self._read_exactly(conn, 2)
                    if header is None:
                        return
                    wire = self._read_exactly(conn, struct.unpack("!H", header)[0])
                    if wire is None:
                        return
                    reply = self.answer(wire)
                    if reply is None:
                        return
                    conn.sendall(struct.pack("!H", len(reply)) + reply)
                except OSError:
                    return

    @staticmethod
    def _read_exactly(conn: socket.socket, count: int) -> bytes | None:
        data = b""
        while len(data) < count:
            chunk = conn.recv(count - len(data))
            if not chunk:
                return None
            data += chunk
        return data
