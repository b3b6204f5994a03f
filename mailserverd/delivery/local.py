"""Local delivery: which local users a recipient reaches, and storing a message for them.

:class:`LocalDelivery` is what the SMTP server calls for RCPT (``check_recipient``)
and after the end of DATA (``deliver``). It adds the ``Received:`` trace header
(RFC 5321 §4.4) and hands the message to the store; its Deferred fires only
after the store has committed, so a 250 is never sent for mail that is not
durable (RFC 5321 §4.2.5). Store errors become :class:`MailError` replies here,
at the protocol edge.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import format_datetime
from typing import Any

from twisted.internet.defer import Deferred, FirstError, gatherResults, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailserverd.delivery import authresults
from mailserverd.delivery.checks import Envelope, Verdict
from mailserverd.errors import MailError, fresh
from mailserverd.mail.address import AddressError, canonical, split
from mailserverd.metrics import Metrics
from mailserverd.store.errors import OverQuota, StoreError, StoreFull

log = Logger(namespace="mailserverd.smtp")

#: Where mail the spam score marks as junk goes (a default mailbox, RFC 6154 \\Junk).
JUNK = "Junk"

RELAY_DENIED = MailError("550", "5.7.1", "Relay access denied")
TEMPORARY_FAILURE = MailError("451", "4.3.0", "Local error in processing, try again later", temporary=True)
# RFC 5321 §4.2.3 452 "insufficient system storage", RFC 3463 X.3.1 "mail system full".
STORE_FULL = MailError("452", "4.3.1", "Insufficient system storage, try again later", temporary=True)
BAD_RECIPIENT = MailError("501", "5.1.3", "Bad recipient address")
# RFC 3463 X.2.2 as a temporary failure: the user can make room (Dovecot's
# quota_full_tempfail); the sender's MTA retries instead of bouncing at once.
MAILBOX_FULL = MailError("452", "4.2.2", "Mailbox full", temporary=True)
NO_OUTBOUND = MailError("451", "4.3.0", "Delivery to other domains is not available yet, try again later",
                        temporary=True)

#: The metrics' ``reason`` for each refusal; another temporary one is ``error``,
#: another permanent one (the inbound checks' reply) ``checks``.
REFUSAL_REASONS = {
    RELAY_DENIED: "relay_denied", MAILBOX_FULL: "mailbox_full", STORE_FULL: "store_full",
    BAD_RECIPIENT: "bad_address",
}


def refusal_reason(error: BaseException) -> str:
    """The metrics' ``reason`` label for a refusal (see :data:`REFUSAL_REASONS`)."""
    if isinstance(error, MailError):
        return REFUSAL_REASONS.get(error) or ("error" if error.temporary else "checks")
    return "error"


@dataclass(frozen=True)
class ClientInfo:
    """Who handed us the message, for the ``Received:`` header (RFC 5321 §4.4).

    ``helo`` is the HELO/EHLO name as sent; ``ip`` the peer's address;
    ``reverse_name`` its verified reverse DNS name or ``""`` when unknown;
    ``protocol`` the RFC 3848 ``with`` keyword (SMTP, ESMTP, ESMTPS...);
    ``tls`` the TLS version and cipher (``"TLSv1.3 with cipher X (256/256 bits)"``)
    or ``""``; ``authenticated_user`` the SMTP AUTH identity or ``""``.
    """

    helo: str
    ip: str
    reverse_name: str = ""
    protocol: str = "ESMTP"
    tls: str = ""
    authenticated_user: str = ""


@dataclass(frozen=True)
class DeliveryResult:
    """A message that is durably stored: ``queue_id`` (also in the 250 reply),
    the ``users`` it reached, and its stored ``size`` (Received: included)."""

    queue_id: str
    users: tuple[str, ...]
    size: int


def authenticated_verdict(raw: bytes, authserv_id: str, user: str) -> Verdict:
    """Mail from an authenticated client: no SPF/DKIM/DMARC or spam checks, an
    ``auth=pass smtp.auth=user`` result (RFC 8601 §2.7.4) instead; forged
    results claiming ``authserv_id`` are removed as for any mail (§5)."""
    field = authresults.format_field(
        authserv_id, [authresults.MethodResult("auth", "pass", (("smtp.auth", user),))])
    message = authresults.prepend_fields(authresults.remove_claiming(raw, authserv_id), [field])
    return Verdict(message=message, action="deliver", score=0.0, reply=None, results={"auth": "pass"})


