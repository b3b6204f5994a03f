"""IMAP value serializer and parser (RFC 9051 §4, §9)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailserverd.imap.wire import (
    QUOTED_MAX,
    RUN_KEY,
    WireParseError,
    astring,
    literal,
    nstring,
    parse_values,
    plain,
    quoted,
    run,
    serialize,
    string,
)


def test_serialize_scalars():
    assert serialize(None) == b"NIL"
    assert serialize(0) == b"0"
    assert serialize(4294967295) == b"4294967295"
    assert serialize(b"text") == b'"text"'
    assert serialize(b"") == b'""'
    assert serialize("FLAGS") == b"FLAGS"


def test_serialize_nested_lists():
    value = [b"text", b"plain", [b"charset", b"us-ascii"], None, 12, []]
    assert serialize(value) == b'("text" "plain" ("charset" "us-ascii") NIL 12 ())'
    assert serialize([[None], [[1]]]) == b"((NIL) ((1)))"


@pytest.mark.parametrize("data", [b"a\r\nb", b"a\nb", b"a\rb", b"caf\xc3\xa9", b'say "hi"',
                                  b"back\\slash", b"nul\x00"])
def test_strings_a_quoted_string_cannot_carry_become_literals(data):
    assert serialize(data) == b"{%d}\r\n" % len(data) + data


def test_long_strings_become_literals():
    assert serialize(b"x" * QUOTED_MAX) == b'"' + b"x" * QUOTED_MAX + b'"'
    assert serialize(b"x" * (QUOTED_MAX + 1)).startswith(b"{%d}\r\n" % (QUOTED_MAX + 1))


def test_quoted_escapes_and_refuses_line_breaks():
    assert quoted(b'a"b\\c') == b'"a\\"b\\\\c"'
    with pytest.raises(ValueError):
        quoted(b"a\r\nb")


def test_literal_nstring_string():
    assert literal(b"abc") == b"{3}\r\nabc"
    assert nstring(None) == b"NIL"
    assert nstring(b"x") == b'"x"'
    assert string(b"x\r\n") == b"{3}\r\nx\r\n"


@pytest.mark.parametrize("data,expected", [
    (b"INBOX", b"INBOX"),
    (b"a]b", b"a]b"),            # "]" is an ASTRING-CHAR
    (b"", b'""'),
    (b"NIL", b'"NIL"'),          # would read back as NIL
    (b"two words", b'"two words"'),
    (b"a(b", b'"a(b"'),
    (b"a%b", b'"a%b"'),
    (b"a{b", b'"a{b"'),
    (b"\xc3\xa9", b"{2}\r\n\xc3\xa9"),
])
def test_astring(data, expected):
    assert astring(data) == expected


def test_runs_are_written_back_to_back():
    # RFC 9051 §9 body-type-mpart = 1*body SP media-subtype [SP body-ext-mpart]
    parts = [[b"text", b"plain"], [b"text", b"html"]]
    assert serialize([run(parts), b"alternative", [b"boundary", b"x"], None]) == (
        b'(("text" "plain")("text" "html") "alternative" ("boundary" "x") NIL)')
    # RFC 9051 §9 env-from = "(" 1*address ")" / nil
    addresses = [[b"A", None, b"a", b"x.test"], [b"B", None, b"b", b"x.test"]]
    assert serialize([None, [run(addresses)], None]) == (
        b'(NIL (("A" NIL "a" "x.test")("B" NIL "b" "x.test")) NIL)')
    # elsewhere lists stay separated by SP (e.g. body-fld-dsp SP body-fld-lang)
    assert serialize([[b"inline", None], [b"en"]]) == b'(("inline" NIL) ("en"))'


def test_run_edge_cases():
    assert run(iter([1])) == {RUN_KEY: [1]}
    assert serialize([run([[1]])]) == b"((1))"
    assert serialize([1, run([[2], [3]]), run([[4]]), 5]) == b"(1 (2)(3) (4) 5)"
    assert serialize([run([run([[1], [2]]), [3]]), 4]) == b"((1)(2)(3) 4)"
    assert serialize([run([]), b"x"]) == b'("x")'  # an empty run is no item
    assert serialize([b"x", run([]), b"y"]) == b'("x" "y")'
    assert serialize(run([[1], [2]])) == b"(1)(2)"
    assert serialize([run([b"a", 1])]) == b'("a"1)'  # a run holds any values
    with pytest.raises(TypeError):
        serialize([{RUN_KEY: [1], "other": 2}])
    with pytest.raises(TypeError):
        serialize([{RUN_KEY: b"not a list"}])


def test_plain_splices_runs():
    tree = [run([[b"a", [run([[1], [2]])]], [b"b"]]), b"mixed", None]
    assert plain(tree) == [[b"a", [[1], [2]]], [b"b"], b"mixed", None]
    assert plain(run([[1], [2]])) == [[1], [2]]
    assert plain(b"x") == b"x"
    assert parse_values(serialize(tree)) == [plain(tree)]
    with pytest.raises(TypeError):
        plain([{"x": []}])


def test_serialize_rejects_other_types():
    with pytest.raises(TypeError):
        serialize(True)
    with pytest.raises(TypeError):
        serialize(1.5)
    with pytest.raises(TypeError):
        serialize({"a": 1})


def test_serialize_deep_tree_without_recursion():
    tree: list = []
    node = tree
    for _ in range(5000):
        child: list = []
        node.append(child)
        node = child
    text = serialize(tree)
    assert text == b"(" * 5001 + b")" * 5001
    (parsed,) = parse_values(text)
    depth = 0
    while parsed:  # list equality would recurse; walk it instead
        (parsed,) = parsed
        depth += 1
    assert depth == 5000


def test_parse_values_basic():
    assert parse_values(b'1 (UID 7 FLAGS (\\Seen) X "a\\"b" NIL nil {3}\r\nx\r\n)') == [
        1, ["UID", 7, "FLAGS", ["\\Seen"], "X", b'a"b', None, None, b"x\r\n"]]


def test_parse_values_section_atoms():
    assert parse_values(b"BODY[HEADER.FIELDS (SUBJECT FROM)] {2}\r\n\r\n") == [
        "BODY[HEADER.FIELDS (SUBJECT FROM)]", b"\r\n"]
    assert parse_values(b"BODY[1.2]<0> NIL") == ["BODY[1.2]<0>", None]


def test_parse_values_literal_plus_and_trailing_crlf():
    assert parse_values(b"{2+}\r\nab\r\n") == [b"ab"]


@pytest.mark.parametrize("data", [b"(a", b"a)", b'"open', b"{5}\r\nab", b"{x}\r\n",
                                  b'"a\r\nb"', b"BODY[1", b"\x01"])
def test_parse_values_rejects_malformed(data):
    with pytest.raises(WireParseError):
        parse_values(data)


_trees = st.recursive(
    st.none() | st.integers(0, 2**63) | st.binary(max_size=200),
    lambda children: st.lists(children, max_size=6),
    max_leaves=40)


@settings(max_examples=300, deadline=None)
@given(_trees)
def test_serialize_then_parse_round_trips(tree):
    assert parse_values(serialize(tree)) == [tree]


# Runs of lists, as facts use them (a run of scalars back to back would not
# read back: "1""2" and 12 are not two values).
_marked_trees = st.recursive(
    st.none() | st.integers(0, 2**63) | st.binary(max_size=50),
    lambda children: st.lists(children, max_size=5)
    | st.lists(st.lists(children, max_size=4), max_size=4).map(run),
    max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(st.lists(_marked_trees, max_size=5))
def test_serialize_with_runs_then_parse_gives_the_plain_tree(tree):
    assert parse_values(serialize(tree)) == [plain(tree)]
