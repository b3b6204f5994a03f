"""FETCH BODY[section] bytes from a stored message and its stored facts.

The part offset tree (``facts["parts"]``, see :mod:`mailserverd.mail.facts`) is
``[header_start, body_start, end, children]`` per node.  The root node is the
message.  A multipart's children are its parts; a message/rfc822 part has a
single child, the encapsulated message, which starts where the part's body
starts (that is how the two are told apart: a multipart's first child always
starts after a boundary line, never at its body start).

Section rules are RFC 9051 §6.4.5:

- part numbers select parts of a multipart; a message/rfc822 part's numbers
  select the parts of the encapsulated message; a message or part that is not
  multipart has only part 1, its body;
- ``MIME`` is the MIME header of a part (with the blank line);
- ``HEADER``, ``HEADER.FIELDS``, ``HEADER.FIELDS.NOT`` and ``TEXT`` apply to the
  message (no part number) or to a message/rfc822 part (the encapsulated
  message's header / body);
- ``HEADER.FIELDS`` results keep whole fields (continuation lines included) in
  message order and end with the blank line (CRLF), as the header does.

Nothing here parses MIME again; only the requested header is split into
fields for HEADER.FIELDS.
"""

from __future__ import annotations


__all__ = [
    "SECTION_TEXTS",
    "section_bytes",
    "header_fields_bytes",
]

SECTION_TEXTS = ("", "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME")


def _is_message_node(node: list) -> bool:
    children = node[3]
    return len(children) == 1 and children[0][0] == node[1]


def _is_multipart_node(node: list) -> bool:
    return bool(node[3]) and not _is_message_node(node)


def _resolve(parts: list, path: tuple[int, ...]) -> list | None:
    """Return the node for ``path`` (RFC 9051 §6.4.5 part numbering), or None."""
    node = parts
    for depth, number in enumerate(path):
        if depth > 0 and _is_message_node(node):
            node = node[3][0]  # numbers inside a message/rfc822 part: its message
        if _is_multipart_node(node):
            if not 1 <= number <= len(node[3]):
                return None
            node = node[3][number - 1]
        elif number != 1:
            return None  # a non-multipart has only part 1, its body
    return node


def section_bytes(raw: bytes, parts: list, path: tuple[int, ...] = (),
                  text: str = "", fields: tuple[bytes, ...] = ()) -> bytes | None:
    """Return the bytes of BODY[section] (RFC 9051 §6.4.5).

    Takes the message bytes, its stored part offset tree, the part path
    (e.g. (1, 2) for ``1.2``; () for the message), the section text (one of
    SECTION_TEXTS, upper case) and, for HEADER.FIELDS[.NOT], the field names
    (any case).  Returns the bytes, or None when the part does not exist or
    the section text does not apply to it (HEADER/TEXT on a part that is not
    message/rfc822, MIME without a part number); the caller decides how to
    answer that (empty string or NIL).
    Raises ValueError for an unknown section text.
    """
    if text not in SECTION_TEXTS:
        raise ValueError(f"unknown section text {text!r}")
    node = _resolve(parts, path)
    if node is None:
        return None
    if text == "":
        if not path:
            return raw  # BODY[]: the whole message
        return raw[node[1]:node[2]]
    if text == "MIME":
        if not path:
            return None
        return raw[node[0]:node[1]]
    if path:
        if not _is_message_node(node):
            return None
        node = node[3][0]
    if text == "TEXT":
        return raw[node[1]:node[2]]
    header = raw[node[0]:node[1]]
    if text == "HEADER":
        return header
    return header_fields_bytes(header, fields, exclude=(text == "HEADER.FIELDS.NOT"))


def header_fields_bytes(header: bytes, names: tuple[bytes, ...] | list[bytes],
                        exclude: bool = False) -> bytes:
    """Select header fields by name (RFC 9051 §6.4.5 HEADER.FIELDS[.NOT]).

    Takes a header (its lines, optionally followed by the blank line), the
    field names (compared case-insensitively) and whether to exclude them
    instead of including them.  Returns the selected fields, each with its
    continuation lines and line break, in header order, followed by CRLF
    (the blank line that ends a header).
    """
    wanted = {name.lower() for name in names}
    out: list[bytes] = []
    for field in _split_fields(header):
        colon = field.find(b":")
        name = (field[:colon] if colon >= 0 else field).rstrip(b" \t\r\n").lower()
        if (name in wanted) != exclude:
            out.append(field if field.endswith(b"\n") else field + b"\r\n")
    out.append(b"\r\n")
    return b"".join(out)


def _split_fields(header: bytes) -> list[bytes]:
    """Split header bytes into fields (a line plus its continuation lines);
    stop at the blank line; a leading continuation line is dropped."""
    fields: list[bytes] = []
    pos = 0
    end = len(header)
    while pos < end:
        line_end = header.find(b"\n", pos)
        line_end = end if line_end < 0 else line_end + 1
        line = header[pos:line_end]
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t"):
            if fields:
                fields[-1] += line
        else:
            fields.append(line)
        pos = line_end
    return fields
