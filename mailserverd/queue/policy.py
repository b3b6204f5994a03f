"""What an attempt's reply does to a queue entry: the retry and bounce rules, sans I/O.

RFC 5321 §4.5.4.1: a temporary failure is retried, first after a while
(``queue_retry_min``), then at growing intervals (doubling, as Postfix's
qmgr, up to ``queue_retry_max``), until the recipient has waited
``queue_lifetime``; then it bounces. A 5xx reply bounces at once (§4.2.1);
each recipient is judged on its own reply (§3.3, RCPT replies are per
recipient).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from mailserverd.smtp.client import PeerReply
from mailserverd.store.types import QueuedMessage, QueueEntry


def retry_delay(attempts: int, retry_min: float, retry_max: float) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt (1 = the first)."""
    return min(retry_max, retry_min * (2 ** min(max(attempts - 1, 0), 32)))


def judge(entry: QueueEntry, message: QueuedMessage, reply: PeerReply, relay: str,
          now: float, limits: Any) -> QueueEntry:
    """The entry after an attempt that ended with ``reply`` from ``relay`` at ``now``.

    2xx: delivered; 5xx: bounced; anything else deferred to the next retry
    time, or bounced once the message is older than ``limits.queue_lifetime``
    (the reply text then says so).
    """
    attempts = entry.attempts + 1
    common = dict(attempts=attempts, last_attempt=now, relay=relay, last_reply=reply.text())
    if reply.kind == "delivered":
        return replace(entry, state="delivered", **common)
    if reply.kind == "bounced":
        return replace(entry, state="bounced", **common)
    if now - message.arrival >= limits.queue_lifetime:
        days = limits.queue_lifetime / 86400
        common["last_reply"] = f"{reply.text()} (delivery time expired: gave up after {days:g} days)"
        return replace(entry, state="bounced", **common)
    delay = retry_delay(attempts, limits.queue_retry_min, limits.queue_retry_max)
    return replace(entry, state="deferred", next_attempt=now + delay, **common)


def wants_failure_report(message: QueuedMessage, entry: QueueEntry) -> bool:
    """Whether a bounced ``entry`` is reported to the sender (RFC 3461 §4.1, §6.2).

    Never for the null sender (RFC 5321 §4.5.5: a bounce is not bounced);
    not when NOTIFY was given without FAILURE (NEVER included).
    """
    if not message.sender:
        return False
    return not entry.notify or "FAILURE" in entry.notify


def wants_delay_report(message: QueuedMessage, entry: QueueEntry, now: float, limits: Any) -> bool:
    """Whether a deferred ``entry`` now gets its one delay notice (RFC 3461 §4.1).

    Once it has waited ``limits.queue_delay_warning`` seconds (0: never),
    unless it had one already, the sender is null, or NOTIFY was given
    without DELAY (without NOTIFY, delays are reported: §4.1 leaves the
    default to us, and a sender waiting hours wants to know).
    """
    warning = limits.queue_delay_warning
    if not warning or entry.delay_reported or entry.state != "deferred" or not message.sender:
        return False
    if entry.notify and "DELAY" not in entry.notify:
        return False
    return now - message.arrival >= warning


def success_action(message: QueuedMessage, entry: QueueEntry, relay: str, peer_dsn: bool) -> str:
    """The RFC 3464 action of the success report a delivered ``entry`` gets, or ``""``.

    Only for NOTIFY=SUCCESS (RFC 3461 §4.1): ``delivered`` when we stored
    it ourselves, ``relayed`` when the next server lacks DSN; none when it
    has DSN, since the report is then that server's to send (§5.2.2).
    """
    if not message.sender or "SUCCESS" not in entry.notify or entry.state != "delivered":
        return ""
    if relay == "local":
        return "delivered"
    return "" if peer_dsn else "relayed"
