"""SPF (RFC 7208) for the MAIL FROM and HELO identities, through pyspf.

pyspf evaluates the record (mechanisms, macros, include/redirect, the lookup
and void-lookup limits of RFC 7208 §4.6.4); this module only makes it ask the
configured resolver and turns its outcome into a :class:`SPFResult`.

Why a module global is set: pyspf's ``query.dns`` (which keeps the per-check
cache, CNAME chasing and void-lookup count) calls the module-level function
``spf.DNSLookup`` and offers no per-query hook. Rather than copying that
method, we replace ``spf.DNSLookup`` once, at import, with a dispatcher that
uses the :class:`BlockingResolver` bound to the *current thread* by
:func:`check_identity` and falls back to pyspf's own lookup otherwise, so
other users of pyspf in the process are unaffected and concurrent checks in
different pool threads each use their own resolver.
"""

from __future__ import annotations

import ipaddress
import collections
import re
import threading
import time
from dataclasses import dataclass

import spf as pyspf

from mailserverd.delivery.dns import BlockingResolver, DNSTempError

# RFC 7208 §4.6.4: the whole check SHOULD be limited to at least 20 seconds.
SPF_CHECK_SECONDS = 20

_DOMAIN = re.compile(r"(?=.{1,253}\Z)(?:[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\.)+"
                     r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?\Z")

_thread_state = threading.local()
_library_lookup = pyspf.DNSLookup


@dataclass(frozen=True)
class SPFResult:
    """One SPF evaluation: ``result`` is an RFC 7208 §2.6 result name
    (none, neutral, pass, fail, softfail, temperror, permerror); ``identity``
    is ``"mailfrom"`` or ``"helo"``; ``domain`` the domain that was checked
    (``""`` when there was none); ``explanation`` pyspf's text, for logs."""

    result: str
    identity: str
    domain: str
    explanation: str = ""


def _answers_for_pyspf(resolver: BlockingResolver, name: str, qtype: str) -> list:
    """Lookup results in the shape pyspf's ``DNSLookup`` returns.

    A list of ``((name, qtype), value)``: addresses as text, MX as
    ``(preference, exchange)``, PTR as a name without the root dot, TXT (and
    type 99 SPF) as the record's tuple of strings. Raises ``pyspf.TempError``
    for a temporary DNS failure, which pyspf reports as ``temperror``.
    """
    try:
        records = resolver.records(name, qtype)
    except DNSTempError as error:
        raise pyspf.TempError(f"DNS {error}") from error
    if qtype in ("A", "AAAA"):
        return [((name, qtype), rdata.address) for rdata in records]
    if qtype == "MX":
        return [((name, qtype), (rdata.preference, rdata.exchange)) for rdata in records]
    if qtype == "PTR":
        return [((name, qtype), rdata.target.to_text(True)) for rdata in records]
    if qtype in ("TXT", "SPF"):
        return [((name, qtype), rdata.strings) for rdata in records]
    return []


def _lookup_for_current_thread(name, qtype, strict=True, timeout=None):
    """pyspf's ``DNSLookup`` signature, served by this thread's resolver if any."""
    resolver = getattr(_thread_state, "resolver", None)
    if resolver is None:
        return _library_lookup(name, qtype, strict, timeout)
    return _answers_for_pyspf(resolver, name, qtype)


pyspf.DNSLookup = _lookup_for_current_thread


def is_domain(text: str) -> bool:
    """True if ``text`` is a syntactically valid multi-label domain name."""
    return bool(_DOMAIN.match(text))


def check_identity(resolver: BlockingResolver, client_ip: str, identity: str,
                   mail_from: str, helo: str, time_limit: float = SPF_CHECK_SECONDS) -> SPFResult:
    """Evaluate SPF for one identity of one SMTP transaction.

    Takes the resolver to ask, the client's IP address, ``identity``
    (``"mailfrom"`` or ``"helo"``), the MAIL FROM address (``""`` for the null
    reverse-path) and the HELO/EHLO name. RFC 7208 §2.4: for a null
    reverse-path the MAIL FROM identity is ``postmaster@<HELO>``. RFC 7208
    §2.3: a HELO that is not a domain name (an address literal) gives
    ``none``. Returns an :class:`SPFResult`; never raises for DNS problems
    (they are ``temperror``), nor runs past ``time_limit`` seconds in all
    (RFC 7208 §4.6.4: at least 20). Blocks on DNS: call it from a pool thread only.
    """
    if identity == "helo" or not mail_from:
        sender, domain = "", helo
    else:
        sender, domain = mail_from, mail_from.rpartition("@")[2]
    if not is_domain(domain):
        return SPFResult("none", identity, "", "no domain to check")
    try:
        ipaddress.ip_address(client_ip)
    except ValueError:
        return SPFResult("permerror", identity, domain, f"bad client address {client_ip!r}")
    _thread_state.resolver = resolver
    try:
        query = pyspf.query(i=client_ip, s=sender, h=helo, timeout=resolver.timeout,
                            querytime=time_limit)
        result, _code, explanation = query.check()
    except pyspf.TempError as error:
        result, explanation = "temperror", str(error)
    except pyspf.PermError as error:
        result, explanation = "permerror", str(error)
    finally:
        _thread_state.resolver = None
    return SPFResult(str(result), identity, domain.rstrip(".").lower(), str(explanation))


class SPFCache:
    """Recent SPF results, for a message from the same host and sender as one
    checked moments ago (a mailing list, a notification burst).

    The inputs of an evaluation (client IP, identity, MAIL FROM, HELO) decide
    its result, given the DNS; a result is reused for at most ``seconds``, a
    short time against record TTLs of minutes to hours. pyspf is pure Python
    and the costliest check per message; the cache spares it. Holds at most
    ``entries`` results (oldest dropped first); thread-safe; 0 entries: off.
    """

    def __init__(self, entries: int, seconds: float, clock=None):
        self._entries = entries
        self._seconds = seconds
        self._clock = clock or time.monotonic
        self._results: "collections.OrderedDict[tuple, tuple[float, SPFResult]]" = collections.OrderedDict()
        self._lock = threading.Lock()

    def check(self, resolver: BlockingResolver, client_ip: str, identity: str, mail_from: str,
              helo: str, time_limit: float = SPF_CHECK_SECONDS) -> SPFResult:
        """:func:`check_identity`, or its recent result for the same inputs.
        Temporary errors are never kept."""
        if not self._entries:
            return check_identity(resolver, client_ip, identity, mail_from, helo, time_limit)
        key = (client_ip, identity, mail_from.lower(), helo.lower())
        now = self._clock()
        with self._lock:
            found = self._results.get(key)
            if found is not None and found[0] > now:
                return found[1]
        result = check_identity(resolver, client_ip, identity, mail_from, helo, time_limit)
        if result.result != "temperror":
            with self._lock:
                self._results[key] = (now + self._seconds, result)
                self._results.move_to_end(key)
                while len(self._results) > self._entries:
                    self._results.popitem(last=False)
        return result
