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
    from mailserverd.imap.commands import create, delete, list as list_cmd, namespace, rename, status, subscribe
    from mailserverd.imap.commands import check, close, copy, expunge, move, store, unselect
    from mailserverd.imap.commands import search
    from mailserverd.imap.commands import append, authenticate, enable, id as id_cmd, idle
    from mailserverd.imap.commands import quota, sort, thread
    from mailserverd.imap.commands import compress

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
        # Mailbox commands (RFC 9051 §6.3); they use no sequence numbers.
        CommandSpec("CREATE", create.run, AUTHENTICATED),
        CommandSpec("DELETE", delete.run, AUTHENTICATED),
        CommandSpec("RENAME", rename.run, AUTHENTICATED),
        CommandSpec("SUBSCRIBE", subscribe.run_subscribe, AUTHENTICATED),
        CommandSpec("UNSUBSCRIBE", subscribe.run_unsubscribe, AUTHENTICATED),
        CommandSpec("LIST", list_cmd.run_list, AUTHENTICATED),
        CommandSpec("LSUB", list_cmd.run_lsub, AUTHENTICATED),
        CommandSpec("XLIST", list_cmd.run_xlist, AUTHENTICATED),  # a client quirk: list.py
        CommandSpec("NAMESPACE", namespace.run, AUTHENTICATED),
        CommandSpec("STATUS", status.run, AUTHENTICATED),
        # Message commands (Dovecot's flags for cmd-store/copy/move/expunge/close).
        CommandSpec("STORE", store.run, SELECTED, USES_SEQS),
        CommandSpec("UID STORE", store.run, SELECTED, BREAKS_SEQS),
        CommandSpec("COPY", copy.run, SELECTED, USES_SEQS),
        CommandSpec("UID COPY", copy.run, SELECTED, BREAKS_SEQS),
        CommandSpec("MOVE", move.run, SELECTED, USES_SEQS | BREAKS_SEQS),
        CommandSpec("UID MOVE", move.run, SELECTED, BREAKS_SEQS),
        CommandSpec("EXPUNGE", expunge.run, SELECTED, BREAKS_SEQS),
        CommandSpec("UID EXPUNGE", expunge.run, SELECTED, BREAKS_SEQS),
        CommandSpec("CLOSE", close.run, SELECTED, BREAKS_MAILBOX),
        CommandSpec("UNSELECT", unselect.run, SELECTED, BREAKS_MAILBOX),
        CommandSpec("CHECK", check.run, SELECTED, BREAKS_SEQS),
        # RFC 9051 §6.4.4; UID SEARCH flagged like UID FETCH.
        CommandSpec("SEARCH", search.run, SELECTED, USES_SEQS),
        CommandSpec("UID SEARCH", search.run, SELECTED, BREAKS_SEQS),
        CommandSpec("AUTHENTICATE", authenticate.run, NOT_AUTHENTICATED),
        CommandSpec("ID", id_cmd.run, ANY),  # RFC 2971 §3.1: any state
        # RFC 5161 §3.1, RFC 9051 §6.3.1: before any mailbox is selected.
        CommandSpec("ENABLE", enable.run, frozenset({State.AUTHENTICATED})),
        CommandSpec("APPEND", append.run, AUTHENTICATED, BREAKS_SEQS),
        CommandSpec("IDLE", idle.run, AUTHENTICATED, BREAKS_SEQS),
        # RFC 5256 §3: like SEARCH, no EXPUNGE during SORT/THREAD, allowed during the UID forms.
        CommandSpec("SORT", sort.run, SELECTED, USES_SEQS),
        CommandSpec("UID SORT", sort.run, SELECTED, BREAKS_SEQS),
        CommandSpec("THREAD", thread.run, SELECTED, USES_SEQS),
        CommandSpec("UID THREAD", thread.run, SELECTED, BREAKS_SEQS),
        # RFC 9208 §4.1: quota commands, authenticated or selected.
        CommandSpec("GETQUOTA", quota.run_getquota, AUTHENTICATED),
        CommandSpec("GETQUOTAROOT", quota.run_getquotaroot, AUTHENTICATED),
        CommandSpec("SETQUOTA", quota.run_setquota, AUTHENTICATED),
        # RFC 4978 §5: command-auth, so authenticated or selected.
        CommandSpec("COMPRESS", compress.run, AUTHENTICATED),
    )
    return {spec.name: spec for spec in specs}


def lookup(name: str) -> CommandSpec | None:
    """The table entry for an upper-cased command name, or ``None``."""
    return COMMANDS.get(name)


#: Name -> entry. Built last: the handler modules import this package.
COMMANDS: dict[str, CommandSpec] = _table()
