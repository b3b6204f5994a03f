"""Fuzz harness: the IMAP SEARCH program parser (mailserverd.imap.search.parse_search)
and the evaluation of what it parses.

Input: what a client writes after ``tag SEARCH `` (literals included, as
``{n+}`` and the n bytes; the harness adds the final CRLF). It is framed by the
real CommandReader, then parsed as the SEARCH command parses it.

Allowed: the errors :func:`parse_search` documents: ParseError (tagged BAD),
ProgramTooDeep (NO [LIMIT]) and UnsupportedCharset (NO [BADCHARSET]). A crash
is any other exception, or one raised while the parsed program is run over a
few messages (a program that parses must be searchable).
"""

from __future__ import annotations

import atheris

from harness import fill_inbox, main

with atheris.instrument_imports(include=["mailserverd"]):
    from mailserverd.imap.parser import (
        ArgCursor,
        CommandReader,
        ContinuationNeeded,
        FramedCommand,
        ParseError,
        read_command_name,
        read_tag,
    )
    from mailserverd.imap.search import (
        ProgramTooDeep,
        SearchScope,
        UnsupportedCharset,
        parse_search,
        search_messages,
        uses_modseq,
        uses_recent,
    )
    from imap_fakes import USER, FakeMailStore

#: Small limits, so that the fuzzer reaches them.
LINE_MAX = 4096
LITERAL_MAX = 4096


def framed(data: bytes) -> FramedCommand | None:
    """``t SEARCH <data>`` as the session frames it; None when it is not one whole
    command (a literal refused, a line too long, more bytes needed)."""
    reader = CommandReader(LINE_MAX, lambda first_line, size, total: total <= LITERAL_MAX)
    reader.feed(b"t SEARCH " + data + b"\r\n")
    event = reader.next_event()
    while isinstance(event, ContinuationNeeded):  # the client sends the literal at once
        event = reader.next_event()
    return event if isinstance(event, FramedCommand) else None


STORE = FakeMailStore()
MESSAGES = list(enumerate(fill_inbox(STORE, USER), 1))
SCOPE = SearchScope(store=STORE, user=USER, count=len(MESSAGES), max_uid=len(MESSAGES),
                    saved_uids=frozenset({2}), recent_uids=frozenset({3}))


def test_one_input(data: bytes) -> None:
    command = framed(data)
    if command is None:
        return
    args = ArgCursor(command.segments)
    read_tag(args)
    read_command_name(args)
    try:
        args.expect_sp()
        request = parse_search(args)
    except (ParseError, ProgramTooDeep, UnsupportedCharset):
        return
    uses_modseq(request.key)
    uses_recent(request.key)
    search_messages(request.key, MESSAGES, SCOPE)


if __name__ == "__main__":
    main(test_one_input)
