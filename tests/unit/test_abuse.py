"""The shared abuse limits (mailserverd.abuse) and the token buckets under them, on a Clock."""

from __future__ import annotations

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, globalLogPublisher

from mailserverd.abuse import AbuseGuard, Greylist, client_network
from mailserverd.config import AbuseConfig
from mailserverd.connlimit import ConnectionCounter, LimitedFactory
from mailserverd.limits import Limits
from mailserverd.metrics import Metrics
from mailserverd.ratelimit import TokenBuckets

NO_EXEMPTIONS = AbuseConfig(exempt_networks=())


def guard(clock, settings=NO_EXEMPTIONS, **limits) -> AbuseGuard:
    return AbuseGuard(clock, Limits(**limits), settings, Metrics())


@pytest.fixture
def logged():
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def abuse_lines(events) -> list[str]:
    return [event["log_format"].format_map(event) for event in events
            if event.get("log_namespace") == "mailserverd.abuse"]


# --- client networks


@pytest.mark.parametrize("ip, network", [
    ("192.0.2.7", "192.0.2.7"),
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
    ("::ffff:192.0.2.7", "192.0.2.7"),
    ("not an address", "not an address"),
])
def test_a_client_network_is_an_ipv4_address_or_an_ipv6_64(ip, network):
    assert client_network(ip) == network


# --- token buckets


def test_buckets_allow_the_burst_then_refill_at_the_rate():
    clock = Clock()
    buckets = TokenBuckets(clock, per_second=2, burst=3)
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == 1.0  # empty: a second until the next
    assert buckets.take("b") == 0.0  # keys are apart
    clock.advance(0.5)
    assert buckets.take("a") == 0.0
    assert buckets.take("a") >= 1.0


def test_buckets_keep_at_most_keys_max_keys():
    clock = Clock()
    buckets = TokenBuckets(clock, per_second=0.001, burst=1, keys_max=100)
    for n in range(1000):
        buckets.take(f"key{n}")
        assert len(buckets) <= 100
    assert buckets.take("key999") >= 1.0  # a recent key keeps its debt
    assert buckets.take("key0") == 0.0  # the oldest were forgotten


# --- connection and command rates


def test_connection_rate_per_network_triggers_and_recovers(logged):
    clock = Clock()
    abuse = guard(clock, connections_per_ip_per_minute=3)
    assert all(abuse.connection_allowed("2001:db8::1", "imap") for _ in range(3))
    # another address of the same /64 shares the count; another network does not
    assert not abuse.connection_allowed("2001:db8::2", "smtp")
    assert abuse.connection_allowed("2001:db8:0:1::1", "smtp")
    clock.advance(20)  # 3 a minute: one more every 20 s
    assert abuse.connection_allowed("2001:db8::1", "pop3")
    assert not abuse.connection_allowed("2001:db8::1", "pop3")
    assert abuse_lines(logged) == [
        "abuse-limit limit=connections_per_ip_per_minute protocol=smtp ip=2001:db8::2 user='-'",
        "abuse-limit limit=connections_per_ip_per_minute protocol=pop3 ip=2001:db8::1 user='-'",
    ]
    assert logged[-1]["log_level"] is LogLevel.warn


def test_command_rate_allows_a_burst_then_the_sustained_rate():
    clock = Clock()
    abuse = guard(clock, commands_per_ip_per_second=10, commands_burst_per_ip=50)
    assert all(abuse.command_allowed("192.0.2.7", "imap") for _ in range(50))
    assert not abuse.command_allowed("192.0.2.7", "smtp")  # one count for every protocol
    clock.advance(1)
    assert sum(abuse.command_allowed("192.0.2.7", "imap") for _ in range(20)) == 10


def test_exempt_networks_are_spared_the_rates_only():
    clock = Clock()
    abuse = guard(clock, AbuseConfig(exempt_networks=("192.0.2.0/24",)),
                  connections_per_ip_per_minute=1, commands_per_ip_per_second=1,
                  commands_burst_per_ip=1, sessions_per_account_max=1)
    assert all(abuse.connection_allowed("192.0.2.9", "smtp") for _ in range(10))
    assert all(abuse.command_allowed("::ffff:192.0.2.9", "smtp") for _ in range(10))
    assert abuse.connection_allowed("198.51.100.1", "smtp")
    assert not abuse.connection_allowed("198.51.100.1", "smtp")
    # sessions per account count for exempt clients too
    assert abuse.session_opened("alice@example.test", object(), "192.0.2.9", "imap")
    assert not abuse.session_opened("alice@example.test", object(), "192.0.2.9", "imap")


def test_the_default_config_exempts_loopback():
    abuse = guard(Clock(), AbuseConfig())
    assert abuse.exempt("127.0.0.1") and abuse.exempt("::1")
    assert not abuse.exempt("192.0.2.1")


# --- sessions per account


