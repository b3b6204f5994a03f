"""The reference server's FETCH answers for the shared MIME messages, and what we
must answer instead where the reference departs from the RFC.

``../shared/testdata/mime-dovecot-fetch.json`` holds what Dovecot 2.3.19
answered for RFC822.SIZE, ENVELOPE, BODY, BODYSTRUCTURE and a HEADER.FIELDS
fetch of each of the 68 messages in ``../shared/testdata/mime/`` (its README
says how they were made).  The unit tests compare the stored facts with it,
the end-to-end test what the daemon sends over the wire; both read the
answers, the known differences and the comparison tools from here.

Byte comparisons write every string of both sides as we write strings
(:func:`with_our_strings`): the choice between a quoted string and a literal
is the server's (RFC 9051 §4.3), everything else must be equal.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re

import pytest

from conftest import IN_CI, SHARED, require_shared
from mailserverd.imap import wire
from mailserverd.imap.wire import parse_values, run, serialize

TESTDATA = SHARED / "testdata"
ORACLE_FILE = TESTDATA / "mime-dovecot-fetch.json"
MESSAGES_DIR = TESTDATA / "mime"

#: The FETCH items answered from stored facts, and the facts' key for each.
FACT_ITEMS = {
    "RFC822.SIZE": "size",
    "ENVELOPE": "envelope",
    "BODY": "body",
    "BODYSTRUCTURE": "bodystructure",
}
HEADER_FIELDS_ITEM = "BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)]"
#: Every item the reference file holds, as it was asked for.
ITEMS = tuple(FACT_ITEMS) + (HEADER_FIELDS_ITEM,)
#: The date every message was appended with (the data file's "internaldate").
INTERNALDATE = "02-Jan-2024 03:04:05 +0000"

# Where Dovecot's answer departs from the RFC, we keep the RFC's.
# (message, item) -> (RFC section, path of the part in the structure tree,
#                     body-fld-lines of our text/plain answer)
# All three have a syntactically invalid Content-Type ("application-x-gzip",
# "text" without subtype, "X-BE2; 12").  Dovecot answers ("" "" NIL ...);
# RFC 2045 §5.2 says to assume "text/plain; charset=us-ascii" for an invalid
# Content-Type, as for a missing one, so we answer ("text" "plain"
# ("charset" "us-ascii") ... lines).
_RFC2045_DEFAULT = "RFC 2045 §5.2"
EXPECTED_DIFFERENCES = {
    ("missing-subtype.eml", "BODY"): (_RFC2045_DEFAULT, (), 1),
    ("missing-subtype.eml", "BODYSTRUCTURE"): (_RFC2045_DEFAULT, (), 1),
    ("py-msg_14.eml", "BODY"): (_RFC2045_DEFAULT, (), 10),
    ("py-msg_14.eml", "BODYSTRUCTURE"): (_RFC2045_DEFAULT, (), 10),
    ("startrek.eml", "BODY"): (_RFC2045_DEFAULT, (1, 2), 2436),
    ("startrek.eml", "BODYSTRUCTURE"): (_RFC2045_DEFAULT, (1, 2), 2436),
}


def require_oracle() -> None:
    """Skip without the shared test data; under CI=true fail instead (CI must not skip)."""
    require_shared()
    if ORACLE_FILE.exists() and MESSAGES_DIR.is_dir():
        return
    message = f"shared test data not found at {TESTDATA}"
    if IN_CI:
        pytest.fail(message + " (CI must not skip)")
    pytest.skip(message)


def _load_oracle() -> dict:
    if not ORACLE_FILE.exists():
        return {}
    return json.loads(ORACLE_FILE.read_text())["messages"]


ORACLE = _load_oracle()
#: The messages' file names, for parametrizing; one placeholder without the data
#: (its test then calls :func:`require_oracle`, which skips or fails).
MESSAGE_NAMES = sorted(ORACLE) or ["(no test data)"]


def message_bytes(name: str) -> bytes:
    """The message as the reference server was given it (CRLF line ends), checked by hash."""
    raw = (MESSAGES_DIR / name).read_bytes()
    raw = re.sub(rb"\r?\n", b"\r\n", raw)
    assert hashlib.sha256(raw).hexdigest() == ORACLE[name]["sha256_crlf"]
    return raw


_LITERAL_NOTATION = re.compile(rb"\{(\d+)\}\{literal:")


def unliteral(response: str) -> bytes:
    """Turn the data file's ``{N}{literal:...}`` notation into real IMAP literals."""
    data = response.encode("latin-1")
    out = bytearray()
    pos = 0
    while True:
        match = _LITERAL_NOTATION.search(data, pos)
        if match is None:
            return bytes(out + data[pos:])
        size = int(match.group(1))
        start = match.end()
        assert data[start + size:start + size + 1] == b"}", "literal length mismatch"
        out += data[pos:match.start()] + b"{%d}\r\n" % size + data[start:start + size]
        pos = start + size + 1


def reference_value(name: str, item: str):
    """Dovecot's value for one FETCH item, as a parsed value tree."""
    entry = ORACLE[name][item]
    assert entry["status"] == "OK"
    sequence, attributes = parse_values(unliteral(entry["response"]))
    assert isinstance(sequence, int)
    assert attributes[0] == "UID" and isinstance(attributes[1], int)
    assert len(attributes) == 4, attributes[:3]
    return attributes[3]


