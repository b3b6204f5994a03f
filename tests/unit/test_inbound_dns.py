"""The test DNS server and the resolver the inbound checks use, against each other."""

from __future__ import annotations

import socket

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from mailserverd.delivery.dns import BlockingResolver, DNSTempError


@pytest.fixture
def server(dns_server):
    return dns_server


@pytest.fixture
def resolver(server):
    return BlockingResolver(("127.0.0.1", server.port), timeout=3.0)


def test_address_is_the_resolver_config_value(server):
    assert server.address == f"127.0.0.1:{server.port}"
    assert server.port > 1024


def test_a_and_txt_records_names_case_insensitive(server, resolver):
    server.add("Mail.Example.TEST.", "A", "192.0.2.1", "192.0.2.2")
    server.add("example.test", "TXT", '"v=spf1 -all"')
    assert sorted(resolver.addresses("mail.example.test")) == ["192.0.2.1", "192.0.2.2"]
    assert resolver.txt("EXAMPLE.test.") == [b"v=spf1 -all"]


def test_unknown_name_is_nxdomain_known_name_without_type_is_empty(server):
    server.add("example.test", "A", "192.0.2.1")
    query = dns.message.make_query("nothing.example.test", "A")
    reply = dns.query.udp(query, "127.0.0.1", port=server.port, timeout=3)
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert reply.flags & dns.flags.AA
    reply = dns.query.udp(dns.message.make_query("example.test", "MX"), "127.0.0.1",
                          port=server.port, timeout=3)
    assert reply.rcode() == dns.rcode.NOERROR and not reply.answer
    assert reply.flags & dns.flags.AA


def test_resolver_gives_empty_answers_for_nxdomain_and_nodata(server, resolver):
    server.add("example.test", "A", "192.0.2.1")
    assert resolver.txt("nothing.example.test") == []
    assert resolver.txt("example.test") == []


def test_failing_name_is_servfail_and_a_temporary_error(server, resolver):
    server.add("broken.test", "TXT", '"v=spf1 -all"')
    server.fail("broken.test")
    reply = dns.query.udp(dns.message.make_query("broken.test", "TXT"), "127.0.0.1",
                          port=server.port, timeout=3)
    assert reply.rcode() == dns.rcode.SERVFAIL
    with pytest.raises(DNSTempError):
        resolver.txt("broken.test")


def test_long_txt_is_split_into_strings_and_read_back_joined(server, resolver):
    value = "v=DKIM1; k=rsa; p=" + "A" * 600
    server.add("sel._domainkey.example.test", "TXT", f'"{value}"')
    reply = dns.query.udp(dns.message.make_query("sel._domainkey.example.test", "TXT"),
                          "127.0.0.1", port=server.port, timeout=3)
    strings = reply.answer[0][0].strings if reply.answer else None
    if strings is None:  # the UDP answer was truncated: ask over TCP as a resolver would
        reply = dns.query.tcp(dns.message.make_query("sel._domainkey.example.test", "TXT"),
                              "127.0.0.1", port=server.port, timeout=3)
        strings = reply.answer[0][0].strings
    assert len(strings) == 3 and all(len(s) <= 255 for s in strings)
    assert resolver.txt("sel._domainkey.example.test") == [value.encode()]


def test_large_answers_truncate_over_udp_and_come_whole_over_tcp(server, resolver):
    records = [f'"record {n} {"x" * 200}"' for n in range(6)]
    server.add("big.example.test", "TXT", *records)
    udp = dns.query.udp(dns.message.make_query("big.example.test", "TXT"), "127.0.0.1",
                        port=server.port, timeout=3, ignore_trailing=True)
    assert udp.flags & dns.flags.TC
    assert len(resolver.txt("big.example.test")) == 6  # dnspython retried over TCP


def test_cname_is_followed(server, resolver):
    server.add("alias.example.test", "CNAME", "real.example.test.")
    server.add("real.example.test", "A", "192.0.2.7")
    assert resolver.addresses("alias.example.test") == ["192.0.2.7"]


def test_clear_forgets_records_and_failures(server, resolver):
    server.add("example.test", "A", "192.0.2.1")
    server.fail("broken.test")
    server.clear()
    assert resolver.addresses("example.test") == []
    assert resolver.addresses("broken.test") == []


def test_garbage_datagram_does_not_stop_the_server(server, resolver):
    server.add("example.test", "A", "192.0.2.1")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"\x00garbage", ("127.0.0.1", server.port))
    assert resolver.addresses("example.test") == ["192.0.2.1"]


def test_unreachable_resolver_is_a_temporary_error():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never answers
        port = sock.getsockname()[1]
        with pytest.raises(DNSTempError):
            BlockingResolver(("127.0.0.1", port), timeout=0.5).txt("example.test")


def test_answers_are_cached_for_their_ttl_negative_ones_too(server):
    server.add("cached.example.test", "TXT", '"v=spf1 -all"')
    resolver = BlockingResolver(("127.0.0.1", server.port), 3.0, cache_entries=100)
    assert resolver.txt("cached.example.test") == [b"v=spf1 -all"]
    assert resolver.txt("missing.example.test") == []
    assert resolver.records("cached.example.test", "A") == []
    asked = server.queries
    assert resolver.txt("cached.example.test") == [b"v=spf1 -all"]
    assert resolver.txt("missing.example.test") == []
    assert resolver.records("cached.example.test", "A") == []
    assert server.queries == asked
    uncached = BlockingResolver(("127.0.0.1", server.port), 3.0)
    uncached.txt("cached.example.test")
    assert server.queries == asked + 1


def test_spf_results_are_reused_briefly_and_temperrors_never(server):
    from mailserverd.delivery.spf import SPFCache

    now = [1000.0]
    cache = SPFCache(100, 60, clock=lambda: now[0])
    resolver = BlockingResolver(("127.0.0.1", server.port), 3.0)
    server.add("spf.example.test", "TXT", '"v=spf1 ip4:192.0.2.1 -all"')
    first = cache.check(resolver, "192.0.2.1", "mailfrom", "a@spf.example.test", "h.example.test")
    asked = server.queries
    again = cache.check(resolver, "192.0.2.1", "mailfrom", "A@SPF.example.test", "h.example.test")
    assert (first.result, again.result, server.queries) == ("pass", "pass", asked)
    other = cache.check(resolver, "192.0.2.9", "mailfrom", "a@spf.example.test", "h.example.test")
    assert other.result == "fail" and server.queries > asked
    now[0] += 61
    asked = server.queries
    cache.check(resolver, "192.0.2.1", "mailfrom", "a@spf.example.test", "h.example.test")
    assert server.queries > asked  # expired: evaluated again
    server.fail("broken.example.test")
    for _ in range(2):
        asked = server.queries
        result = cache.check(resolver, "192.0.2.1", "mailfrom", "a@broken.example.test", "h.example.test")
        assert result.result == "temperror" and server.queries > asked
