"""The one address parser: RFC 5321 §4.1.2 paths, RFC 6531 UTF-8, §4.5.3.1 limits."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailserverd.mail.address import (
    AddressError,
    canonical,
    parse_address,
    parse_path,
    parse_path_prefix,
    split,
)


@pytest.mark.parametrize(
    "wire, expected",
    [
        (b"<user@example.com>", "user@example.com"),
        (b"<User.Name+tag@Example.COM>", "User.Name+tag@Example.COM"),
        (b"<>", ""),
        (b"<@relay.example,@other.example:user@example.com>", "user@example.com"),
        (b'<"john doe"@example.com>', '"john doe"@example.com'),
        (b'<"plain"@example.com>', "plain@example.com"),  # needless quotes dropped
        (b'<"a\\"b"@example.com>', '"a\\"b"@example.com'),
        (b'<"a@b"@example.com>', '"a@b"@example.com'),
        (b"<user@[192.0.2.1]>", "user@[192.0.2.1]"),
        (b"<user@[IPv6:2001:db8::1]>", "user@[IPv6:2001:db8::1]"),
        (b"<!#$%&'*+-/=?^_`{|}~@x.example>", "!#$%&'*+-/=?^_`{|}~@x.example"),
        (b"<a@1.example>", "a@1.example"),
    ],
)
def test_parse_path_accepts(wire, expected):
    assert parse_path(wire, utf8=False) == expected


@pytest.mark.parametrize(
    "wire",
    [
        b"user@example.com",  # no brackets
        b"<user@example.com",
        b"<user@example.com> ",
        b"<user>",  # no domain (<Postmaster> is the SMTP layer's special case)
        b"<@example.com>",
        b"<a..b@example.com>",
        b"<.a@example.com>",
        b"<a.@example.com>",
        b"<a b@example.com>",
        b"<a@-example.com>",
        b"<a@example-.com>",
        b"<a@example..com>",
        b"<a@example.com.>",
        b"<a@exa_mple.com>",
        b"<a@[256.1.1.1]>",
        b"<a@[1.2.3]>",
        b"<a@[IPv6:2001:db8::g]>",
        b"<a@[tag:something]>",
        b"<a@[1.2.3.4>",
        b'<"unterminated@example.com>',
        b'<"tab\there"@example.com>',
        b"<@relay.example user@example.com>",
        b"<@relay.example:>",
    ],
)
def test_parse_path_rejects(wire):
    with pytest.raises(AddressError):
        parse_path(wire, utf8=False)


def test_null_path_can_be_refused():
    with pytest.raises(AddressError, match="null path"):
        parse_path(b"<>", utf8=False, allow_null=False)


def test_prefix_returns_the_parameters_untouched():
    address, rest = parse_path_prefix(b'<"a b"@example.com> SIZE=100 BODY=8BITMIME', utf8=False)
    assert address == '"a b"@example.com'
    assert rest == b" SIZE=100 BODY=8BITMIME"
    assert parse_path_prefix(b"<> SIZE=1", utf8=False) == ("", b" SIZE=1")


def test_non_ascii_needs_smtputf8():
    wire = "<jörg@bücher.example>".encode()
    with pytest.raises(AddressError, match="SMTPUTF8"):
        parse_path(wire, utf8=False)
    assert parse_path(wire, utf8=True) == "jörg@bücher.example"


def test_utf8_must_be_valid():
    with pytest.raises(AddressError, match="UTF-8"):
        parse_path(b"<j\xffrg@example.com>", utf8=True)


def test_utf8_quoted_local_part():
    assert parse_path('<"jö rg"@example.com>'.encode(), utf8=True) == '"jö rg"@example.com'


def test_canonical_lower_cases_and_uses_a_labels():
    assert canonical("Alice@Example.COM") == "alice@example.com"
    assert canonical("Jörg@Bücher.Example") == "jörg@xn--bcher-kva.example"
    assert canonical("a@[IPv6:2001:DB8::1]") == "a@[ipv6:2001:db8::1]"
    assert canonical("") == ""


def test_split_uses_the_last_at():
    assert split('"a@b"@example.com') == ('"a@b"', "example.com")
    with pytest.raises(AddressError):
        split("no-at-sign")
    with pytest.raises(AddressError):
        split("@example.com")


def test_local_part_limit_is_64_octets():
    # RFC 5321 §4.5.3.1.1
    assert parse_path(b"<" + b"a" * 64 + b"@example.com>", utf8=False)
    with pytest.raises(AddressError, match="local part"):
        parse_path(b"<" + b"a" * 65 + b"@example.com>", utf8=False)


def test_local_part_limit_counts_utf8_octets():
    local = "é" * 33  # 66 octets, 33 characters
    with pytest.raises(AddressError, match="local part"):
        parse_path(f"<{local}@example.com>".encode(), utf8=True)


def test_label_limit_is_63_octets():
    assert parse_path(b"<a@" + b"b" * 63 + b".example>", utf8=False)
    with pytest.raises(AddressError, match="label"):
        parse_path(b"<a@" + b"b" * 64 + b".example>", utf8=False)


def test_domain_limit_is_255_octets():
    # RFC 5321 §4.5.3.1.2: four 63-octet labels and dots make 255.
    domain_255 = b".".join([b"d" * 63] * 4)
    assert len(domain_255) == 255
    # A 255-octet domain passes the domain rule; the whole path is then too long.
    with pytest.raises(AddressError, match="longer than 254"):
        parse_address(b"a@" + domain_255)
    domain_256 = b"a." + b".".join([b"d" * 63] * 3 + [b"d" * 62])
    assert len(domain_256) == 256
    with pytest.raises(AddressError, match="domain longer"):
        parse_address(b"a@" + domain_256)


def test_path_limit_is_256_octets():
    # RFC 5321 §4.5.3.1.3: "<" local "@" domain ">" at most 256 octets.
    domain = b".".join([b"d" * 63] * 3) + b"." + b"e" * 61  # 253 octets
    local_ok = b"a"  # "<" + 1 + "@" + 253 + ">" = 257 octets
    with pytest.raises(AddressError, match="path longer"):
        parse_path(b"<" + local_ok + b"@" + domain + b">", utf8=False)
    domain = domain[:-1]  # 252 octets: path of 256
    assert parse_path(b"<" + local_ok + b"@" + domain + b">", utf8=False)


def test_source_route_does_not_count_against_the_address():
    route = b"@" + b"r" * 60 + b".example:"
    assert parse_path(b"<" + route + b"user@example.com>", utf8=False) == "user@example.com"


def test_parse_address_for_logins_and_cli():
    assert parse_address("User@Example.com") == "User@Example.com"
    assert parse_address("jörg@bücher.example") == "jörg@bücher.example"
    with pytest.raises(AddressError):
        parse_address("jörg@bücher.example", utf8=False)
    for bad in ("", "user", "<user@example.com>", "user@example.com extra", "a@b@c"):
        with pytest.raises(AddressError):
            parse_address(bad)


def test_parameter_bytes_are_not_judged_by_the_path_parser():
    assert parse_path_prefix(b"<a@example.com> X-ODD=\xff\xfe", utf8=False) == (
        "a@example.com", b" X-ODD=\xff\xfe")
    assert parse_path_prefix(b"<a@example.com> X-ODD=\xff", utf8=True) == (
        "a@example.com", b" X-ODD=\xff")


def test_bad_bytes_inside_the_path_get_the_encoding_reason():
    with pytest.raises(AddressError, match="SMTPUTF8"):
        parse_path_prefix(b"<j\xc3\xb6rg@example.com> SIZE=1", utf8=False)
    with pytest.raises(AddressError, match="UTF-8"):
        parse_path_prefix(b"<j\xffrg@example.com> SIZE=1", utf8=True)
    with pytest.raises(AddressError, match="UTF-8"):
        parse_path(b'<"j\xff"@example.com>', utf8=True)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300), utf8=st.booleans())
def test_any_bytes_give_an_address_or_address_error(data, utf8):
    for wire in (data, b"<" + data, b"<a@" + data):
        try:
            address, rest = parse_path_prefix(wire, utf8=utf8)
        except AddressError:
            continue
        assert wire.endswith(rest)
        if address:
            assert canonical(address)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=100))
def test_any_text_is_an_address_or_address_error(text):
    try:
        address = parse_address(text)
    except AddressError:
        return
    assert split(address)


def test_canonical_domain_validates():
    from mailserverd.mail.address import canonical_domain

    assert canonical_domain("Bücher.Example") == "xn--bcher-kva.example"
    for bad in ("", "bad domain", "-x.example", "x..example", "a_b.example", "x" * 64 + ".example"):
        with pytest.raises(AddressError):
            canonical_domain(bad)
    with pytest.raises(AddressError):
        canonical("user@bad domain")


def test_u_labels_follow_the_ascii_label_rules_too():
    with pytest.raises(AddressError):
        parse_path("<a@bü_cher.example>".encode(), utf8=True)
    with pytest.raises(AddressError):
        parse_path(("<a@" + "ü" * 60 + ".example>").encode(), utf8=True)