def expected_value(name: str, item: str):
    """What we must answer for one item, as a value tree: Dovecot's, with the
    :data:`EXPECTED_DIFFERENCES` rewrite applied where there is one."""
    theirs = reference_value(name, item)
    difference = EXPECTED_DIFFERENCES.get((name, item))
    if difference is None:
        return theirs
    _section, path, lines = difference
    expected = copy.deepcopy(theirs)
    if not path:
        return as_rfc2045_default(expected, lines)
    parent = expected
    for index in path[:-1]:
        parent = parent[index]
    parent[path[-1]] = as_rfc2045_default(parent[path[-1]], lines)
    return expected


def as_rfc2045_default(node: list, lines: int) -> list:
    """Dovecot's ("" "" NIL id desc enc size ...) rewritten as RFC 2045 §5.2's text/plain."""
    assert node[:3] == [b"", b"", None], node[:3]
    return [b"text", b"plain", [b"charset", b"us-ascii"]] + node[3:7] + [lines] + node[7:]


# ------------------------------------------------ byte-level comparison tools
_QUOTED = re.compile(rb'"((?:[^"\\\r\n]|\\.)*)"')
_LITERAL = re.compile(rb"\{(\d+)\}\r\n")
_ATOM = re.compile(rb'[^ ()"{\r\n]+')
_RESPONSE_HEAD = re.compile(rb"\d+ \(UID \d+ ")


def tokens(data: bytes) -> list[tuple[str, object]]:
    """Split IMAP value bytes into ("(", None), (")", None), ("SP", None),
    ("string", bytes) and ("atom", bytes) tokens.  Strings may be quoted (with
    escapes) or literals; anything else fails the test."""
    found: list[tuple[str, object]] = []
    pos = 0
    while pos < len(data):
        char = data[pos:pos + 1]
        if char in (b"(", b")"):
            found.append((char.decode(), None))
            pos += 1
        elif char == b" ":
            found.append(("SP", None))
            pos += 1
        elif char == b'"':
            match = _QUOTED.match(data, pos)
            assert match, data[pos:pos + 40]
            found.append(("string", re.sub(rb"\\(.)", rb"\1", match.group(1))))
            pos = match.end()
        elif char == b"{":
            match = _LITERAL.match(data, pos)
            assert match, data[pos:pos + 40]
            size = int(match.group(1))
            found.append(("string", data[match.end():match.end() + size]))
            pos = match.end() + size
        else:
            match = _ATOM.match(data, pos)
            assert match, data[pos:pos + 40]
            found.append(("atom", match.group()))
            pos = match.end()
    return found


def with_our_strings(found: list) -> bytes:
    """The tokens as bytes, each string written as we write strings."""
    out = {"(": b"(", ")": b")", "SP": b" "}
    return b"".join(wire.string(value) if kind == "string" else
                    value if kind == "atom" else out[kind]
                    for kind, value in found)


def marked_tree(found: list):
    """Read tokens into one value tree with runs where lists are back to back.

    Whether the spacing survived is checked by the caller (serializing the
    tree must give the same bytes), so this reader needs no spacing rules.
    """
    root: list = []
    stack = [root]
    previous = None
    for kind, value in found:
        if kind == "(":
            new: list = []
            siblings = stack[-1]
            if previous == ")":  # ")(": this list follows the last one directly
                if not isinstance(siblings[-1], dict):
                    siblings[-1] = run([siblings[-1]])
                siblings[-1][wire.RUN_KEY].append(new)
            else:
                siblings.append(new)
            stack.append(new)
        elif kind == ")":
            stack.pop()
        elif kind == "string":
            stack[-1].append(value)
        elif kind == "atom":
            stack[-1].append(None if value == b"NIL" else int(value))
        previous = kind
    assert len(root) == 1
    return root[0]


def marked_child(node: list, index: int) -> tuple[list, int]:
    """(container, position) of the index-th item of ``node`` counted with
    runs spliced in, as the plain tree counts it."""
    for position, item in enumerate(node):
        if isinstance(item, dict):
            items = item[wire.RUN_KEY]
            if index < len(items):
                return items, index
            index -= len(items)
        elif index == 0:
            return node, position
        else:
            index -= 1
    raise IndexError(index)


def response_name(item: str) -> bytes:
    """The name a FETCH response gives ``item`` (RFC 9051 §7.5.2: no .PEEK)."""
    return item.replace(".PEEK", "").encode()


def reference_bytes(name: str, item: str) -> bytes:
    """Dovecot's bytes for one FETCH item, strings rewritten as we write them."""
    data = unliteral(ORACLE[name][item]["response"])
    head = _RESPONSE_HEAD.match(data)
    label = response_name(item) + b" "
    assert head and data.startswith(label, head.end()) and data.endswith(b")")
    return with_our_strings(tokens(data[head.end() + len(label):-1]))


def expected_bytes(name: str, item: str) -> bytes:
    """What we must send for one item, byte for byte with our string forms:
    Dovecot's bytes, with the :data:`EXPECTED_DIFFERENCES` rewrite applied to
    its tree with its spacing kept as runs."""
    theirs = reference_bytes(name, item)
    difference = EXPECTED_DIFFERENCES.get((name, item))
    if difference is None:
        return theirs
    _section, path, lines = difference
    tree = marked_tree(tokens(theirs))
    assert serialize(tree) == theirs  # the tree keeps Dovecot's spacing
    if not path:
        return serialize(as_rfc2045_default(tree, lines))
    parent = tree
    for index in path[:-1]:
        container, position = marked_child(parent, index)
        parent = container[position]
    container, position = marked_child(parent, path[-1])
    container[position] = as_rfc2045_default(container[position], lines)
    return serialize(tree)
