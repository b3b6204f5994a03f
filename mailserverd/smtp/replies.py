"""The one catalogue of SMTP server replies.

Every reply the SMTP server sends is named here (``S250_OK``,
``S550_NO_SUCH_USER``...), aiosmtpd-style, so that a reply code and its
enhanced status code are chosen once and the transcripts can refer to them.

Enhanced status codes (RFC 2034 §3, RFC 3463) are carried by every 2xx, 4xx
and 5xx reply except the greeting and the replies to HELO and EHLO (RFC 2034
§3 (4) excludes those), and never by 3xx replies. The classes agree with the
reply code (a 4xx reply carries a 4.x.x code) - :class:`Reply` checks this.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, replace

from mailserverd.errors import MailError


@dataclass(frozen=True)
class Reply:
    """One SMTP reply: a three-digit ``code``, an RFC 3463 ``enhanced`` code or ``""``,
    and one or more ``lines`` of text.

    :meth:`render` gives the wire bytes; a multi-line reply uses ``code-`` on
    every line but the last (RFC 5321 §4.2.1) and repeats the enhanced code
    on each line (RFC 2034 §4). Raises ValueError at construction when the
    enhanced code's class disagrees with the reply code.
    """

    code: int
    enhanced: str
    lines: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.enhanced and self.enhanced[0] != str(self.code)[0]:
            raise ValueError(f"enhanced code {self.enhanced} does not match {self.code}")
        if not self.lines:
            raise ValueError("a reply needs at least one line of text")

    def with_text(self, *lines: str) -> "Reply":
        """The same code and enhanced code with other text."""
        return replace(self, lines=tuple(lines))

    def render(self) -> bytes:
        """The reply as wire bytes, CRLF after each line.

        Text is sent as UTF-8 (it is ASCII except for addresses echoed back
        under SMTPUTF8); CR and LF inside text are replaced by spaces so that
        no reply can split into two.
        """
        prefix = f"{self.enhanced} " if self.enhanced else ""
        out = []
        for number, line in enumerate(self.lines):
            separator = " " if number == len(self.lines) - 1 else "-"
            text = line.replace("\r", " ").replace("\n", " ")
            out.append(f"{self.code}{separator}{prefix}{text}\r\n".encode("utf-8"))
        return b"".join(out)


def reply(code: int, enhanced: str, *lines: str) -> Reply:
    """Build a :class:`Reply` (a shorthand for the catalogue below)."""
    return Reply(code, enhanced, tuple(lines))


def from_mail_error(error: MailError) -> Reply:
    """The reply a :class:`~mailserverd.errors.MailError` carries (its code must be SMTP's)."""
    return Reply(int(error.code), error.enhanced, (error.text,))


# --- greeting, HELO/EHLO (no enhanced codes: RFC 2034 §3 (4))


def greeting(hostname: str) -> Reply:
    """220 service ready (RFC 5321 §4.2, §3.1)."""
    return reply(220, "", f"{hostname} ESMTP mailserverd")


def helo_ok(hostname: str, client_name: str) -> Reply:
    """250 to HELO (RFC 5321 §4.1.1.1)."""
    return reply(250, "", f"{hostname} Hello {client_name}")


def ehlo_ok(hostname: str, client_name: str, keywords: list[str]) -> Reply:
    """Multi-line 250 to EHLO: the greeting line then one keyword per line (RFC 5321 §4.1.1.1)."""
    return reply(250, "", f"{hostname} Hello {client_name}", *keywords)


S501_HELO_SYNTAX = reply(501, "", "Syntax: HELO hostname")
S501_EHLO_SYNTAX = reply(501, "", "Syntax: EHLO hostname")


# --- success
S250_OK = reply(250, "2.0.0", "Ok")
S250_SENDER_OK = reply(250, "2.1.0", "Sender ok")
S250_RECIPIENT_OK = reply(250, "2.1.5", "Recipient ok")
S250_RESET = reply(250, "2.0.0", "Reset state")
S252_CANNOT_VRFY = reply(252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery")
S220_READY_TLS = reply(220, "2.0.0", "Ready to start TLS")
S221_BYE = reply(221, "2.0.0", "Bye")
S354_START_DATA = reply(354, "", "End data with <CR><LF>.<CR><LF>")


S235_AUTH_OK = reply(235, "2.7.0", "Authentication successful")  # RFC 4954 §6


def queued(queue_id: str) -> Reply:
    """250 after the message is durably stored (RFC 5321 §4.2.5)."""
    return reply(250, "2.0.0", f"Ok: queued as {queue_id}")


def chunk_received(size: int) -> Reply:
    """250 for a BDAT chunk that is not the last (RFC 3030 §2)."""
    return reply(250, "2.0.0", f"{size} octets received")


def challenge(data: bytes) -> Reply:
    """334 SASL challenge, base64 (RFC 4954 §4); empty data is an empty text."""
    return reply(334, "", base64.b64encode(data).decode("ascii"))


def help_text(lines: list[str]) -> Reply:
    """214 HELP (RFC 5321 §4.1.1.8)."""
    return reply(214, "2.0.0", *lines)


# --- temporary failures
S421_IDLE_TIMEOUT = reply(421, "4.4.2", "Idle timeout, closing connection")
S421_TOO_MANY_ERRORS = reply(421, "4.7.0", "Too many errors, closing connection")
S421_TOO_MANY_COMMANDS = reply(421, "4.7.0", "Too many commands, closing connection")
S421_LINE_FLOOD = reply(421, "4.7.0", "Line too long, closing connection")
# RFC 5321 §3.8: a server shutting down sends 421; RFC 3463 X.3.2: not accepting messages.
S421_SHUTTING_DOWN = reply(421, "4.3.2", "Service shutting down, try again later")
S451_LOCAL_ERROR = reply(451, "4.3.0", "Local error in processing, try again later")
S452_TOO_MANY_RECIPIENTS = reply(452, "4.5.3", "Too many recipients")
# RFC 4954 §6: a temporary failure such as a throttled or unavailable password check.
S454_AUTH_TEMPORARY = reply(454, "4.7.0", "Temporary authentication failure")
S421_TOO_MANY_AUTH_FAILURES = reply(421, "4.7.0", "Too many authentication failures, closing connection")
S454_TLS_UNAVAILABLE = reply(454, "4.7.0", "TLS not available")
# Abuse limits (mailserverd.abuse). RFC 5321 §3.8: 421 when the server must close;
# RFC 3463 X.7.0: other security or policy status.
S421_COMMAND_RATE = reply(421, "4.7.0", "Too many commands from your network, closing connection")
S454_TOO_MANY_SESSIONS = reply(454, "4.7.0", "Too many sessions for this account")
# Greylisting: a temporary refusal of a recipient (RFC 6647 §2.1 describes the
# 4xx it relies on; 4.7.1 as postgrey and Postfix's postscreen answer).
S450_GREYLISTED = reply(450, "4.7.1", "Greylisted, try again later")

# --- permanent failures: syntax and sequence (RFC 5321 §4.2.4, RFC 3463 §3.6)
S500_UNKNOWN_COMMAND = reply(500, "5.5.1", "Command unrecognized")
S500_LINE_TOO_LONG = reply(500, "5.5.2", "Line too long")
S500_BAD_LINE = reply(500, "5.5.2", "Command line must end with CRLF and hold no bare CR or NUL")
S502_NOT_IMPLEMENTED = reply(502, "5.5.1", "Command not implemented")
S503_HELO_FIRST = reply(503, "5.5.1", "Send HELO/EHLO first")
S503_NESTED_MAIL = reply(503, "5.5.1", "Sender already specified")
S503_MAIL_FIRST = reply(503, "5.5.1", "Send MAIL first")
S503_RCPT_FIRST = reply(503, "5.5.1", "Send RCPT first")
S503_ALREADY_TLS = reply(503, "5.5.1", "TLS already active")
S503_BAD_SEQUENCE = reply(503, "5.5.1", "Bad sequence of commands")
S503_AUTH_NOT_ENABLED = reply(503, "5.5.1", "Authentication not enabled")
S503_ALREADY_AUTHENTICATED = reply(503, "5.5.1", "Already authenticated")
S503_AUTH_IN_TRANSACTION = reply(503, "5.5.1", "AUTH not permitted during a mail transaction")
S503_DATA_AFTER_BDAT = reply(503, "5.5.1", "DATA not permitted after BDAT")
S501_AUTH_CANCELLED = reply(501, "5.0.0", "Authentication cancelled")  # RFC 4954 §4
S501_AUTH_BAD_BASE64 = reply(501, "5.5.2", "Cannot decode the response")  # RFC 4954 §4
S501_AUTH_MALFORMED = reply(501, "5.5.2", "Malformed authentication response")
S504_UNKNOWN_MECHANISM = reply(504, "5.5.4", "Unrecognized authentication mechanism")
S530_AUTH_REQUIRED = reply(530, "5.7.0", "Authentication required")  # RFC 4954 §6
S535_AUTH_FAILED = reply(535, "5.7.8", "Authentication credentials invalid")  # RFC 4954 §6
S538_ENCRYPTION_REQUIRED = reply(538, "5.7.11", "Encryption required for requested authentication mechanism")
S554_NO_VALID_RECIPIENTS = reply(554, "5.5.1", "No valid recipients")
S555_UNKNOWN_PARAMETER = reply(555, "5.5.4", "Unsupported parameter")


def syntax_error(syntax: str) -> Reply:
    """501 with the command's syntax (aiosmtpd's @syntax idea, RFC 5321 §4.2.2)."""
    return reply(501, "5.5.4", f"Syntax: {syntax}")


def bad_address(reason: str) -> Reply:
    """501 5.1.3 for a path that does not parse (RFC 3463 §3.2: bad destination syntax)."""
    return reply(501, "5.1.3", f"Bad address syntax: {reason}")


def bad_sender_address(reason: str) -> Reply:
    """501 5.1.7 for a reverse-path that does not parse (RFC 3463 §3.2)."""
    return reply(501, "5.1.7", f"Bad sender address syntax: {reason}")


def bad_parameter(text: str) -> Reply:
    """501 5.5.4 for a known parameter with a bad value."""
    return reply(501, "5.5.4", text)


# --- permanent failures: recipients and content
S550_NO_SUCH_USER = reply(550, "5.1.1", "No such user here")
S550_RELAY_DENIED = reply(550, "5.7.1", "Relay access denied")
# RFC 5321 §2.3.8: CR and LF only together, as CRLF (SMTP smuggling, CVE-2023-51764).
S550_BARE_LINE_END = reply(550, "5.6.0", "Message rejected: bare CR or LF in data")
S552_MESSAGE_TOO_BIG = reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
S552_LINE_TOO_LONG = reply(552, "5.3.4", "Message rejected: line too long")
S553_SENDER_NOT_OWNED = reply(553, "5.7.1", "Sender address not owned by the authenticated user")
# RFC 6531 §3.5 / RFC 6533 §5.4: a UTF-8 address without SMTPUTF8.
S553_UTF8_ADDRESS = reply(553, "5.6.7", "Non-ASCII address needs the SMTPUTF8 parameter")
S552_MAILBOX_FULL = reply(552, "5.2.2", "Mailbox full")
