"""LIST (RFC 3501 §6.3.8, RFC 9051 §6.3.9) and LSUB (RFC 3501 §6.3.9).

LIST takes the extended syntax of RFC 5258 (selection options SUBSCRIBED,
REMOTE, RECURSIVEMATCH, SPECIAL-USE; return options SUBSCRIBED, CHILDREN,
SPECIAL-USE, STATUS), RFC 5819 LIST-STATUS and RFC 6154 SPECIAL-USE.
\\HasChildren / \\HasNoChildren (RFC 3348) and special-use attributes are
always returned: RFC 9051 §6.3.9.5 and RFC 6154 §2 allow them unasked.

The server's view of names: the user's mailboxes (from the store), the
"holes" above them (superior names whose mailbox was deleted, RFC 9051
§6.3.5), and the subscribed names (which may name no mailbox).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mailserverd.imap import responses
from mailserverd.imap.commands.mailbox_names import (
    DELIMITER,
    encode_name,
    read_list_pattern,
    read_reference,
)
from mailserverd.imap.commands.status import read_status_items, status_response
from mailserverd.imap.parser import ArgCursor, ParseError
from mailserverd.imap.responses import Completion
from mailserverd.store.types import HIERARCHY_SEPARATOR, MailboxInfo

__all__ = ["run_list", "run_lsub", "run_xlist", "ListRequest", "parse_list", "NamePattern", "MailboxView",
           "select_names"]

SEP = HIERARCHY_SEPARATOR

# RFC 5258 §3.1 / RFC 6154 §3 selection options; RFC 5258 §3.2, RFC 5819 §2,
# RFC 6154 §3 return options. Anything else is answered BAD (RFC 5258 §3).
SELECT_OPTIONS = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})
RETURN_OPTIONS = frozenset({"SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "STATUS"})


# ---------------------------------------------------------------- patterns


class NamePattern:
    """One canonical LIST pattern: ``*`` matches anything, ``%`` anything but
    the hierarchy separator (RFC 9051 §6.3.9).

    Matching is a state-set walk over the pattern (no backtracking), so a
    pattern full of wildcards costs at most len(name) x len(pattern).
    """

    def __init__(self, text: str):
        # RFC 9051 §5.1: INBOX is case-insensitive, so is a pattern's INBOX.
        if text[:5].upper() == "INBOX" and (len(text) == 5 or text[5] in SEP + "*%"):
            text = "INBOX" + text[5:]
        tokens: list[str] = []
        for char in text:
            if char in "*%" and tokens and tokens[-1] in "*%":
                # Adjacent wildcards: "*" wins (it matches what "%" does and more).
                tokens[-1] = "*" if "*" in (char, tokens[-1]) else "%"
                continue
            tokens.append(char)
        self.text = text
        self.tokens = tokens
        self.ends_with_percent = bool(tokens) and tokens[-1] == "%"
        self._literal = None if any(t in "*%" for t in tokens) else text

    def _close(self, states: set[int]) -> set[int]:
        """Add the states reachable by letting wildcards match nothing."""
        closed = set(states)
        for index in sorted(states):
            while index < len(self.tokens) and self.tokens[index] in "*%":
                index += 1
                closed.add(index)
        return closed

    def matches(self, name: str) -> bool:
        """Whether ``name`` matches the whole pattern."""
        if self._literal is not None:
            return name == self._literal
        if self.tokens == ["*"]:
            return True
        tokens = self.tokens
        states = self._close({0})
        for char in name:
            following = set()
            for index in states:
                if index >= len(tokens):
                    continue
                token = tokens[index]
                if token == "*" or (token == "%" and char != SEP):
                    following.add(index)
                elif token == char:
                    following.add(index + 1)
            if not following:
                return False
            states = self._close(following)
        return len(tokens) in states


def canonical_pattern(reference: str, pattern: str) -> str:
    """The canonical LIST pattern: the reference with the pattern appended
    (RFC 9051 §6.3.9: we have no break-out characters)."""
    return reference + pattern


# ---------------------------------------------------------------- request


@dataclass
class ListRequest:
    """A parsed LIST or LSUB command."""

    reference: str
    patterns: list[str]
    extended: bool = False
    select: set[str] = field(default_factory=set)
    returns: set[str] = field(default_factory=set)
    status_items: list[str] = field(default_factory=list)


def _options(args: ArgCursor, known: frozenset, what: str) -> set[str]:
    def option(cursor: ArgCursor) -> str:
        name = cursor.atom().decode("ascii").upper()
        if name not in known:
            raise ParseError(f"Unknown LIST {what} option")
        return name
    return set(args.parenthesized(option))


def _return_options(session, args: ArgCursor, request: ListRequest) -> None:
    """Read ``RETURN SP "(" [return-option *(SP return-option)] ")"`` into ``request``."""
    if args.atom().upper() != b"RETURN":
        raise ParseError("Expected RETURN")
    args.expect_sp()
    args.expect_byte(b"(", "'('")
    if args.skip_byte(b")"):
        return
    while True:
        name = args.atom().decode("ascii").upper()
        if name not in RETURN_OPTIONS:
            raise ParseError("Unknown LIST return option")
        if name == "STATUS":  # RFC 5819 §2: STATUS SP "(" status-att ... ")"
            args.expect_sp()
            request.status_items = list(dict.fromkeys(request.status_items
                                                      + read_status_items(args, session)))
        request.returns.add(name)
        if args.skip_byte(b")"):
            return
        args.expect_sp()


def parse_list(session, args: ArgCursor, extended_allowed: bool = True) -> ListRequest:
    """Read LIST's (or, with ``extended_allowed`` false, LSUB's) arguments.

    Returns a ListRequest with canonical patterns. Raises ParseError (BAD)
    for bad syntax, an unknown option, or RECURSIVEMATCH without a base
    selection option (RFC 5258 §3.1).
    """
    args.expect_sp()
    select: set[str] = set()
    extended = False
    if extended_allowed and args.peek() == 0x28:
        select = _options(args, SELECT_OPTIONS, "selection")
        extended = True
        args.expect_sp()
    reference = read_reference(session, args)
    args.expect_sp()
    if extended_allowed and args.peek() == 0x28:
        patterns = args.parenthesized(lambda cursor: read_list_pattern(session, cursor))
        extended = True
    else:
        patterns = [read_list_pattern(session, args)]
    request = ListRequest(reference, patterns, extended, select)
    if extended_allowed and not args.at_end():
        args.expect_sp()
        _return_options(session, args, request)
        request.extended = True
    args.expect_end()
    if "RECURSIVEMATCH" in select and not select & {"SUBSCRIBED", "SPECIAL-USE"}:
        raise ParseError("RECURSIVEMATCH needs another selection option")
    return request


# ---------------------------------------------------------------- the names


def _parents(name: str) -> list[str]:
    parts = name.split(SEP)
    return [SEP.join(parts[:n]) for n in range(1, len(parts))]


class MailboxView:
    """One read of the user's mailboxes and subscriptions, with the derived sets."""

    def __init__(self, mailboxes: list[MailboxInfo], subscriptions: list[str]):
        self.mailboxes = {info.name: info for info in mailboxes}
        self.subscribed = set(subscriptions)
        #: Names with at least one existing mailbox below them.
        self.with_children = {parent for name in self.mailboxes for parent in _parents(name)}

    @classmethod
    def read(cls, session) -> "MailboxView":
        store = session.ctx.store
        mailboxes = store.list_mailboxes(session.user)
        if hasattr(store, "list_subscriptions"):
            subscriptions = store.list_subscriptions(session.user)
        else:  # a store without the extra: subscriptions of existing mailboxes only
            subscriptions = [info.name for info in mailboxes if info.subscribed]
        return cls(mailboxes, subscriptions)

    def universe(self) -> list[str]:
        """Every name LIST may talk about, INBOX first, then in code-point order."""
        names = set(self.mailboxes) | self.with_children | self.subscribed
        names |= {parent for name in self.subscribed for parent in _parents(name)}
        names.discard("")
        return sorted(names, key=lambda name: (name != "INBOX", name))