def new_queue_id() -> str:
    """A short random id naming one accepted message in replies and logs."""
    return secrets.token_hex(6).upper()


# Characters kept in header values we copy from the client (HELO name):
# anything else could break the Received: syntax or inject a header.
_UNSAFE_HEADER_TEXT = re.compile(r"[^A-Za-z0-9.\-:\[\]_]")


# An address from our own directory, kept readable (UTF-8 letters too) but never
# able to break out of the comment it goes in.
_UNSAFE_ADDRESS_TEXT = re.compile(r"[^\w.@+\-]")


def _all_of(steps: list[Deferred]) -> Deferred:
    """A Deferred for all of ``steps``: fails with the first failure itself."""
    done = gatherResults(steps, consumeErrors=True)
    return done.addErrback(lambda failure: failure.value.subFailure if failure.check(FirstError) else failure)


def _header_safe(text: str) -> str:
    return _UNSAFE_HEADER_TEXT.sub("_", text)[:255] or "unknown"


def _address_literal(ip: str) -> str:
    """``[192.0.2.1]`` or ``[IPv6:2001:db8::1]`` (RFC 5321 §4.1.3 address-literal)."""
    try:
        parsed = ipaddress.ip_address(ip)
    except ValueError:
        return "[unknown]"
    if parsed.version == 6:
        return f"[IPv6:{parsed.compressed}]"
    return f"[{parsed}]"


