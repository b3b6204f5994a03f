"""Errors that carry their wire reply.

A protocol core raises (or returns) a :class:`MailError` and its adapter writes
``code``, ``enhanced`` and ``text`` to the client unchanged. The cause (an
exception from below) is kept for the log, never shown to the client.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class MailError(Exception):
    """A failure with the reply a client should see.

    ``code`` is the protocol's reply code (SMTP ``"451"``, IMAP ``"NO"``,
    POP3 ``"-ERR"``); ``enhanced`` an RFC 3463 / RFC 5530 / RFC 2449 code or
    ``""``; ``text`` short human text. ``temporary`` says whether retrying
    later may succeed (SMTP 4xx, IMAP ``[UNAVAILABLE]``, POP3 ``[SYS/TEMP]``).
    """

    code: str
    enhanced: str
    text: str
    temporary: bool = False

    def __str__(self) -> str:
        return f"{self.code} {self.enhanced} {self.text}".replace("  ", " ")


def fresh(error):
    """A new exception equal to ``error``, a module-level reply constant (any
    dataclass exception): raise this, never the constant itself. Raising one
    instance again and again chains each raise's frames onto its
    ``__traceback__``, and with them every session it refused, for good."""
    return replace(error)


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` lists every error found.

    Each problem is one line naming the table and key, e.g.
    ``[limits] smtp_line_max: must be an integer between 512 and 65536``.
    """

    def __init__(self, problems: list[str], path: str = ""):
        self.problems = list(problems)
        self.path = path
        where = f"{path}: " if path else ""
        super().__init__(where + "; ".join(self.problems))
