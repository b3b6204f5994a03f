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

import zlib

import msgpack

from mailserverd.search.text import MessageText, StoredText

#: The gram of docs that every text search must check (too long to index by grams).
UNFILTERED = b"\x00\x00\x00"
GRAM = 3


def grams_of(data: bytes) -> set[bytes]:
    """Every ``GRAM``-byte substring of ``data``."""
    return {data[index:index + GRAM] for index in range(len(data) - GRAM + 1)}


def index_entry(raw: bytes, facts: dict, text_max: int) -> tuple[bytes, set[bytes]]:
    """``(stored text, grams)`` of one message (see the module docstring). Never raises
    for broken MIME (the text extraction does not)."""
    text = MessageText(lambda: raw, lambda: facts)
    doc = text.document()
    stored = zlib.compress(msgpack.packb(doc, use_bin_type=True), 1)
    texts = [part.encode("utf-8", "surrogatepass") for part in text.searched_texts()]
    if sum(len(part) for part in texts) > text_max:
        return stored, {UNFILTERED}
    grams: set[bytes] = set()
    for part in texts:
        grams |= grams_of(part)
    return stored, grams


def stored_text(stored: bytes) -> StoredText:
    """The :class:`StoredText` of what :func:`index_entry` stored."""
    return StoredText(msgpack.unpackb(zlib.decompress(stored), raw=False))


def needle_grams(needle: str) -> set[bytes]:
    """The grams every text holding ``needle`` (normalised) holds; empty if it is too short."""
    return grams_of(needle.encode("utf-8", "surrogatepass"))
