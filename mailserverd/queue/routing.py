"""MX routing (RFC 5321 §5.1): which hosts to try for a domain, in which order.

:func:`order_exchanges` is the pure rule: MX hosts by preference, shuffled
among equals (§5.1: "randomized"), a null MX (RFC 7505) refused. Router
runs it on answers from the resolver: with no MX record the domain itself is
the host (the implicit MX, §5.1), and a domain with neither MX nor address
records cannot receive mail.
"""

from __future__ import annotations

import random
from typing import Any

from twisted.internet.defer import inlineCallbacks, returnValue

from mailserverd.delivery.dns import DNSTempError
from mailserverd.smtp.client import PeerReply, local_reply


class RouteError(Exception):
    """The domain cannot be routed now (4xx reply) or ever (5xx); ``reply`` says why."""

    def __init__(self, reply: PeerReply):
        super().__init__(reply.text())
        self.reply = reply


def null_mx_reply(domain: str) -> PeerReply:
    # RFC 7505 §4.2: 556 with the enhanced status 5.1.10.
    return local_reply(556, "5.1.10", f"domain {domain} does not accept mail (null MX)")


def order_exchanges(domain: str, records: list[tuple[int, str]], rng: random.Random) -> list[str]:
    """The MX host names in the order to try them.

    ``records`` is ``[(preference, exchange)]``; an exchange of ``""`` is the
    root. Raises RouteError (556 5.1.10) for a null MX: RFC 7505 §3, a
    single record whose exchange is the root.
    """
    if any(not exchange for _, exchange in records):
        if len(records) == 1:
            raise RouteError(null_mx_reply(domain))
        records = [record for record in records if record[1]]  # §3: not valid beside others
    by_preference: dict[int, list[str]] = {}
    for preference, exchange in records:
        hosts = by_preference.setdefault(preference, [])
        if exchange not in hosts:
            hosts.append(exchange)
    ordered: list[str] = []
    for preference in sorted(by_preference):
        hosts = by_preference[preference]
        rng.shuffle(hosts)
        ordered += hosts
    return ordered


class Router:
    """Finds the hosts for a domain through ``resolver`` (:class:`~mailserverd.delivery.dns.AsyncResolver`)."""

    def __init__(self, resolver: Any, rng: random.Random | None = None):
        self.resolver = resolver
        self._rng = rng or random.Random()

    @inlineCallbacks
    def hosts(self, domain: str):
        """Fires with the host names to try for ``domain``; fails with RouteError
        (4.4.3 when DNS fails now, 5.1.2 when the domain has no MX and no
        address, 5.1.10 for a null MX)."""
        try:
            records = yield self.resolver.mx(domain)
            if records:
                returnValue(order_exchanges(domain, records, self._rng))
            addresses = yield self.resolver.addresses(domain)
        except DNSTempError as error:
            raise RouteError(local_reply(451, "4.4.3", f"DNS lookup for {domain} failed: {error}")) from None
        if not addresses:
            raise RouteError(local_reply(550, "5.1.2", f"domain {domain} has no MX or address records"))
        returnValue([domain])  # RFC 5321 §5.1: the implicit MX

    def addresses(self, host: str):
        """Fires with the addresses of ``host`` (IPv4 first); fails with DNSTempError."""
        return self.resolver.addresses(host)
