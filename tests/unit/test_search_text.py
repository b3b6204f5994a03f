"""The one text extraction of search (mailserverd.search.text): decoding and normalisation."""

from __future__ import annotations

import base64
import signal

import pytest

from mailserverd.mail.facts import compute_facts
from mailserverd.search.text import MessageText, decode_header_value, html_text, normalise


def text_of(raw: bytes) -> MessageText:
    facts = compute_facts(raw)
    return MessageText(lambda: raw, lambda: facts)


def part(content_type: str, body: bytes, encoding: str | None = None) -> bytes:
    head = f"Content-Type: {content_type}\r\n"
    if encoding:
        head += f"Content-Transfer-Encoding: {encoding}\r\n"
    return head.encode() + b"\r\n" + body + b"\r\n"


def multipart(*parts: bytes, header: bytes = b"Subject: s\r\n") -> bytes:
    return (header + b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
            + b"".join(b"--B\r\n" + p for p in parts) + b"--B--\r\n")


@pytest.mark.parametrize("raw, text", [
    ("ﬁle", "file"),                   # NFKC: the ligature is two letters
    ("ＡＢＣ", "abc"),                  # NFKC: full-width letters
    ("Straße", "strasse"),             # full case folding
    ("ΣΊΣΥΦΟΣ", "σίσυφοσ"),           # final sigma folds like any sigma
    ("e\u0301", "é"),                  # composed
    ("Plain ASCII", "plain ascii"),
])
def test_normalise(raw, text):
    assert normalise(raw) == text


@pytest.mark.parametrize("value, text", [
    (b"=?utf-8?q?Caf=C3=A9?= =?utf-8?b?IG1lbnU=?= today", "Café menu today"),
    (b"=?iso-8859-1?q?J=F6rg_B?=", "Jörg B"),
    (b"=?koi8-r?b?8NLJ18XU?=", "Привет"),
    (b"=?shift_jis?b?k/qWe4zq?=", "日本語"),
    (b"=?gb2312?b?1tDOxA==?=", "中文"),
    (b"=?windows-1252?q?=80uro?=", "€uro"),
    (b"=?utf-8*en?q?lang?=", "lang"),                 # RFC 2231 §5 language
    (b"=?unknown-cs?q?abc?=", "abc"),                 # unknown charset: raw bytes
    (b"=?utf-8?b?not base64!?=", "=?utf-8?b?not base64!?="),  # not a word: kept
    (b"folded\r\n line", "folded line"),
    ("bare UTF-8 ü".encode(), "bare UTF-8 ü"),         # RFC 6532
    (b"latin-1 \xfc", "latin-1 ü"),
])
def test_decode_header_value(value, text):
    assert decode_header_value(value) == text


def test_html_is_reduced_to_its_text():
    assert html_text("<style>p{}</style><p>Gr&uuml;&#223;e<br>zwei</p><!-- x --><b>fett</b>") \
        == "\nGrüße\nzweifett"


def test_body_decodes_each_text_part_and_skips_other_media():
    raw = multipart(
        part("text/plain; charset=iso-8859-1", b"K=F6ln soft=\r\nbreak", "quoted-printable"),
        part("text/html; charset=utf-8", base64.encodebytes("<p>Ünï &amp; more</p>".encode()), "base64"),
        part("application/octet-stream", base64.encodebytes(b"binary needle"), "base64"),
        part("text/plain; charset=koi8-r", "Привет".encode("koi8-r"), "8bit"),
        part("message/rfc822", b"Subject: =?utf-8?q?inner?=\r\n\r\ninner body"),
    )
    body = text_of(raw).body()
    assert "köln softbreak" in body
    assert "ünï & more" in body
    assert "привет" in body
    assert "subject: inner" in body and "inner body" in body
    assert "needle" not in body and "<p>" not in body


def test_header_fields_and_envelope():
    raw = (b"From: =?utf-8?q?J=C3=BCrgen?= <J@Example.TEST>\r\nTo: a@b.test, \"Grp\" <c@d.test>\r\n"
           b"Subject: =?utf-8?q?R=C3=89SUM=C3=89?=\r\nX-Two: one\r\nX-Two: Two\r\n\r\nbody\r\n")
    text = text_of(raw)
    assert text.envelope("from") == "jürgen <j@example.test>"
    assert text.envelope("to") == "<a@b.test> grp <c@d.test>"
    assert text.envelope("subject") == "résumé"
    assert text.envelope("cc") == ""
    assert text.header_values("x-two") == ["one", "two"]
    assert "subject: résumé\n" in text.header()


@pytest.mark.parametrize("raw", [
    b"",
    b"no header at all",
    b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nno end",       # unterminated
    b"Content-Type: text/plain; charset=x-bogus\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!\r\n",
    b"Content-Type: text/plain\r\n\r\n\x00\xff\xfe binary \x80garbage",
    multipart(*[part("text/plain", b"p%d" % n) for n in range(300)]),
])
def test_broken_mime_never_raises(raw):
    text = text_of(raw)
    assert isinstance(text.body(), str) and isinstance(text.header(), str)


@pytest.mark.parametrize("piece", ["<!--", "<script>", "<style x>", "<br", "<p", "<", "<!-- <script> -->"])
def test_html_of_any_shape_is_reduced_in_one_pass(piece):
    # 4 MB of openers with no end took hours with lazy regular expressions; the
    # deadline is generous (a linear pass takes well under a second).
    markup = piece * (4_000_000 // len(piece)) + "tail"
    signal.signal(signal.SIGALRM, _too_slow)
    signal.alarm(60)
    try:
        text = html_text(markup)
    finally:
        signal.alarm(0)
    assert text.endswith("tail")


def _too_slow(signum, frame):
    raise AssertionError("html_text took over 60 s: not linear")


@pytest.mark.parametrize("markup, text", [
    ("<!-- a <b> c", " c"),  # an unclosed comment is an ordinary tag
    ("<script> x <br> y", " x \n y"),  # so is an unclosed script
    ("a < b", "a < b"),  # a "<" with no ">" after it is text
    ("<p <b>>", "\n>"),
    ("x<SCRIPT type=a>var a = '<b>';</script >y<Style>p{}</STYLE>z", "xyz"),
    ("<div class=a>one</div><li>two", "\none\ntwo"),
])
def test_html_edge_cases(markup, text):
    assert html_text(markup) == text


def test_8bit_text_without_a_charset_is_read_as_utf8_else_latin1():
    for body, word in (("Grüße aus Köln".encode("utf-8"), "köln"), ("Grüße aus Köln".encode("latin-1"), "köln")):
        raw = b"Subject: x\r\nContent-Type: text/plain\r\n\r\n" + body + b"\r\n"
        facts = compute_facts(raw)
        assert word in MessageText(lambda: raw, lambda: facts).body()