def test_sessions_per_account_trigger_and_recover(logged):
    abuse = guard(Clock(), sessions_per_account_max=2)
    first, second, third = object(), object(), object()
    assert abuse.session_opened("alice@example.test", first, "192.0.2.7", "imap")
    assert abuse.session_opened("alice@example.test", second, "192.0.2.8", "smtp")
    assert abuse.session_opened("alice@example.test", second, "192.0.2.8", "smtp")  # counted once
    assert not abuse.session_opened("alice@example.test", third, "192.0.2.9", "pop3")
    assert abuse.session_opened("bob@example.test", third, "192.0.2.9", "pop3")
    abuse.session_closed("alice@example.test", first)
    abuse.session_closed("alice@example.test", first)  # idempotent
    assert abuse.sessions("alice@example.test") == 1
    assert abuse.session_opened("alice@example.test", third, "192.0.2.9", "imap")
    assert abuse_lines(logged) == [
        "abuse-limit limit=sessions_per_account_max protocol=pop3 ip=192.0.2.9 "
        "user='alice@example.test'"]


def test_closing_every_session_forgets_the_account():
    abuse = guard(Clock())
    session = object()
    abuse.session_opened("alice@example.test", session, "192.0.2.7", "imap")
    abuse.session_closed("alice@example.test", session)
    assert abuse._sessions == {}


# --- greylisting


def test_greylisting_is_off_by_default():
    abuse = guard(Clock())
    assert abuse.greylist is None
    assert not abuse.greylisted("192.0.2.7", "a@example.org", "alice@example.test")


def test_a_triplet_passes_after_the_delay_and_stays_passed():
    clock = Clock()
    greylist = Greylist(clock, delay=300, retry_window=3600, pass_lifetime=86400, entries_max=100)
    assert not greylist.check("192.0.2.7", "A@example.org", "alice@example.test")
    clock.advance(299)
    assert not greylist.check("192.0.2.7", "a@example.org", "alice@example.test")  # too soon
    clock.advance(1)
    assert greylist.check("192.0.2.7", "a@example.org", "alice@example.test")
    assert not greylist.check("192.0.2.7", "a@example.org", "bob@example.test")  # new triplet
    clock.advance(86000)
    assert greylist.check("192.0.2.7", "a@example.org", "alice@example.test")  # seen: renewed
    clock.advance(86401)
    assert not greylist.check("192.0.2.7", "a@example.org", "alice@example.test")  # expired


def test_a_retry_after_the_window_starts_again():
    clock = Clock()
    greylist = Greylist(clock, delay=300, retry_window=3600, pass_lifetime=86400, entries_max=100)
    greylist.check("192.0.2.7", "a@example.org", "alice@example.test")
    clock.advance(3601)
    assert not greylist.check("192.0.2.7", "a@example.org", "alice@example.test")
    clock.advance(300)
    assert greylist.check("192.0.2.7", "a@example.org", "alice@example.test")


def test_greylist_entries_are_bounded():
    clock = Clock()
    greylist = Greylist(clock, delay=1, retry_window=3600, pass_lifetime=86400, entries_max=100)
    for n in range(1000):
        greylist.check("192.0.2.7", f"s{n}@example.org", "alice@example.test")
    assert len(greylist) == 100


def test_the_guard_greylists_by_network_and_spares_exempt_clients():
    clock = Clock()
    abuse = guard(clock, AbuseConfig(exempt_networks=("127.0.0.0/8",), greylisting=True),
                  greylist_delay=60)
    assert abuse.greylisted("2001:db8::1", "a@example.org", "alice@example.test")
    clock.advance(60)
    # the retry comes from another address of the sender's /64: the same triplet
    assert not abuse.greylisted("2001:db8::99", "a@example.org", "alice@example.test")
    assert not abuse.greylisted("127.0.0.1", "b@example.org", "alice@example.test")


def test_configure_keeps_counts_unless_a_rate_changes():
    clock = Clock()
    limits = Limits(commands_per_ip_per_second=1, commands_burst_per_ip=1)
    abuse = AbuseGuard(clock, limits, NO_EXEMPTIONS)
    assert abuse.command_allowed("192.0.2.7", "smtp")
    abuse.configure(limits, NO_EXEMPTIONS)
    assert not abuse.command_allowed("192.0.2.7", "smtp")
    abuse.configure(Limits(commands_per_ip_per_second=1, commands_burst_per_ip=5), NO_EXEMPTIONS)
    assert abuse.command_allowed("192.0.2.7", "smtp")
    abuse.configure(limits, AbuseConfig(exempt_networks=(), greylisting=True))
    assert abuse.greylist is not None


# --- concurrent connections (mailserverd.connlimit)


def test_one_client_over_its_connections_is_an_abuse_line_a_full_server_is_not(logged):
    factory = LimitedFactory(Factory.forProtocol(Protocol), ConnectionCounter(3, 2), "pop3",
                             guard=guard(Clock()))

    def connect(ip):
        transport = StringTransport(peerAddress=IPv4Address("TCP", ip, 40000))
        factory.buildProtocol(transport.getPeer()).makeConnection(transport)
        return transport.value()

    assert [connect("192.0.2.1") for _ in range(2)] == [b"", b""]
    assert connect("192.0.2.1").startswith(b"-ERR [SYS/TEMP]")  # over connections_per_ip_max
    assert connect("192.0.2.2") == b""
    assert connect("192.0.2.3").startswith(b"-ERR [SYS/TEMP]")  # over connections_max
    assert abuse_lines(logged) == [
        "abuse-limit limit=connections_per_ip_max protocol=pop3 ip=192.0.2.1 user='-'"]
    assert [event["log_format"].format_map(event) for event in logged
            if event.get("log_namespace") == "mailserverd.connections"] == [
        "connection-refused protocol=pop3 peer=192.0.2.3 reason=connections_max"]
