"""DNS lookups against the configured resolver: blocking for the inbound checks,
asynchronous (twisted.names) for outbound routing.

SPF, DKIM, DMARC and DNSBL all look names up through one
:class:`BlockingResolver`: it asks the resolver named in ``[dns] resolver``
(``(ip, port)``), or the system's (``/etc/resolv.conf``) when none is
configured, and gives every lookup the same time limit. Lookups block, so
they run only in the inbound checks' thread pool, never on the reactor thread.

The answer contract is the one the checks need (RFC 7208 §5, RFC 6376 §3.6.2.2,
RFC 7489 §6.6.3): "no such name" and "no record of that type" are both an
empty answer; SERVFAIL, a timeout or an unreachable resolver is
:class:`DNSTempError`, which each check reports as ``temperror``.
"""

from __future__ import annotations

import socket

import dns.exception
import dns.name
import dns.resolver
from twisted.internet.defer import Deferred, DeferredList


class DNSTempError(Exception):
    """The lookup could not be completed now (SERVFAIL, timeout, no resolver)."""


class BlockingResolver:
    """Synchronous lookups against one resolver, with a per-lookup time limit.

    Takes ``address``: ``(ip, port)`` of the resolver to ask, or ``None`` for
    the system's configuration; ``timeout``: seconds allowed for one lookup
    (all retries included); ``cache_entries``: answers kept (dnspython's LRU
    cache, thread-safe; each for its TTL, negative answers for the SOA
    minimum, RFC 2308), 0 for none. Safe to share between threads.

    The cache matters: the checks of one message ask for the same sender
    domain's SPF and DMARC records that the previous message from that
    domain needed, and a busy MX would otherwise wait on each of them.
    """

    def __init__(self, address: tuple[str, int] | None, timeout: float, cache_entries: int = 0):
        self.address = address
        self.timeout = timeout
        self._resolver: dns.resolver.Resolver | None = None
        self._config_error = ""
        try:
            if address is None:
                self._resolver = dns.resolver.Resolver(configure=True)
            else:
                self._resolver = dns.resolver.Resolver(configure=False)
                self._resolver.nameservers = [address[0]]
                self._resolver.port = address[1]
        except dns.resolver.NoResolverConfiguration as error:
            # No resolv.conf: every lookup is a temporary failure, not a crash.
            self._config_error = str(error) or "no resolver configuration"
            return
        self._resolver.timeout = timeout
        self._resolver.lifetime = timeout
        self._resolver.cache = dns.resolver.LRUCache(cache_entries) if cache_entries else None

    def records(self, name: str, rtype: str) -> list:
        """Return the dnspython rdata objects of type ``rtype`` at ``name``.

        Takes an absolute or relative name (treated as absolute: no search
        list). Returns ``[]`` for NXDOMAIN or no data of that type; CNAMEs are
        followed by the resolver. Raises :class:`DNSTempError` on SERVFAIL,
        timeout or a missing resolver. Blocks for up to ``timeout`` seconds.
        """
        if self._resolver is None:
            raise DNSTempError(self._config_error)
        qname = name if name.endswith(".") else name + "."
        try:
            answer = self._resolver.resolve(
                qname, rtype, search=False, raise_on_no_answer=False, lifetime=self.timeout)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.YXDOMAIN):
            return []
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as error:
            raise DNSTempError(f"{rtype} {name}: {error.__class__.__name__}") from error
        except (dns.name.LabelTooLong, dns.name.NameTooLong, dns.name.EmptyLabel,
                dns.name.IDNAException):
            # A name that cannot exist in DNS has no records.
            return []
        except dns.exception.DNSException as error:
            raise DNSTempError(f"{rtype} {name}: {error}") from error
        if answer.rrset is None:
            return []
        return list(answer.rrset)

    def txt(self, name: str) -> list[bytes]:
        """Return each TXT record at ``name`` with its strings concatenated.

        RFC 7208 §3.3 and RFC 6376 §3.6.2.2: a record split into several
        strings is read as their concatenation, without separators. Raises
        :class:`DNSTempError` as :meth:`records` does.
        """
        return [b"".join(rdata.strings) for rdata in self.records(name, "TXT")]

    def addresses(self, name: str, rtype: str = "A") -> list[str]:
        """Return the A (or ``rtype="AAAA"``) addresses at ``name`` as text."""
        return [rdata.address for rdata in self.records(name, rtype)]



class AsyncResolver:
    """Lookups on the reactor through ``twisted.names``, with :class:`BlockingResolver`'s
    answer contract: no such name and no data are both ``[]``; SERVFAIL, a
    refusal or a timeout fail the Deferred with :class:`DNSTempError`.

    Takes the same ``address`` (``(ip, port)`` or ``None`` for
    /etc/resolv.conf) and ``timeout`` (seconds for one lookup), and the reactor.
    """

    def __init__(self, address: tuple[str, int] | None, timeout: float, reactor=None):
        from twisted.names import client

        self.timeout = timeout
        if address is None:
            self._resolver = client.Resolver(resolv="/etc/resolv.conf", reactor=reactor)
        else:
            self._resolver = client.Resolver(servers=[address], reactor=reactor)

    def _records(self, lookup, name: str, rtype: int) -> Deferred:
        from twisted.names import error as names_error

        def answers(result):
            return [record.payload for record in result[0] if record.type == rtype]

        def failed(failure):
            if failure.check(names_error.DNSNameError):
                return []
            raise DNSTempError(f"{name}: {failure.value.__class__.__name__}")

        return lookup(name, timeout=(self.timeout,)).addCallbacks(answers, failed)

    def mx(self, name: str) -> Deferred:
        """Fires with ``[(preference, exchange)]`` (``exchange`` ``""`` for the root, RFC 7505)."""
        from twisted.names import dns as names_dns

        found = self._records(self._resolver.lookupMailExchange, name, names_dns.MX)
        return found.addCallback(lambda records: [
            (record.preference, str(record.name).rstrip(".").lower()) for record in records])

    def addresses(self, name: str) -> Deferred:
        """Fires with the IPv4 then the IPv6 addresses of ``name`` as text; a
        temporary failure of both lookups fails with DNSTempError."""
        from twisted.names import dns as names_dns

        lookups = [
            self._records(self._resolver.lookupAddress, name, names_dns.A).addCallback(
                lambda records: [record.dottedQuad() for record in records]),
            self._records(self._resolver.lookupIPV6Address, name, names_dns.AAAA).addCallback(
                lambda records: [socket.inet_ntop(socket.AF_INET6, record.address) for record in records]),
        ]

        def combine(results):
            found = [address for ok, value in results if ok for address in value]
            errors = [value for ok, value in results if not ok]
            if not found and errors:
                return errors[0]  # the first lookup's failure
            return found

        return DeferredList(lookups, consumeErrors=True).addCallback(combine)
