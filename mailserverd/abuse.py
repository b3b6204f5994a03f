"""Abuse limits shared by every protocol: one set of counters for SMTP, IMAP and POP3.

:class:`AbuseGuard` lives in the :class:`~mailserverd.context.ServerContext`
(``ctx.abuse``) and counts, across all listeners:

- new connections per client network a minute (``connections_per_ip_per_minute``),
  checked where connections are admitted (:mod:`mailserverd.connlimit`, which
  also holds the concurrency limits ``connections_max`` and
  ``connections_per_ip_max``);
- commands per client network (``commands_per_ip_per_second`` with a burst of
  ``commands_burst_per_ip``), checked by each session before it runs a command;
- logged-in sessions per account (``sessions_per_account_max``);
- greylisting of (client network, sender, recipient) on the MX, when
  ``[abuse] greylisting`` is on (:class:`Greylist`).

Failed logins are counted per IP and per account by the
:class:`~mailserverd.auth.throttle.LoginThrottle` of the one Authenticator that
every protocol (HTTP included) asks, so they too are one counter for all.

A client network is an IPv4 address or an IPv6 /64: one host is given a whole
/64, so single IPv6 addresses would let it pass every rate for free. The
rates and greylisting spare ``[abuse] exempt_networks`` (loopback by default,
as Postfix spares $mynetworks); the concurrency limits and the login throttle
apply to everyone.

Every refusal is logged as one line a fail2ban filter can match
(``etc/fail2ban/filter.d/mailserverd.conf``)::

    abuse-limit limit=commands_per_ip_per_second protocol=imap ip=192.0.2.7 user='-'

and counted in ``mailserverd_abuse_refusals_total``. Each protocol answers with
its own temporary error (:data:`REFUSALS`).
"""

from __future__ import annotations

import functools
import ipaddress
from collections import OrderedDict
from typing import Any

from twisted.logger import Logger

from mailserverd.metrics import Metrics
from mailserverd.ratelimit import TokenBuckets

log = Logger(namespace="mailserverd.abuse")

CONNECTION_RATE = "connections_per_ip_per_minute"
COMMAND_RATE = "commands_per_ip_per_second"
SESSIONS = "sessions_per_account_max"
GREYLISTED = "greylisting"


def client_network(ip: str) -> str:
    """The key rates count ``ip`` under: the address for IPv4 (and IPv4-mapped
    IPv6), its /64 for IPv6; anything unparsable as it is."""
    try:
        return _network_of(ipaddress.ip_address(ip))
    except ValueError:
        return ip


def _network_of(address) -> str:
    """:func:`client_network` of a parsed address."""
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def _changed(old: Any, new: Any, *names: str) -> bool:
    """Whether ``old`` is None or differs from ``new`` in any of the attributes ``names``."""
    return old is None or any(getattr(old, name) != getattr(new, name) for name in names)


class Greylist:
    """Greylisting triplets in memory (RFC 6647; postgrey's rules), sans I/O.

    A triplet seen for the first time is deferred; a retry between
    ``delay`` and ``retry_window`` seconds after that first try passes, and a
    passed triplet passes at once for ``pass_lifetime`` seconds after it was
    last seen. At most ``entries_max`` triplets are kept, the one seen longest
    ago forgotten first.
    """

    def __init__(self, clock: Any, delay: float, retry_window: float, pass_lifetime: float,
                 entries_max: int):
        self._clock = clock
        self.delay = delay
        self.retry_window = retry_window
        self.pass_lifetime = pass_lifetime
        self.entries_max = entries_max
        # triplet -> (first try, last seen, passed), least recently seen first
        self._entries: OrderedDict[tuple[str, str, str], tuple[float, float, bool]] = OrderedDict()

    def check(self, network: str, sender: str, recipient: str) -> bool:
        """Whether mail for this triplet may be accepted now; records the try."""
        now = self._clock.seconds()
        triplet = (network, sender.lower(), recipient.lower())
        first, last, passed = self._entries.pop(triplet, (now, now, False))
        if passed and now - last > self.pass_lifetime:
            first, passed = now, False
        elif not passed and now - first > self.retry_window:
            first = now  # retried too late: start again
        if not passed and now - first >= self.delay:
            passed = True
        self._entries[triplet] = (first, now, passed)
        while len(self._entries) > self.entries_max:
            self._entries.popitem(last=False)
        return passed

    def __len__(self) -> int:
        return len(self._entries)


