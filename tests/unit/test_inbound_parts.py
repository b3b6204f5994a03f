"""The pure parts of the inbound checks: Authentication-Results, DMARC, spam rules."""

from __future__ import annotations

import pytest

from mailserverd.delivery import authresults, dmarc, spam
from mailserverd.delivery.checks import InboundSettings, from_domain_of

# --- Authentication-Results (RFC 8601)

FORGED = (
    b"Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    b"Authentication-Results: MX.Ours.Test; spf=pass\r\n"
    b"  smtp.mailfrom=x@example.test\r\n"
    b"Authentication-Results: (comment) mx.ours.test 1; dkim=pass\r\n"
    b"Authentication-Results: relay.other.test; spf=fail\r\n"
    b"Authentication-Results: mx.ours.test.evil; dkim=pass\r\n"
    b"Subject: hi\r\n"
    b"\r\n"
    b"Authentication-Results: mx.ours.test; in the body, kept\r\n"
)


def test_authserv_id_is_read_past_comments_and_lowercased():
    assert authresults.authserv_id_of(b"Authentication-Results: (c (nested)) A.Test; none") == "a.test"
    assert authresults.authserv_id_of(b'Authentication-Results: "q.test"; none') == "q.test"
    assert authresults.authserv_id_of(b"Authentication-Results:\r\n\tb.test 2;\r\n spf=pass") == "b.test"


def test_fields_claiming_our_authserv_id_are_removed_others_kept():
    cleaned = authresults.remove_claiming(FORGED, "mx.ours.test")
    assert cleaned == (
        b"Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
        b"Authentication-Results: relay.other.test; spf=fail\r\n"
        b"Authentication-Results: mx.ours.test.evil; dkim=pass\r\n"
        b"Subject: hi\r\n"
        b"\r\n"
        b"Authentication-Results: mx.ours.test; in the body, kept\r\n"
    )


def test_message_without_our_fields_is_unchanged():
    message = b"Subject: x\r\n\r\nbody\r\n"
    assert authresults.remove_claiming(message, "mx.ours.test") is message


def test_format_field_quotes_values_that_are_not_plain():
    field = authresults.format_field("mx.ours.test", [
        authresults.MethodResult("spf", "pass", (("smtp.mailfrom", '"a b"@example.test'),)),
        authresults.MethodResult("spf", "none", (("smtp.helo", "[192.0.2.1]"),)),
    ])
    assert field == (b'Authentication-Results: mx.ours.test;\r\n'
                     b'\tspf=pass smtp.mailfrom="\\"a b\\"@example.test";\r\n'
                     b'\tspf=none smtp.helo="[192.0.2.1]"\r\n')


def test_format_field_without_methods_says_none():
    assert authresults.format_field("mx.ours.test", []) == b"Authentication-Results: mx.ours.test; none\r\n"


# --- DMARC (RFC 7489)

@pytest.mark.parametrize("domain, org", [
    ("a.b.example.co.uk", "example.co.uk"),
    ("example.co.uk", "example.co.uk"),
    ("mail.example.com", "example.com"),
    ("EXAMPLE.COM.", "example.com"),
    ("co.uk", "co.uk"),
    ("x.y.example.test", "example.test"),  # unknown TLD: one label under it
])
def test_organizational_domain_from_the_public_suffix_list(domain, org):
    assert dmarc.organizational_domain(domain) == org


def test_parse_record_tags_and_defaults():
    policy = dmarc.parse_record(b"v=DMARC1; p=Reject; sp=none; adkim=s; pct=50; rua=mailto:x@y", "ex.test")
    assert policy == dmarc.DMARCPolicy("ex.test", "reject", "none", adkim="s", aspf="r", pct=50)
    assert dmarc.parse_record(b"v=DMARC1; p=quarantine", "ex.test").sp == "quarantine"


@pytest.mark.parametrize("text", [b"v=spf1 -all", b"p=reject; v=DMARC1", b"v=DMARC1; p=bogus", b"v=DMARC1"])
def test_unusable_records_are_discarded(text):
    assert dmarc.parse_record(text, "ex.test") is None


def test_invalid_p_with_rua_acts_as_p_none():
    assert dmarc.parse_record(b"v=DMARC1; p=bogus; rua=mailto:r@ex.test", "ex.test").p == "none"


@pytest.mark.parametrize("identifier, mode, expected", [
    ("example.test", "s", True),
    ("mail.example.test", "s", False),
    ("mail.example.test", "r", True),
    ("other.test", "r", False),
    ("", "r", False),
])
def test_alignment(identifier, mode, expected):
    assert dmarc.aligned(identifier, "example.test", mode) is expected


