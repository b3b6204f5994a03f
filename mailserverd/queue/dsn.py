"""Delivery status notifications (RFC 3464), sans I/O.

:func:`report` builds the message for one RFC 3464 §2.3.3 action:
``failed`` (a bounce), ``delayed`` (still being retried), ``delivered``
(final delivery here) or ``relayed`` (passed to a server without DSN, RFC
3461 §5.2.2). It is a multipart/report (RFC 6522) with a text part for
people, a message/delivery-status part (RFC 3464 §2: one per-message block,
then one block per recipient) and the original message's header
(text/rfc822-headers), or the whole message in a failure report when the
sender asked for RET=FULL (RFC 3461 §4.3). It goes from the null
reverse-path (RFC 5321 §4.5.5), so it is never bounced itself.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timezone
from email.utils import format_datetime

from mailserverd.store.types import QueuedMessage, QueueEntry

#: How much of a message's header a report quotes at most (the rest is cut).
HEADER_QUOTE_MAX = 64 * 1024


def _date(when: float) -> str:
    return format_datetime(datetime.fromtimestamp(when, timezone.utc))


def _clean(text: str) -> str:
    """A value safe inside a header field: no CR, LF or other control characters."""
    return "".join(char if char >= " " and char != "\x7f" else " " for char in text)


#: Per action: the Subject and what the text part tells people.
_WORDING = {
    "failed": ("Undelivered Mail Returned to Sender",
               "Your message could not be delivered to one or more recipients."),
    "delayed": ("Delayed Mail (still being retried)",
                "Your message could not be delivered yet to one or more recipients;\r\n"
                "the mail system keeps trying, and will tell you if it gives up."),
    "delivered": ("Successful Mail Delivery Report",
                  "Your message was delivered to the recipients below."),
    "relayed": ("Successful Mail Delivery Report",
                "Your message was passed on to the recipients' servers, which do not\r\n"
                "send delivery reports, so this is the last report you get."),
}


def status_of(entry: QueueEntry) -> str:
    """The RFC 3463 status for a failed recipient: the reply's own 5.x.x code,
    4.4.7 (delivery time expired) for a temporary one that ran out of time,
    else 5.0.0."""
    words = entry.last_reply.split(" ")
    code = words[1] if len(words) > 1 else ""
    parts = code.split(".")
    if len(parts) == 3 and all(part.isdigit() for part in parts) and parts[0] in "245":
        return code if parts[0] == "5" else "4.4.7"
    return "5.0.0" if entry.last_reply[:1] == "5" else "4.4.7"


def _status(entry: QueueEntry, action: str) -> str:
    """RFC 3464 §2.3.4: the status for ``action``, from the entry's last reply."""
    if action == "failed":
        return status_of(entry)
    code = entry.last_reply.split(" ")[1] if entry.last_reply.count(" ") else ""
    parts = code.split(".")
    valid = len(parts) == 3 and all(part.isdigit() for part in parts)
    if action == "delayed":
        return code if valid and parts[0] == "4" else "4.0.0"
    return code if valid and parts[0] == "2" else "2.0.0"


def original_header(content: bytes) -> bytes:
    """The header section of ``content`` (up to the empty line), CRLF-ended, bounded."""
    end = content.find(b"\r\n\r\n")
    header = content if end < 0 else content[:end + 2]
    if len(header) > HEADER_QUOTE_MAX:
        header = header[:header.rfind(b"\r\n", 0, HEADER_QUOTE_MAX) + 2]
    return header


def _recipient_block(entry: QueueEntry, action: str, retry_until: float) -> list[str]:
    # RFC 3464 §2.3: per-recipient fields.
    lines = [f"Final-Recipient: rfc822; {_clean(entry.recipient)}"]
    if entry.orcpt:
        addr_type, _, address = entry.orcpt.partition(";")
        lines.append(f"Original-Recipient: {addr_type}; {_clean(address)}")
    lines += [f"Action: {action}", f"Status: {_status(entry, action)}"]
    if entry.relay and entry.relay != "local":
        lines.append(f"Remote-MTA: dns; {_clean(entry.relay)}")
    if entry.last_reply:
        lines.append(f"Diagnostic-Code: smtp; {_clean(entry.last_reply)}")
    if entry.last_attempt:
        lines.append(f"Last-Attempt-Date: {_date(entry.last_attempt)}")
    if action == "delayed" and retry_until:
        lines.append(f"Will-Retry-Until: {_date(retry_until)}")  # RFC 3464 §2.3.8
    return lines


def failure_report(message: QueuedMessage, content: bytes, failed: list[QueueEntry],
                   reporting_mta: str, now: float) -> bytes:
    """The RFC 3464 report to ``message.sender`` for the ``failed`` entries (see :func:`report`)."""
    return report("failed", message, content, failed, reporting_mta, now)


def report(action: str, message: QueuedMessage, content: bytes, entries: list[QueueEntry],
           reporting_mta: str, now: float, retry_until: float = 0.0) -> bytes:
    """The RFC 3464 report to ``message.sender`` that ``entries`` were ``action``
    (failed, delayed, delivered, relayed).

    ``content`` is the queued message; ``reporting_mta`` our host name;
    ``now`` the report's date; ``retry_until`` when a delayed recipient
    will bounce. Returns the report's bytes, CRLF lines.
    """
    subject, summary = _WORDING[action]
    boundary = f"=_report_{secrets.token_hex(12)}"
    people = [
        f"This is the mail system at host {reporting_mta}.",
        "",
        summary,
        "The mail system says:" if action in ("delivered", "relayed") else "The mail system gave these reasons:",
        "",
    ]
    for entry in entries:
        people += [f"<{_clean(entry.recipient)}>:", f"    {_clean(entry.last_reply)}", ""]
    per_message = [f"Reporting-MTA: dns; {reporting_mta}"]  # RFC 3464 §2.2
    if message.envid:
        per_message.append(f"Original-Envelope-Id: {_clean(message.envid)}")
    per_message.append(f"Arrival-Date: {_date(message.arrival)}")
    status_lines = per_message + [""]
    for entry in entries:
        status_lines += _recipient_block(entry, action, retry_until) + [""]
    full = message.ret == "FULL" and action == "failed"  # RFC 3461 §4.3: RET is for failures
    quoted = content if full else original_header(content)
    head = [
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>",
        f"To: <{_clean(message.sender)}>",
        f"Subject: {subject}",
        f"Date: {_date(now)}",
        f"Message-ID: <{secrets.token_hex(10)}.dsn@{reporting_mta}>",
        "Auto-Submitted: auto-replied",  # RFC 3834 §5
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        *people,
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "",
        *status_lines,
        f"--{boundary}",
        "Content-Type: " + ("message/rfc822" if full else "text/rfc822-headers"),
        "Content-Transfer-Encoding: 8bit",
        "",
    ]
    text = "\r\n".join(head).encode("utf-8") + b"\r\n"
    if not quoted.endswith(b"\r\n"):
        quoted += b"\r\n"
    return text + quoted + f"\r\n--{boundary}--\r\n".encode("ascii")
