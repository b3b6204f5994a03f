"""The queue scheduler: takes due recipients from the store and delivers them.

Postfix's qmgr is the model. The store's schedule index is read only up to
"now" and only for as many entries as the active window has room for
(``queue_active_max``), so a large backlog never loads into memory at once.
Due entries are grouped by message and destination domain; one group is one
attempt, and at most ``queue_destination_concurrency`` attempts run per
domain, at most ``queue_destination_rate`` start per domain per minute.
Fresh mail and retries wait in two lanes of the store; fresh mail is read
first, so a deferred backlog never delays a first attempt. Each attempt's
replies are judged (:mod:`.policy`) and written back in one store write,
together with the reports they call for (bounce, delay notice, success),
so a restart finds every unfinished recipient where it was left.

Time comes from ``clock`` (the reactor; a ``Clock`` in tests). The scheduler
wakes when something is submitted, when an attempt ends, at the next due
time, and at least every ``queue_scan_interval`` seconds. The operator's
changes (``mailserverd queue flush|retry|hold|release|remove``, made from
another process) are counted in the store; the scheduler reads that count
every ``queue_control_interval`` seconds and looks again when it moved.
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger

from mailserverd.delivery.local import new_queue_id
from mailserverd.metrics import Metrics
from mailserverd.queue import dsn, policy
from mailserverd.smtp.client import OutboundRecipient, local_reply
from mailserverd.store.types import QueuedMessage, QueueEntry

log = Logger(namespace="mailserverd.queue")


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


class QueueScheduler:
    """Schedules and runs deliveries of the queue in ``store`` (a
    :class:`~mailserverd.store.queuestore.QueueStore`) through ``attempts``
    (a :class:`~mailserverd.queue.attempt.DeliveryAttempts`).

    ``hostname`` is our name in bounce reports; ``signer`` (a
    :class:`~mailserverd.queue.dkimsign.DKIMSigner`, or None) signs what is
    submitted before it is stored. Counters for tests and operators:
    ``attempts_run``.
    """

    def __init__(self, store: Any, attempts: Any, clock: Any, limits: Any, hostname: str,
                 signer: Any = None):
        self.store = store
        self._signer = signer
        self._attempts = attempts
        self._clock = clock
        self._limits = limits
        self._hostname = hostname
        self._running = False
        self._timer = None
        self._in_flight: set[tuple[str, int]] = set()
        self._per_domain: dict[str, int] = {}
        self._jobs: set[Deferred] = set()
        self._started: dict[str, deque] = {}  # attempt start times per domain, last minute
        self._control_seen = -1
        self._control_timer = None
        self.attempts_run = 0
        #: Counts each recipient's outcome; the composition root sets the server's.
        self.metrics = Metrics()

    # --- lifecycle

    def start(self) -> None:
        """Begin: every unfinished recipient in the store is due at its time (restart resumes)."""
        self._running = True
        if self._signer is not None:
            self._signer.start()
        self._control_seen = self.store.control_count()
        self._control_timer = self._clock.callLater(self._limits.queue_control_interval, self._watch_control)
        self.kick()

    def stop(self) -> None:
        """Start no more attempts. Attempts still running leave their recipients
        as they are in the store (retried after a restart: at most one duplicate)."""
        self._running = False
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._control_timer is not None and self._control_timer.active():
            self._control_timer.cancel()
        self._control_timer = None
        if self._signer is not None:
            self._signer.stop()

    @property
    def active(self) -> int:
        """Recipients in the active window now."""
        return len(self._in_flight)

    def _watch_control(self) -> None:
        """Look at the queue at once when the operator changed it (one LMDB read)."""
        self._control_timer = None
        if not self._running:
            return
        count = self.store.control_count()
        if count != self._control_seen:
            self._control_seen = count
            log.info("queue-changed-by-operator count={count}", count=count)
            self.kick()
        self._control_timer = self._clock.callLater(self._limits.queue_control_interval, self._watch_control)

    # --- intake

    def submit(self, queue_id: str, sender: str, recipients: list[OutboundRecipient], content: bytes,
               envid: str = "", ret: str = "", body: str = "7BIT", smtputf8: bool = False) -> Deferred:
        """Queue ``content`` (DKIM-signed first, when its domain has keys) for
        ``recipients``, first attempt at once. Fires with ``queue_id`` once
        durable (the caller may then say 250); fails with StoreTemporaryError."""
        if self._signer is None:
            return self._store_new(queue_id, sender, recipients, content, envid, ret, body, smtputf8)
        signed = self._signer.sign(content, sender)
        return signed.addCallback(lambda signed_content: self._store_new(
            queue_id, sender, recipients, signed_content, envid, ret, body, smtputf8))

    def _store_new(self, queue_id: str, sender: str, recipients: list[OutboundRecipient], content: bytes,
                   envid: str, ret: str, body: str, smtputf8: bool) -> Deferred:
        now = self._clock.seconds()
        message = QueuedMessage(queue_id=queue_id, sender=sender, arrival=now, size=len(content),
                                recipients=len(recipients), envid=envid, ret=ret, body=body,
                                smtputf8=smtputf8)
        entries = [QueueEntry(queue_id=queue_id, index=index, recipient=rcpt.address, orcpt=rcpt.orcpt,
                              notify=tuple(rcpt.notify), next_attempt=now)
                   for index, rcpt in enumerate(recipients)]
        stored = self.store.enqueue(message, entries, content)
        stored.addCallback(self._queued, message)
        return stored

    def report_delivered(self, queue_id: str, sender: str, recipients: list[OutboundRecipient],
                         content: bytes, envid: str = "") -> Deferred:
        """Queue the success report (RFC 3464 action=delivered) for ``recipients``
        of message ``queue_id``, stored here (final delivery, RFC 3461 §5.2.1).
        Fires once it is durable; fails with StoreTemporaryError."""
        now = self._clock.seconds()
        message = QueuedMessage(queue_id=queue_id, sender=sender, arrival=now, size=len(content),
                                recipients=len(recipients), envid=envid)
        entries = [QueueEntry(queue_id=queue_id, index=index, recipient=rcpt.address, orcpt=rcpt.orcpt,
                              notify=tuple(rcpt.notify), state="delivered", last_attempt=now, relay="local",
                              last_reply="250 2.0.0 delivered to the mailbox")
                   for index, rcpt in enumerate(recipients)]
        report, report_entries, text = self._report("delivered", message, content, entries, now)
        stored = self.store.enqueue(report, report_entries, text)
        return stored.addCallback(self._queued, report)

    def _queued(self, queue_id: str, message: QueuedMessage) -> str:
        log.info("queued id={queue_id} from=<{sender}> recipients={count} size={size}",
                 queue_id=queue_id, sender=message.sender, count=message.recipients, size=message.size)
        self.kick()
        return queue_id

    # --- the loop

    def kick(self, delay: float = 0.0) -> None:
        """Look for due recipients after ``delay`` seconds (sooner if already planned)."""
        if not self._running:
            return
        if self._timer is not None and self._timer.active():
            if self._timer.getTime() <= self._clock.seconds() + delay:
                return
            self._timer.cancel()
        self._timer = self._clock.callLater(max(delay, 0.0), self._scan)

    def _scan(self) -> None:
        self._timer = None
        if not self._running:
            return
        now = self._clock.seconds()
        room = self._limits.queue_active_max - len(self._in_flight)
        wake = now + self._limits.queue_scan_interval
        if room > 0:
            # Fresh mail first, as Postfix's qmgr takes the incoming queue before the
            # deferred one; a quarter of the window stays for retries so they still move.
            fresh = self.store.due(now, room - room // 4, self._in_flight, lane="fresh")
            retry = self.store.due(now, room - len(fresh), self._in_flight, lane="retry")
            wake = min(wake, self._start_due(fresh + retry, now))
        following = self.store.next_due(now)
        if following is not None:
            wake = min(wake, following)
        self.kick(wake - now)

    def _start_due(self, due: list[QueueEntry], now: float) -> float:
        """Group ``due`` by (message, domain) and start what the domain limits
        allow; returns when a rate-limited domain may start again (else infinity)."""
        groups: dict[tuple[str, str], list[QueueEntry]] = {}
        for entry in due:
            groups.setdefault((entry.queue_id, domain_of(entry.recipient)), []).append(entry)
        rate_free = float("inf")
        for (queue_id, domain), entries in groups.items():
            if self._per_domain.get(domain, 0) >= self._limits.queue_destination_concurrency:
                continue  # started again when an attempt to that domain ends
            free_at = self._rate_free_at(domain, now)
            if free_at > now:
                rate_free = min(rate_free, free_at)
                continue
            self._start(queue_id, domain, entries)
        return rate_free

    def _rate_free_at(self, domain: str, now: float) -> float:
        """When ``domain`` may have its next attempt under ``queue_destination_rate``
        (attempts per minute; 0: no limit): ``now`` if at once. Records nothing."""
        rate = self._limits.queue_destination_rate
        if not rate:
            return now
        started = self._started.get(domain)
        while started and started[0] <= now - 60:
            started.popleft()
        if started is not None and not started:
            del self._started[domain]
        return started[0] + 60 if started and len(started) >= rate else now

    def _start(self, queue_id: str, domain: str, entries: list[QueueEntry]) -> None:
        message = self.store.get_message(queue_id)
        content = self.store.get_content(queue_id)
        if message is None or content is None:
            return  # removed meanwhile (by the CLI)
        keys = [(entry.queue_id, entry.index) for entry in entries]
        self._in_flight.update(keys)
        self._per_domain[domain] = self._per_domain.get(domain, 0) + 1
        if self._limits.queue_destination_rate:
            self._started.setdefault(domain, deque()).append(self._clock.seconds())
        self.attempts_run += 1
        job = maybeDeferred(self._attempts.attempt, message, content, domain, entries)
        job.addCallback(self._record, message, content, entries)
        job.addErrback(lambda failure: log.failure("queue-attempt-error id={queue_id}", failure,
                                                   queue_id=queue_id))
        job.addBoth(self._finished, keys, domain, job)
        if not job.called:
            self._jobs.add(job)

    def _finished(self, _: Any, keys: list, domain: str, job: Deferred) -> None:
        self._in_flight.difference_update(keys)
        self._per_domain[domain] -= 1
        if not self._per_domain[domain]:
            del self._per_domain[domain]
        self._jobs.discard(job)
        self.kick()

    # --- outcomes

    def _record(self, outcome: Any, message: QueuedMessage, content: bytes,
                entries: list[QueueEntry]) -> Deferred | None:
        """Judge each entry by its reply, log it, and write the new entries (and
        the reports they call for) in one store write."""
        now = self._clock.seconds()
        missing = local_reply(451, "4.4.0", "no reply for this recipient")
        judged = [policy.judge(entry, message, outcome.replies.get(entry.index, missing), outcome.relay,
                               now, self._limits) for entry in entries]
        for entry in judged:
            self.metrics.outbound_result(entry.state)
            log.info("delivery-attempt id={queue_id} to=<{rcpt}> relay={relay} tls={tls} state={state} "
                     "attempts={attempts} reply={reply!r}", queue_id=entry.queue_id, rcpt=entry.recipient,
                     relay=outcome.relay or "none", tls=outcome.tls or "none", state=entry.state,
                     attempts=entry.attempts, reply=entry.last_reply)
        if not self._running:
            return None  # stopping: the store keeps the old state; retried after restart
        delayed = [entry for entry in judged if policy.wants_delay_report(message, entry, now, self._limits)]
        judged = [replace(entry, delay_reported=True) if entry in delayed else entry for entry in judged]
        by_action: dict[str, list[QueueEntry]] = {"failed": self._failed(message, judged), "delayed": delayed}
        for entry in judged:
            action = policy.success_action(message, entry, outcome.relay, outcome.dsn)
            if action:
                by_action.setdefault(action, []).append(entry)
        reports = [self._report(action, message, content, reported, now)
                   for action, reported in by_action.items() if reported]
        return self.store.update(judged, reports)

    def _failed(self, message: QueuedMessage, judged: list[QueueEntry]) -> list[QueueEntry]:
        """The newly bounced entries the sender is told about (the others are logged)."""
        bounced = [entry for entry in judged if entry.state == "bounced"]
        if not message.sender:
            for entry in bounced:  # RFC 5321 §4.5.5: a bounce that bounces is dropped
                log.warn("bounce-dropped id={queue_id} to=<{rcpt}> reply={reply!r}",
                         queue_id=entry.queue_id, rcpt=entry.recipient, reply=entry.last_reply)
            return []
        return [entry for entry in bounced if policy.wants_failure_report(message, entry)]

    def _report(self, action: str, message: QueuedMessage, content: bytes, reported: list[QueueEntry],
                now: float) -> tuple[QueuedMessage, list[QueueEntry], bytes]:
        """The DSN (message, entries, content) saying ``reported`` were ``action``."""
        retry_until = message.arrival + self._limits.queue_lifetime
        text = dsn.report(action, message, content, reported, self._hostname, now, retry_until)
        queue_id = new_queue_id()
        report = QueuedMessage(queue_id=queue_id, sender="", arrival=now, size=len(text), recipients=1,
                               body="8BITMIME" if any(byte > 127 for byte in text) else "7BIT")
        entry = QueueEntry(queue_id=queue_id, index=0, recipient=message.sender, next_attempt=now)
        log.info("dsn id={queue_id} action={action} for={original} to=<{sender}> recipients={count}",
                 queue_id=queue_id, action=action, original=message.queue_id, sender=message.sender,
                 count=len(reported))
        return report, [entry], text
