"""Fuzz harness: the MIME parser (mailserverd.mail.mime) and the IMAP facts built on it
(mailserverd.mail.facts: ENVELOPE, BODY, BODYSTRUCTURE, the part offsets;
mailserverd.mail.sections: BODY[section]).

Input: a whole message, as delivered.

:func:`parse_message` and :func:`compute_facts` are documented never to raise
on any bytes. So a crash is any exception, or a broken contract: a part's
offsets out of order or outside the message, nesting beyond
``MIME_NESTING_MAX``, facts that do not survive the store's record encoding
unchanged, or a section of an existing part that cannot be cut out.
"""

from __future__ import annotations

import atheris

from harness import main

with atheris.instrument_imports(include=["mailserverd"]):
    from mailserverd.imap.wire import serialize
    from mailserverd.mail.facts import compute_facts
    from mailserverd.mail.mime import MIME_NESTING_MAX, Part, parse_message
    from mailserverd.mail.sections import SECTION_TEXTS, section_bytes
    from mailserverd.store.records import decode_facts, encode_facts

#: The fields HEADER.FIELDS sections are cut with.
FIELDS = (b"Subject", b"FROM", b"content-type")


def check_part(part: Part, size: int) -> int:
    """Check one part and its subtree (iteratively); return the number of parts."""
    count = 0
    pending = [part]
    while pending:
        node = pending.pop()
        count += 1
        assert 0 <= node.header_start <= node.body_start <= node.end <= size, node
        assert node.depth < MIME_NESTING_MAX, node.depth
        starts = [child.header_start for child in node.children]
        assert starts == sorted(starts), starts
        assert all(start >= node.body_start for start in starts), (node, starts)
        pending.extend(node.children)
    return count


def part_paths(node: list, path: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    """Every part path of the offset tree ``node`` (RFC 9051 §6.4.5 numbering)."""
    paths = [path]
    inner = node
    if path and len(node[3]) == 1 and node[3][0][0] == node[1]:
        inner = node[3][0]  # a message/rfc822 part: its numbers are its message's parts
    is_message = len(inner[3]) == 1 and inner[3][0][0] == inner[1]
    if not inner[3] or is_message:
        return paths + [path + (1,)]  # not multipart: part 1 is the body
    for number, child in enumerate(inner[3], 1):
        paths += part_paths(child, path + (number,))
    return paths


def test_one_input(raw: bytes) -> None:
    root = parse_message(raw)
    assert root.header_start == 0 and root.end == len(raw), root
    check_part(root, len(raw))
    facts = compute_facts(raw)
    stored = decode_facts(encode_facts(facts))
    for item in ("envelope", "body", "bodystructure"):
        assert serialize(stored[item]) == serialize(facts[item]), item
    for path in part_paths(facts["parts"]):
        assert section_bytes(raw, stored["parts"], path) is not None, path
        for text in SECTION_TEXTS:
            section_bytes(raw, stored["parts"], path, text, FIELDS)


if __name__ == "__main__":
    main(test_one_input)