class AbuseGuard:
    """The abuse limits of one server (see the module docstring).

    ``limits`` is the :class:`~mailserverd.limits.Limits`, ``settings`` the
    ``[abuse]`` table (:class:`~mailserverd.config.AbuseConfig`), ``clock``
    provides ``seconds()``. :meth:`configure` applies new ones (a reload);
    counts so far are kept where the rate did not change.
    """

    def __init__(self, clock: Any, limits: Any, settings: Any, metrics: Metrics | None = None):
        self._clock = clock
        self._metrics = metrics if metrics is not None else Metrics()
        self._sessions: dict[str, set[object]] = {}
        self._limits: Any = None
        self.greylist: Greylist | None = None
        self._greylist_settings: tuple = ()
        self.configure(limits, settings)

    def configure(self, limits: Any, settings: Any) -> None:
        """Use ``limits`` and ``settings`` from now on."""
        old = self._limits
        keys_max = limits.abuse_tracked_keys_max
        if _changed(old, limits, "connections_per_ip_per_minute", "abuse_tracked_keys_max"):
            # A minute's worth at once: a client may reconnect in a burst, then waits.
            self._connections = TokenBuckets.per_minute(
                self._clock, limits.connections_per_ip_per_minute,
                limits.connections_per_ip_per_minute, keys_max=keys_max)
        if _changed(old, limits, "commands_per_ip_per_second", "commands_burst_per_ip",
                    "abuse_tracked_keys_max"):
            self._commands = TokenBuckets(self._clock, limits.commands_per_ip_per_second,
                                          limits.commands_burst_per_ip, keys_max=keys_max)
        greylist = (limits.greylist_delay, limits.greylist_retry_window,
                    limits.greylist_pass_lifetime, limits.greylist_entries_max)
        if not settings.greylisting:
            self.greylist = None
        elif self.greylist is None or greylist != self._greylist_settings:
            self.greylist = Greylist(self._clock, *greylist)
        self._greylist_settings = greylist
        self._exempt = tuple(ipaddress.ip_network(text) for text in settings.exempt_networks)
        # Each command asks about its client: its address is parsed once, not per
        # command (made anew here, as the exempt networks may have changed).
        self._client = functools.lru_cache(maxsize=keys_max)(self._classify)
        self._limits = limits

    def _classify(self, ip: str) -> tuple[str, bool]:
        """``(client_network(ip), whether ip is exempt)``."""
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return ip, False
        counted_as = _network_of(address)
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return counted_as, any(address in network for network in self._exempt)

    def exempt(self, ip: str) -> bool:
        """Whether ``ip`` is in ``[abuse] exempt_networks``."""
        return self._client(ip)[1]

    # --- the limits

    def connection_allowed(self, ip: str, protocol: str) -> bool:
        """Count a new connection from ``ip``; False (logged) past the rate."""
        network, exempt = self._client(ip)
        if exempt or not self._connections.take(network):
            return True
        self.refused(CONNECTION_RATE, protocol, ip)
        return False

    def command_allowed(self, ip: str, protocol: str) -> bool:
        """Count one command from ``ip``; False (logged) past the rate."""
        network, exempt = self._client(ip)
        if exempt or not self._commands.take(network):
            return True
        self.refused(COMMAND_RATE, protocol, ip)
        return False

    def session_opened(self, user: str, session: object, ip: str, protocol: str) -> bool:
        """``session`` logged in as ``user``: count it, or refuse (False, logged) when
        the account has ``sessions_per_account_max`` open. Counting the same
        session twice counts it once."""
        open_now = self._sessions.setdefault(user, set())
        if session not in open_now and len(open_now) >= self._limits.sessions_per_account_max:
            if not open_now:
                del self._sessions[user]
            self.refused(SESSIONS, protocol, ip, user)
            return False
        open_now.add(session)
        return True

    def session_closed(self, user: str, session: object) -> None:
        """``session`` of ``user`` ended (idempotent)."""
        open_now = self._sessions.get(user)
        if open_now is not None:
            open_now.discard(session)
            if not open_now:
                del self._sessions[user]

    def sessions(self, user: str) -> int:
        """How many logged-in sessions ``user`` has open."""
        return len(self._sessions.get(user, ()))

    def greylisted(self, ip: str, sender: str, recipient: str) -> bool:
        """Whether mail from ``sender`` to ``recipient`` by ``ip`` must wait (greylisting
        on, not exempt, triplet not passed yet); a deferral is logged."""
        if self.greylist is None or self.exempt(ip):
            return False
        if self.greylist.check(self._client(ip)[0], sender, recipient):
            return False
        self._metrics.abuse_refused("smtp", GREYLISTED)
        log.info("greylisted ip={ip} sender={sender!r} recipient={recipient!r}",
                 ip=ip, sender=sender, recipient=recipient)
        return True

    def refused(self, limit: str, protocol: str, ip: str, user: str = "") -> None:
        """Log and count one refusal by ``limit`` (the fail2ban line)."""
        self._metrics.abuse_refused(protocol, limit)
        log.warn("abuse-limit limit={limit} protocol={protocol} ip={ip} user={user!r}",
                 limit=limit, protocol=protocol, ip=ip, user=user or "-")