@dataclass
class ListEntry:
    """One LIST answer: the name, whether it exists, and CHILDINFO criteria (if any)."""

    name: str
    exists: bool
    meets: bool
    childinfo: list[str]


def _criteria(request: ListRequest, view: MailboxView):
    """The selection criteria as ``(names for CHILDINFO, test(name) -> bool)``."""
    wanted = [option for option in ("SUBSCRIBED", "SPECIAL-USE") if option in request.select]

    def test(name: str) -> bool:
        if "SUBSCRIBED" in wanted and name not in view.subscribed:
            return False
        if "SPECIAL-USE" in wanted:
            info = view.mailboxes.get(name)
            if info is None or not info.special_use:
                return False
        if not wanted:
            return name in view.mailboxes
        return True

    return wanted, test


def select_names(request: ListRequest, view: MailboxView) -> list[ListEntry]:
    """The names a LIST answers, in order (RFC 9051 §6.3.9.3).

    A name is returned when it matches a pattern and meets the selection
    criteria; with RECURSIVEMATCH also when some descendant meets them and
    does not match a pattern itself (CHILDINFO, RFC 9051 §6.3.9.6). Without
    selection options a missing superior of existing mailboxes (a hole) is
    returned when a pattern ending in ``%`` matches it (RFC 9051 §6.3.9).
    """
    patterns = [NamePattern(canonical_pattern(request.reference, text))
                for text in request.patterns if text or not request.extended]
    wanted, test = _criteria(request, view)
    universe = view.universe()

    def matching(name: str) -> list[NamePattern]:
        return [pattern for pattern in patterns if pattern.matches(name)]

    childinfo_parents: set[str] = set()
    if "RECURSIVEMATCH" in request.select:
        for name in universe:
            if test(name) and not matching(name):
                childinfo_parents.update(_parents(name))
    entries = []
    for name in universe:
        matched = matching(name)
        if not matched:
            continue
        exists = name in view.mailboxes
        meets = test(name)
        if not wanted and not exists:
            meets = name in view.with_children and any(p.ends_with_percent for p in matched)
        childinfo = wanted if name in childinfo_parents else []
        if meets or childinfo:
            entries.append(ListEntry(name, exists, meets, childinfo))
    return entries


