"""What the index keeps of a message: its normalised text and its grams.

:func:`index_entry` turns a message (bytes and stored facts) into the
``(text, grams)`` pair that :func:`mailserverd.store.searchindex.apply_batch`
stores: ``text`` the zlib-compressed msgpack of
:meth:`MessageText.document` (read back by :func:`stored_text` to check
candidates), ``grams`` every 3-byte string of the UTF-8 of each text a key
compares with. UTF-8 is self-synchronising, so a needle is a substring of a
text exactly when its UTF-8 is a substring of the text's UTF-8, and then
every 3-byte gram of the needle is a gram of the text: the grams never lose
a match, and checking the candidates' stored text removes the false ones.

A message whose text is longer than ``search_text_max`` gets the single
gram :data:`UNFILTERED` instead: it is a candidate for every search, so that
a 50 MB body costs no 50 million grams and is still never missed.
"""

from __future__ import annotations

import functools
import re
import zlib

import msgpack

from mailserverd.search.text import MessageText, StoredText

#: The gram of docs that every text search must check (too long to index by grams).
UNFILTERED = b"\x00\x00\x00"
GRAM = 3
#: Distinct words whose grams are kept for the next messages (a few MB).
WORD_CACHE_SIZE = 1 << 16
# Every 3-byte string whose middle byte is a space (overlapping: a lookahead).
_AROUND_SPACE = re.compile(rb"(?=(. .))", re.S)
# The stored text: this byte, then msgpack [envelope and fields, zlib(body)], so that
# keys other than BODY and TEXT never decompress the body. Docs stored before start
# with a zlib header instead (0x78): one zlib stream of the whole document.
_SPLIT_FORMAT = b"\x02"


def grams_of(data: bytes) -> set[bytes]:
    """Every ``GRAM``-byte substring of ``data``."""
    return {data[index:index + GRAM] for index in range(len(data) - GRAM + 1)}


def text_grams(data: bytes) -> set[bytes]:
    """``grams_of(b" " + data + b" ")``, computed once per distinct word.

    A gram of the padded text either has a space in the middle (found by one
    regular-expression pass) or lies inside one space-delimited word with the
    spaces around it; text repeats its words, so this does a fraction of the
    work of slicing at every position. The padding only adds grams (which can
    only make extra candidates, checked away), never loses one.
    """
    grams = set(_AROUND_SPACE.findall(b" " + data + b" "))
    for word in set(data.split(b" ")):
        grams |= _word_grams(word)
    return grams


@functools.lru_cache(maxsize=WORD_CACHE_SIZE)
def _word_grams(word: bytes) -> frozenset[bytes]:
    """The grams of one word between spaces (cached: mail repeats its vocabulary)."""
    padded = b" " + word + b" "
    return frozenset([padded[index:index + GRAM] for index in range(len(padded) - GRAM + 1)])


def index_entry(raw: bytes, facts: dict, text_max: int) -> tuple[bytes, set[bytes]]:
    """``(stored text, grams)`` of one message (see the module docstring). Never raises
    for broken MIME (the text extraction does not)."""
    text = MessageText(lambda: raw, lambda: facts)
    doc = text.document()
    body = doc.pop("body").encode("utf-8", "surrogatepass")
    stored = _SPLIT_FORMAT + msgpack.packb([doc, zlib.compress(body, 1)], use_bin_type=True)
    texts = [part.encode("utf-8", "surrogatepass") for part in text.searched_texts()]
    if sum(len(part) for part in texts) > text_max:
        return stored, {UNFILTERED}
    grams: set[bytes] = set()
    for part in texts:
        grams |= text_grams(part)
    return stored, grams


def index_entry_wire(raw: bytes, facts: dict, text_max: int) -> list:
    """:func:`index_entry` as a worker process sends it back: ``[stored, grams
    joined]`` (every gram is GRAM bytes; :func:`entry_from_wire` splits them)."""
    stored, grams = index_entry(raw, facts, text_max)
    return [stored, b"".join(grams)]


def entry_from_wire(reply: list) -> tuple[bytes, set[bytes]]:
    """The ``(stored text, grams)`` of an :func:`index_entry_wire` reply."""
    stored, joined = reply
    return bytes(stored), {joined[index:index + GRAM] for index in range(0, len(joined), GRAM)}


def stored_text(stored: bytes) -> StoredText:
    """The :class:`StoredText` of what :func:`index_entry` stored (either format);
    the body is decompressed only if a key reads it."""
    if stored[:1] != _SPLIT_FORMAT:
        return StoredText(msgpack.unpackb(zlib.decompress(stored), raw=False))
    doc, body = msgpack.unpackb(stored[1:], raw=False)
    return StoredText(doc, lambda: zlib.decompress(body).decode("utf-8", "surrogatepass"))


def needle_grams(needle: str) -> set[bytes]:
    """The grams every text holding ``needle`` (normalised) holds; empty if it is too short."""
    return grams_of(needle.encode("utf-8", "surrogatepass"))
