"""The IMAP command table: each command's handler, valid states and flags.

One module per command (Dovecot's cmd-*.c layout). A handler is
``run(session, command) -> Completion | Deferred[Completion]``: it reads its
arguments from ``command.args`` (an :class:`~mailserverd.imap.parser.ArgCursor`
positioned after the command name), sends untagged responses with
``session.send``, and returns the tagged OK's text; it raises
:class:`~mailserverd.imap.parser.ParseError` (tagged BAD),
:class:`~mailserverd.errors.MailError` (tagged NO/BAD) or a store error
(mapped by :func:`~mailserverd.imap.responses.store_error_reply`).

Dispatch is by exact lookup of the upper-cased name in :data:`COMMANDS`,
never by attribute lookup on client input.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from mailserverd.imap.parser import ArgCursor

if TYPE_CHECKING:  # pragma: no cover
    from mailserverd.imap.session import ImapSession


class State(enum.Enum):
    """Connection states of RFC 3501 §3."""

    NOT_AUTHENTICATED = "not-authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


# Dovecot's command flags (src/imap/imap-commands.h):
#: The command's arguments or answers use message sequence numbers, so no
#: EXPUNGE may be sent while it runs (RFC 3501 §7.4.1).
USES_SEQS = 1
#: The command may change sequence numbers (it may send EXPUNGE responses).
BREAKS_SEQS = 2
#: The command changes which mailbox is selected.
BREAKS_MAILBOX = 4

ANY = frozenset(State) - {State.LOGOUT}
NOT_AUTHENTICATED = frozenset({State.NOT_AUTHENTICATED})
AUTHENTICATED = frozenset({State.AUTHENTICATED, State.SELECTED})
SELECTED = frozenset({State.SELECTED})


@dataclass(frozen=True)
class Command:
    """One command as a handler sees it. ``name`` is upper-case (``"UID FETCH"``)."""

    tag: bytes
    name: str
    args: ArgCursor

    @property
    def uid(self) -> bool:
        """Whether this is the UID form of a command (RFC 3501 §6.4.8)."""
        return self.name.startswith("UID ")


Handler = Callable[["ImapSession", Command], Any]


@dataclass(frozen=True)
class CommandSpec:
    """A table entry: the handler, the states it is valid in, Dovecot-style flags."""

    name: str
    run: Handler
    states: frozenset
    flags: int = 0


def _table() -> dict[str, CommandSpec]:
    # Imported here: the handler modules use Command from this module.
    from mailserverd.imap.commands import capability, fetch, login, logout, noop, select, starttls

    specs = (
        CommandSpec("CAPABILITY", capability.run, ANY),
        CommandSpec("NOOP", noop.run, ANY, BREAKS_SEQS),
        CommandSpec("LOGOUT", logout.run, ANY, BREAKS_MAILBOX),
        CommandSpec("STARTTLS", starttls.run, NOT_AUTHENTICATED),
        CommandSpec("LOGIN", login.run, NOT_AUTHENTICATED),
        CommandSpec("SELECT", select.run_select, AUTHENTICATED, BREAKS_MAILBOX),
        CommandSpec("EXAMINE", select.run_examine, AUTHENTICATED, BREAKS_MAILBOX),
        CommandSpec("FETCH", fetch.run, SELECTED, USES_SEQS),
        # UID commands may answer with EXPUNGEs (Dovecot marks them BREAKS_SEQS).
        CommandSpec("UID FETCH", fetch.run, SELECTED, BREAKS_SEQS),
    )
    return {spec.name: spec for spec in specs}


#: Commands of IMAP4rev1 and its common extensions that are recognised but
#: not built yet: answered ``NO`` (not ``BAD``) so that clients see a refusal,
#: not a protocol error, and so that they do not count as bad commands.
NOT_YET_BUILT: frozenset[str] = frozenset({
    "AUTHENTICATE", "APPEND", "CHECK", "CLOSE", "COPY", "CREATE", "DELETE",
    "ENABLE", "EXPUNGE", "ID", "IDLE", "LIST", "LSUB", "MOVE", "NAMESPACE",
    "RENAME", "SEARCH", "STATUS", "STORE", "SUBSCRIBE", "UNSELECT",
    "UNSUBSCRIBE", "UID COPY", "UID EXPUNGE", "UID MOVE", "UID SEARCH",
    "UID STORE",
})


def lookup(name: str) -> CommandSpec | None:
    """The table entry for an upper-cased command name, or ``None``."""
    return COMMANDS.get(name)


#: Name -> entry. Built last: the handler modules import this package.
COMMANDS: dict[str, CommandSpec] = _table()