class LocalDelivery:
    """Recipient checks and final delivery into the local store.

    ``store`` implements ``Directory.resolve``/``get_domain``/``get_user``/
    ``get_alias`` and ``MailStore.deliver`` (see :mod:`mailserverd.store.interface`);
    ``hostname`` names this server in ``Received:``; ``clock`` (the reactor,
    or a ``Clock`` in tests) gives the time for its date. ``delimiter`` is the
    sub-address separator (``"+"``; ``""`` turns it off). ``checks`` is the
    inbound pipeline (:class:`mailserverd.delivery.checks.InboundChecks`) run
    on mail from other MTAs, or ``None`` to run none. ``outbound`` is the
    outbound queue (:class:`mailserverd.queue.scheduler.QueueScheduler`)
    that takes recipients in other domains, or ``None`` (they get 451).
    ``metrics`` (:class:`~mailserverd.metrics.Metrics`) counts recipients
    refused, messages received, refused and delivered.
    """

    def __init__(self, store: Any, hostname: str, clock: Any, delimiter: str = "+",
                 checks: Any = None, outbound: Any = None, metrics: Metrics | None = None):
        self._metrics = metrics if metrics is not None else Metrics()
        self._store = store
        self._hostname = hostname
        self._clock = clock
        self._delimiter = delimiter
        self._checks = checks
        self.outbound = outbound

    def stop(self) -> None:
        """Stop the inbound checks' threads (the server is stopping)."""
        if self._checks is not None:
            self._checks.stop()

    def use_checks(self, checks: Any) -> Any:
        """Run ``checks`` on mail received from now on (a reload); return the
        previous ones, whose running checks still finish (the caller stops them)."""
        previous, self._checks = self._checks, checks
        return previous

    def check_recipient(self, address: str, remote_allowed: bool = False, size: int = 0) -> list[str]:
        """The canonical local users that mail to ``address`` reaches.

        ``[]`` means the domain is local but nobody has that address (the
        caller answers 550 5.1.1). An address in another domain, when
        ``remote_allowed`` and there is an outbound queue, reaches itself
        through the queue: ``[address]`` (see :meth:`deliver`). Raises
        MailError: 452 4.2.2 when every user it reaches is at its quota, or
        would pass it with a message of ``size`` octets (MAIL's SIZE=,
        RFC 1870; temporary: they can make room); 550 5.7.1 when the domain
        is not local and ``remote_allowed`` is false (the MX never relays),
        451 4.3.0 when it is true but there is no outbound queue; 501 for an
        address that does not canonicalise; 451 when the directory cannot be read.
        Each refusal (``[]`` too) is counted.
        """
        try:
            users = self._recipient_users(address, remote_allowed, size)
        except MailError as error:
            self._metrics.recipient_rejected(refusal_reason(error))
            raise
        if not users:
            self._metrics.recipient_rejected("unknown_user")
        return users

    def _recipient_users(self, address: str, remote_allowed: bool, size: int) -> list[str]:
        """:meth:`check_recipient` without the counting."""
        try:
            key = canonical(address)
            _, domain = split(key)
        except AddressError:
            raise fresh(BAD_RECIPIENT) from None
        try:
            if self._store.get_domain(domain) is None:
                if remote_allowed and self.outbound is not None:
                    return [key]
                raise fresh(NO_OUTBOUND if remote_allowed else RELAY_DENIED)
            users = list(self._store.resolve(key, self._delimiter))
            if users and all(self._at_quota(user, size) for user in users):
                raise fresh(MAILBOX_FULL)  # RFC 3463 X.2.2, decided per recipient
            return users
        except StoreError as error:
            log.warn("recipient-check address={address} error={error!r}", address=key, error=error)
            raise fresh(TEMPORARY_FAILURE) from error

    def _at_quota(self, address: str, size: int) -> bool:
        user = self._store.get_user(address)
        return bool(user and user.quota and self._store.used_bytes(address) + max(size, 1) > user.quota)

    def sender_allowed(self, user: str, sender: str) -> bool:
        """Whether authenticated ``user`` may send as ``sender`` (submission, RFC 6409 §6.1).

        Allowed: the null sender, the user's own address, its sub-addresses
        (``user+tag``), and aliases that lead to the user; not catch-alls
        (Postfix's reject_sender_login_mismatch with explicit login maps).
        """
        if not sender:
            return True
        try:
            key = canonical(sender)
        except AddressError:
            return False
        local, _, domain = key.rpartition("@")
        if user in (key, f"{local.partition(self._delimiter)[0]}@{domain}" if self._delimiter else key):
            return True
        try:
            return self._store.get_alias(key) is not None and user in self._store.resolve(key)
        except StoreError:
            return False

    def received_header(self, client: ClientInfo, queue_id: str, recipients: list[str]) -> bytes:
        """The ``Received:`` field we prepend (RFC 5321 §4.4, RFC 5322 §3.6.7), folded, CRLF-ended.

        ``for <address>`` is given only for a single recipient, so that one
        recipient's copy does not list the others (Bcc).
        """
        tcp_info = f"({_header_safe(client.reverse_name) if client.reverse_name else 'unknown'} " \
                   f"{_address_literal(client.ip)})"
        when = format_datetime(datetime.fromtimestamp(self._clock.seconds(), timezone.utc))
        lines = [f"Received: from {_header_safe(client.helo)} {tcp_info}"]
        if client.tls:
            lines.append(f"\t(using {client.tls})")  # as Postfix writes it
        if client.authenticated_user:
            lines.append(f"\t(Authenticated sender: {_UNSAFE_ADDRESS_TEXT.sub('_', client.authenticated_user)})")
        lines.append(f"\tby {self._hostname} (mailserverd) with {client.protocol} id {queue_id}")
        if len(recipients) == 1:
            lines.append(f"\tfor <{recipients[0]}>; {when}")
        else:
            lines[-1] += ";"
            lines.append(f"\t{when}")
        return ("\r\n".join(lines) + "\r\n").encode("utf-8")

    def deliver(self, sender: str, recipients: list[str], users: list[str], raw: bytes,
                client: ClientInfo, envelope: Any = None) -> "Deferred[DeliveryResult]":
        """Run the inbound checks on ``raw`` (CRLF lines, dot-unstuffed), then
        store it in each user's INBOX (or Junk, as the checks decide).

        ``sender`` is the reverse-path (``""`` for ``<>``), ``recipients``
        the canonical RCPT addresses, ``users`` the local accounts they
        resolved to; a "user" in another domain is a recipient for the
        outbound queue, which takes the message in the same step (both
        durable before the Deferred fires; its queue id is the one in the
        reply). ``envelope`` (the SMTP Transaction: ``ret``, ``envid``,
        ``body``, ``smtputf8``, ``options`` per recipient) gives the queue
        the DSN and body parameters. Prepends ``Received:`` and the checks' headers
        (Authentication-Results, X-Spam-*); mail from an authenticated client
        gets an ``auth=pass`` Authentication-Results instead of the checks.

        Returns a Deferred that fires with a :class:`DeliveryResult` after the
        store has durably committed, or fails with MailError: the checks'
        rejection (550 5.7.1), 452 4.2.2 when every user is over quota,
        452 4.3.1 when the store is full, 451 4.3.0 otherwise. Logs one
        ``delivery`` line either way.
        """
        queue_id = new_queue_id()
        received = self.received_header(client, queue_id, recipients)
        verdicts: list[Verdict] = []
        checked = maybeDeferred(self._check, sender, recipients, raw, client, users)
        checked.addCallback(lambda verdict: verdicts.append(verdict) or verdict)
        checked.addCallback(self._store_checked, received, queue_id, users, sender, envelope)
        checked.addErrback(self._to_mail_error, queue_id)
        checked.addBoth(self._log_delivery, queue_id, sender, recipients, len(received) + len(raw),
                        verdicts)
        checked.addBoth(self._count_delivery, bool(client.authenticated_user))
        return checked

    def _check(self, sender: str, recipients: list[str], raw: bytes, client: ClientInfo,
               users: list[str] = ()) -> Any:
        """The inbound pipeline's verdict on ``raw`` (a Deferred), or a plain one without checks;
        ``users`` are classified each against their own spam model."""
        if self._checks is None:
            return Verdict(message=raw, action="deliver", score=0.0, reply=None, results={})
        if client.authenticated_user:
            return authenticated_verdict(raw, self._checks.settings.authserv_id,
                                         client.authenticated_user)
        return self._checks.check(raw, Envelope(client_ip=client.ip, helo=client.helo,
                                                mail_from=sender, recipients=tuple(recipients),
                                                users=tuple(users)))

    def _store_checked(self, verdict: Any, received: bytes, queue_id: str, users: list[str],
                       sender: str = "", envelope: Any = None) -> "Deferred[DeliveryResult]":
        """Store the checked message as the verdict says (reject raises its reply):
        local users into the store, other domains into the outbound queue."""
        if verdict.action == "reject":
            raise verdict.reply
        message = received + verdict.message
        local, remote = self._split_remote(users)
        steps = []
        if local:
            stored = self._store_local(verdict, received, queue_id, local)
            steps.append(stored.addCallback(self._report_success, queue_id, sender, message, envelope))
        if remote:
            steps.append(self._enqueue(queue_id, sender, remote, message, envelope))
        return _all_of(steps).addCallback(lambda _: DeliveryResult(queue_id, tuple(users), len(message)))

    def _store_local(self, verdict: Any, received: bytes, queue_id: str, local: list[str]) -> Deferred:
        """Deliver to the local users, those whose verdicts match in one delivery
        (one blob); a user the spam classifier judged apart gets its own X-Spam-*
        fields and mailbox (Verdict.by_user). Fires once every group is durable."""
        groups: dict[tuple[bytes, str], list[str]] = {}
        for user in local:
            own = verdict.for_user(user)
            groups.setdefault((own.message, JUNK if own.action == "junk" else "INBOX"), []).append(user)
        steps = []
        for (checked, mailbox), group in groups.items():
            stored = maybeDeferred(self._store.deliver, group, received + checked, None, mailbox)
            steps.append(stored.addCallback(self._check_results, queue_id, group, len(received) + len(checked)))
        return steps[0] if len(steps) == 1 else _all_of(steps)

    def _report_success(self, result: Any, queue_id: str, sender: str, message: bytes,
                        envelope: Any) -> Any:
        """Once stored: queue a success report for the local recipients that asked
        for one (NOTIFY=SUCCESS; RFC 3461 §5.2.1, final delivery is ours to
        report). Passes ``result`` on once the report is durable too."""
        options = getattr(envelope, "options", None) or {}
        if not sender or self.outbound is None:
            return result
        from mailserverd.smtp.client import OutboundRecipient

        asked = [OutboundRecipient(address, tuple(option.notify), option.orcpt)
                 for address, option in options.items()
                 if "SUCCESS" in option.notify and self._store.get_domain(split(address)[1]) is not None]
        if not asked:
            return result
        reported = self.outbound.report_delivered(queue_id, sender, asked, message,
                                                  envid=getattr(envelope, "envid", ""))
        return reported.addCallback(lambda _: result)

    def _split_remote(self, users: list[str]) -> tuple[list[str], list[str]]:
        """``users`` as (local accounts, addresses in other domains for the queue)."""
        if self.outbound is None:
            return list(users), []
        local, remote = [], []
        for user in users:
            (local if self._store.get_domain(split(user)[1]) is not None else remote).append(user)
        return local, remote

    def _enqueue(self, queue_id: str, sender: str, remote: list[str], message: bytes,
                 envelope: Any) -> Deferred:
        """Hand ``message`` for ``remote`` to the outbound queue (fires once durable)."""
        from mailserverd.smtp.client import OutboundRecipient

        options = getattr(envelope, "options", {}) or {}
        recipients = [OutboundRecipient(address, tuple(getattr(options.get(address), "notify", ())),
                                        getattr(options.get(address), "orcpt", ""))
                      for address in remote]
        return self.outbound.submit(
            queue_id, sender, recipients, message, envid=getattr(envelope, "envid", ""),
            ret=getattr(envelope, "ret", ""), body=getattr(envelope, "body", "7BIT"),
            smtputf8=getattr(envelope, "smtputf8", False))

    def store_queued(self, recipient: str, raw: bytes) -> Deferred:
        """Deliver a message from the outbound queue (a bounce to a local sender)
        into ``recipient``'s INBOX, without the inbound checks. Fires with None
        once durable; fails with MailError (550 5.1.1 for nobody, as
        :meth:`check_recipient` and :meth:`deliver` otherwise)."""
        users = self.check_recipient(recipient)
        if not users:
            raise MailError("550", "5.1.1", "No such user here")
        stored = maybeDeferred(self._store.deliver, users, raw, None, "INBOX")
        stored.addCallback(self._check_results, "queue", users, len(raw))
        stored.addErrback(self._to_mail_error, "queue")
        return stored.addCallback(lambda _: None)

    def _check_results(self, results: dict, queue_id: str, users: list[str], size: int) -> DeliveryResult:
        """Turn the store's per-user outcome into one result for the whole DATA.

        In this foundation stage there are no per-recipient replies after DATA
        (that needs LMTP-style replies, or accepting and bouncing), so a
        message is acknowledged only if every user got it: one OverQuota for
        all users -> 452 4.2.2; any other mix of failures -> 451 4.3.0, even
        though some users may already hold the message (a retry may then
        duplicate it for them, which RFC 5321 §4.2.5 prefers to losing it).
        """
        failures = {user: outcome for user, outcome in results.items() if isinstance(outcome, Exception)}
        missing = [user for user in users if user not in results]
        self._metrics.messages_delivered(len(results) - len(failures))
        if not failures and not missing:
            return DeliveryResult(queue_id, tuple(users), size)
        for user, error in failures.items():
            log.warn("delivery-failure id={queue_id} user={user} error={error!r}",
                     queue_id=queue_id, user=user, error=error)
        if not missing and len(failures) == len(users) and all(
                isinstance(error, OverQuota) for error in failures.values()):
            raise fresh(MAILBOX_FULL)
        if any(isinstance(error, StoreFull) for error in failures.values()):
            raise fresh(STORE_FULL)
        raise fresh(TEMPORARY_FAILURE)

    def _to_mail_error(self, failure: Failure, queue_id: str) -> Failure:
        """Let MailError through; a StoreError becomes 451; anything else is logged, then 451."""
        if failure.check(MailError):
            return failure
        if failure.check(StoreFull):
            return Failure(STORE_FULL)
        if not failure.check(StoreError):
            log.failure("delivery-error id={queue_id}", failure, queue_id=queue_id)
        return Failure(TEMPORARY_FAILURE)

    def _count_delivery(self, outcome: Any, authenticated: bool) -> Any:
        """Count a message received or refused after DATA; pass ``outcome`` on."""
        if isinstance(outcome, Failure):
            self._metrics.message_rejected(refusal_reason(outcome.value))
        else:
            self._metrics.message_received(authenticated)
        return outcome

    def _log_delivery(self, outcome: Any, queue_id: str, sender: str, recipients: list[str],
                      size: int, verdicts: list[Verdict]) -> Any:
        """Write the one ``delivery`` line, with the checks' results; pass ``outcome`` on."""
        if isinstance(outcome, Failure):
            error = outcome.value
            result = f"{error.code} {error.enhanced}" if isinstance(error, MailError) else "error"
        else:
            result = "ok"
        checks = verdicts[0].results if verdicts else {}
        log.info(
            "delivery id={queue_id} from=<{sender}> to={recipients} size={size} result={result} "
            "spf={spf} dkim={dkim} dmarc={dmarc} score={score} action={action}",
            queue_id=queue_id, sender=sender, recipients=",".join(recipients), size=size, result=result,
            spf=checks.get("spf", "-"), dkim=",".join(checks.get("dkim", [])) or "-",
            dmarc=checks.get("dmarc", "-"), score=verdicts[0].score if verdicts else "-",
            action=verdicts[0].action if verdicts else "-",
        )
        return outcome