def _lookup(text: bytes, domain="example.test") -> dmarc.PolicyLookup:
    return dmarc.PolicyLookup(dmarc.parse_record(text, domain))


def test_evaluate_pass_fail_and_subdomain_policy():
    lookup = _lookup(b"v=DMARC1; p=reject; sp=quarantine")
    assert dmarc.evaluate("example.test", lookup, "pass", "bounce.example.test", []).result == "pass"
    assert dmarc.evaluate("example.test", lookup, "fail", "example.test", ["sub.example.test"]).result == "pass"
    failed = dmarc.evaluate("example.test", lookup, "pass", "other.test", ["other.test"])
    assert (failed.result, failed.disposition) == ("fail", "reject")
    sub = dmarc.evaluate("news.example.test", lookup, "none", "", [])
    assert (sub.result, sub.disposition) == ("fail", "quarantine")


def test_evaluate_pct_sampling_steps_down_one_level():
    lookup = _lookup(b"v=DMARC1; p=reject; pct=20")
    assert dmarc.evaluate("example.test", lookup, "fail", "", [], sample=0.1).disposition == "reject"
    assert dmarc.evaluate("example.test", lookup, "fail", "", [], sample=0.5).disposition == "quarantine"


def test_evaluate_without_record_and_after_temporary_error():
    assert dmarc.evaluate("example.test", dmarc.PolicyLookup(None), "fail", "", []).result == "none"
    temp = dmarc.PolicyLookup(None, temperror=True)
    assert dmarc.evaluate("example.test", temp, "fail", "", []).result == "temperror"


@pytest.mark.parametrize("header, expected", [
    (b"From: Alice <alice@Mail.Example.TEST>\r\n", ("mail.example.test", True)),
    (b"From: a@example.test, b@example.test\r\n", ("example.test", True)),
    (b"From: a@example.test, b@other.test\r\n", ("", False)),
    (b"From: a@example.test\r\nFrom: b@example.test\r\n", ("", False)),
    (b"Subject: no from\r\n", ("", True)),
])
def test_from_domain_of(header, expected):
    assert from_domain_of(header + b"\r\nbody\r\n") == expected


# --- spam rules

def test_dnsbl_query_names():
    assert spam.dnsbl_query_name("192.0.2.99", "bl.test.") == "99.2.0.192.bl.test"
    assert spam.dnsbl_query_name("::ffff:192.0.2.99", "bl.test") == "99.2.0.192.bl.test"
    name = spam.dnsbl_query_name("2001:db8::1", "bl.test")
    assert name == "1." + "0." * 23 + "8.b.d.0.1.0.0.2.bl.test"


def test_header_findings():
    complete = b"From: a@x.test\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <1@x.test>\r\n"
    assert spam.header_findings(complete + b"Subject: Hello there friend\r\n\r\n") == []
    assert spam.header_findings(complete + b"Subject: BUY CHEAP WATCHES NOW!!\r\n\r\n") == ["SUBJECT_ALL_CAPS"]
    assert spam.header_findings(complete + b"Subject: =?utf-8?q?WIN_A_PRIZE_T=C3=96DAY?=\r\n\r\n") == \
        ["SUBJECT_ALL_CAPS"]
    assert spam.header_findings(complete + b"Subject: OK\r\n\r\n") == []  # too short to shout
    assert spam.header_findings(b"Subject: x\r\n\r\nFrom: in body\r\n") == \
        ["MISSING_FROM", "MISSING_DATE", "MISSING_MESSAGE_ID"]


def test_score_and_status_fields():
    tests = ["SPF_FAIL", "DNSBL_LISTED:bl.test", "MISSING_DATE"]
    assert spam.total_score(tests) == 8.0
    assert spam.status_fields(8.0, tests, 5.0) == [
        b"X-Spam-Score: 8.0\r\n",
        b"X-Spam-Status: Yes, score=8.0 required=5.0 tests=SPF_FAIL,DNSBL_LISTED:bl.test,MISSING_DATE\r\n",
    ]
    assert spam.status_fields(0.0, [], 5.0)[1] == b"X-Spam-Status: No, score=0.0 required=5.0 tests=none\r\n"


def test_settings_refuse_an_unknown_dmarc_reject_action():
    with pytest.raises(ValueError):
        InboundSettings("mx.test", None, 1.0, dmarc_reject_action="drop")
