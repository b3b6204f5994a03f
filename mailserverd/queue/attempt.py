"""One delivery attempt: a queued message to the recipients it has in one domain.

A local domain (a bounce for a local sender, say) is delivered into the
store; any other goes over SMTP to the domain's hosts (:mod:`.routing`),
each address of each host in turn until one server judges the recipients
(RFC 5321 §5.1: try the next address when a connection cannot be made or
the session fails before the transaction). A failed STARTTLS handshake is
tried once more on the same address in clear text: the TLS policy is
opportunistic (RFC 7435 §3), and a peer with broken TLS must still get mail.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import inlineCallbacks, maybeDeferred, returnValue

from mailserverd.delivery.dns import DNSTempError
from mailserverd.errors import MailError
from mailserverd.queue.routing import RouteError, Router
from mailserverd.smtp.client import (
    ClientCore,
    ClientResult,
    ClientTimeouts,
    OutboundMessage,
    OutboundRecipient,
    PeerReply,
    deliver_message,
    local_reply,
)
from mailserverd.store.types import QueuedMessage, QueueEntry
from mailserverd.tls import ClientTLS


@dataclass(frozen=True)
class AttemptOutcome:
    """What an attempt decided: ``replies`` by entry index, the ``relay``
    (``host[ip]:port``, ``local`` or ``""``), the ``tls`` session used and
    whether the server that judged them offered ``dsn``."""

    replies: dict[int, PeerReply]
    relay: str = ""
    tls: str = ""
    dsn: bool = False


@dataclass(frozen=True)
class OutboundSettings:
    """How to reach other servers: ``port`` (25; tests use a high port),
    ``helo_name``, ``starttls`` (opportunistic), the client ``timeouts``,
    ``connect_timeout`` and the reply limits."""

    port: int
    helo_name: str
    starttls: bool
    timeouts: ClientTimeouts
    connect_timeout: float
    reply_line_max: int
    reply_lines_max: int


class DeliveryAttempts:
    """Runs attempts. ``router`` finds hosts, ``local`` is the
    :class:`~mailserverd.delivery.local.LocalDelivery` for local domains,
    ``is_local(domain)`` says which those are, ``tls_context`` is the client
    TLS context (:func:`mailserverd.tls.build_client_context`)."""

    def __init__(self, reactor: Any, router: Router, local: Any, is_local, settings: OutboundSettings,
                 tls_context: Any):
        self._reactor = reactor
        self._router = router
        self._local = local
        self._is_local = is_local
        self._settings = settings
        self._tls_context = tls_context

    def attempt(self, message: QueuedMessage, content: bytes, domain: str,
                entries: list[QueueEntry]):
        """Fires with an :class:`AttemptOutcome` for ``entries`` (all in ``domain``); never fails."""
        if self._is_local(domain):
            return self._local_attempt(content, entries)
        return self._remote_attempt(message, content, domain, entries)

    @inlineCallbacks
    def _local_attempt(self, content: bytes, entries: list[QueueEntry]):
        replies: dict[int, PeerReply] = {}
        for entry in entries:
            try:
                yield maybeDeferred(self._local.store_queued, entry.recipient, content)
                replies[entry.index] = local_reply(250, "2.0.0", "delivered to the local mailbox")
            except MailError as error:
                replies[entry.index] = local_reply(int(error.code), error.enhanced, error.text)
        returnValue(AttemptOutcome(replies, relay="local"))

    @inlineCallbacks
    def _remote_attempt(self, message: QueuedMessage, content: bytes, domain: str,
                        entries: list[QueueEntry]):
        def everyone(reply: PeerReply, relay: str = "") -> AttemptOutcome:
            return AttemptOutcome({entry.index: reply for entry in entries}, relay=relay)

        try:
            hosts = yield self._router.hosts(domain)
        except RouteError as error:
            returnValue(everyone(error.reply))
        outbound = OutboundMessage(
            sender=message.sender, content=content, body=message.body, smtputf8=message.smtputf8,
            ret=message.ret, envid=message.envid,
            recipients=tuple(OutboundRecipient(entry.recipient, entry.notify, entry.orcpt)
                             for entry in entries))
        last = everyone(local_reply(451, "4.4.3", f"no address found for the hosts of {domain}"))
        for host in hosts:
            try:
                addresses = yield self._router.addresses(host)
            except DNSTempError as error:
                last = everyone(local_reply(451, "4.4.3", f"DNS lookup for {host} failed: {error}"))
                continue
            for address in addresses:
                result = yield self._try_address(outbound, host, address)
                relay = f"{host}[{address}]:{self._settings.port}"
                by_address = {entry.recipient: entry.index for entry in entries}
                outcome = AttemptOutcome(
                    {by_address[rcpt]: reply for rcpt, reply in result.replies.items()},
                    relay=relay, tls=result.tls, dsn=result.dsn)
                if not result.try_next:
                    returnValue(outcome)
                last = outcome
        returnValue(last)

    @inlineCallbacks
    def _try_address(self, outbound: OutboundMessage, host: str, address: str):
        """One address: with STARTTLS when offered, once more in clear text if TLS failed."""
        starttls = self._settings.starttls
        while True:
            result: ClientResult = yield deliver_message(
                self._reactor, address, self._settings.port, self._core(outbound, starttls),
                ClientTLS(self._tls_context, host), self._settings.connect_timeout)
            if not (result.tls_failed and starttls):
                returnValue(result)
            starttls = False

    def _core(self, outbound: OutboundMessage, starttls: bool) -> ClientCore:
        settings = self._settings
        return ClientCore(outbound, settings.helo_name, starttls=starttls, timeouts=settings.timeouts,
                          line_max=settings.reply_line_max, lines_max=settings.reply_lines_max)