# ---------------------------------------------------------------- responses


def _attributes(session, request: ListRequest, view: MailboxView, entry: ListEntry) -> list[str]:
    attrs = []
    if not entry.exists:
        # RFC 9051 §7.3.1: \NonExistent implies \Noselect; IMAP4rev1 clients
        # without the extended syntax know only \Noselect (RFC 3501 §7.2.2).
        rev2 = "IMAP4REV2" in getattr(session, "enabled", ())
        attrs.append("\\NonExistent" if request.extended or rev2 else "\\Noselect")
    # RFC 3348 / RFC 9051 §6.3.9.5: always sent.
    attrs.append("\\HasChildren" if entry.name in view.with_children else "\\HasNoChildren")
    if ({"SUBSCRIBED"} & (request.select | request.returns)) and entry.name in view.subscribed:
        attrs.append("\\Subscribed")  # RFC 9051 §6.3.9.1, §6.3.9.2
    info = view.mailboxes.get(entry.name)
    if info is not None and info.special_use:
        attrs.append(info.special_use)  # RFC 6154 §2
    return attrs


def _list_line(session, request: ListRequest, view: MailboxView, entry: ListEntry) -> bytes:
    attrs = " ".join(_attributes(session, request, view, entry)).encode("ascii")
    line = b"LIST (" + attrs + b") " + DELIMITER + b" " + encode_name(session, entry.name)
    if entry.childinfo:  # RFC 9051 §6.3.9.6
        criteria = b" ".join(b'"%s"' % option.encode("ascii") for option in entry.childinfo)
        line += b' ("CHILDINFO" (' + criteria + b"))"
    return responses.untagged(line)


def run_list(session, command) -> Completion:
    """LIST, basic or extended: one ``* LIST`` per name selected, each followed by
    ``* STATUS`` when RETURN (STATUS ...) asks for it and the mailbox exists
    (RFC 5819 §2). Raises ParseError (BAD) for bad syntax or unknown options.
    """
    request = parse_list(session, command.args)
    if not request.extended and request.patterns == [""]:
        # RFC 9051 §6.3.9: the hierarchy delimiter and the (empty) root name.
        session.send(responses.untagged(b"LIST (\\Noselect) " + DELIMITER + b' ""'))
        return Completion("LIST completed")
    view = MailboxView.read(session)
    for entry in select_names(request, view):
        session.send(_list_line(session, request, view, entry))
        if request.status_items and entry.exists:
            session.send(status_response(session, view.mailboxes[entry.name], request.status_items))
    return Completion("LIST completed")


def run_lsub(session, command) -> Completion:
    """LSUB (RFC 3501 §6.3.9): the subscribed names matching the pattern.

    A superior name that is not subscribed itself but matches a pattern
    ending in ``%`` above a subscribed name is returned with \\Noselect; so is
    a subscribed name whose mailbox does not exist (it cannot be selected).
    """
    request = parse_list(session, command.args, extended_allowed=False)
    if request.patterns == [""]:
        session.send(responses.untagged(b"LSUB (\\Noselect) " + DELIMITER + b' ""'))
        return Completion("LSUB completed")
    view = MailboxView.read(session)
    pattern = NamePattern(canonical_pattern(request.reference, request.patterns[0]))
    implied = {parent for name in view.subscribed for parent in _parents(name)}
    for name in view.universe():
        if not pattern.matches(name):
            continue
        if name in view.subscribed:
            attrs = b"" if name in view.mailboxes else b"\\Noselect"
        elif name in implied and pattern.ends_with_percent:
            attrs = b"\\Noselect"
        else:
            continue
        session.send(responses.untagged(b"LSUB (" + attrs + b") " + DELIMITER + b" "
                                        + encode_name(session, name)))
    return Completion("LSUB completed")


# Gmail's XLIST names for the RFC 6154 attributes it predates.
_XLIST_NAMES = {"\\All": "\\AllMail", "\\Junk": "\\Spam", "\\Flagged": "\\Starred"}


def run_xlist(session, command) -> Completion:
    """XLIST: Gmail's precursor of SPECIAL-USE, answered as a basic LIST with
    ``* XLIST`` lines, its attribute names and ``\\Inbox`` on INBOX.

    Client quirk, kept as Dovecot keeps it (XLIST in its command table, not in
    CAPABILITY): older Outlook and Apple Mail builds send XLIST to find Sent,
    Trash and Junk. RFC 6154 §1 deprecates it; we do not advertise it.
    """
    request = parse_list(session, command.args, extended_allowed=False)
    view = MailboxView.read(session)
    for entry in select_names(request, view):
        attrs = [_XLIST_NAMES.get(attr, attr) for attr in _attributes(session, request, view, entry)]
        if entry.name == "INBOX":
            attrs.append("\\Inbox")
        session.send(responses.untagged(b"XLIST (" + " ".join(attrs).encode("ascii") + b") "
                                        + DELIMITER + b" " + encode_name(session, entry.name)))
    return Completion("XLIST completed")
