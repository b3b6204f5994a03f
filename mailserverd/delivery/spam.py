"""The spam score: a few named rules, each with a fixed score, summed.

The rules (:data:`RULES`) are deliberately few and documented; what they look
at is the sender authentication results, DNS blocklists and some header
facts. A message whose score reaches the junk threshold goes to Junk, one
reaching the reject threshold is refused (SpamAssassin's convention: the
score "reaches" a threshold when it is at or above it). The verdict is
written as ``X-Spam-Score`` and ``X-Spam-Status`` fields.

DNSBL (RFC 5782 §2.1): the client address, reversed (IPv4 octets, IPv6
nibbles), is looked up as an A record under each configured zone; any
127.0.0.x answer means "listed".
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from email.header import decode_header, make_header

from mailserverd.delivery.dns import BlockingResolver, DNSTempError
from mailserverd.mail.mime import header_end, header_fields


@dataclass(frozen=True)
class Rule:
    """A named test, the score it adds, and why it is suspicious."""

    name: str
    score: float
    doc: str


RULES: dict[str, Rule] = {rule.name: rule for rule in (
    Rule("SPF_FAIL", 2.0, "SPF fail for MAIL FROM: the sending host is not authorised (RFC 7208 §2.6.4)."),
    Rule("SPF_SOFTFAIL", 1.0, "SPF softfail for MAIL FROM: probably not authorised (RFC 7208 §2.6.5)."),
    Rule("SPF_HELO_FAIL", 1.0, "SPF fail for the HELO name (RFC 7208 §2.3)."),
    Rule("SPF_PERMERROR", 0.5, "The sender's SPF record is broken (RFC 7208 §2.6.7)."),
    Rule("DKIM_INVALID", 1.0, "The message is DKIM-signed and no signature verifies."),
    Rule("DMARC_FAIL", 2.0, "The From domain publishes DMARC and nothing aligned passed (RFC 7489)."),
    Rule("DNSBL_LISTED", 5.0, "The client address is listed in a configured DNS blocklist (per zone)."),
    Rule("MISSING_FROM", 2.0, "No From field; RFC 5322 §3.6 requires exactly one."),
    Rule("MISSING_DATE", 1.0, "No Date field; RFC 5322 §3.6 requires exactly one."),
    Rule("MISSING_MESSAGE_ID", 0.5, "No Message-ID field; RFC 5322 §3.6.4 says SHOULD have one."),
    Rule("SUBJECT_ALL_CAPS", 1.0, "The Subject has at least 10 letters, all of them capitals."),
    Rule("BAYES_SPAM", 5.0, "The recipient's learning classifier gives a spam probability of at "
                            "least 0.9 (delivery/bayes.py)."),
    Rule("BAYES_HAM", -2.0, "The recipient's learning classifier gives a spam probability of at "
                            "most 0.2."),
)}
_CAPS_MIN_LETTERS = 10
#: Spam probabilities from which the classifier's rules fire (SpamBayes' cutoffs).
BAYES_SPAM_CUTOFF = 0.9
BAYES_HAM_CUTOFF = 0.2


def dnsbl_query_name(client_ip: str, zone: str) -> str:
    """The name to look up for ``client_ip`` in ``zone`` (RFC 5782 §2.1, §2.4):
    ``192.0.2.99`` -> ``99.2.0.192.<zone>``; IPv6 as 32 reversed nibbles.
    An IPv4-mapped IPv6 address is looked up as IPv4. Raises ValueError for a
    malformed address."""
    address = ipaddress.ip_address(client_ip)
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.version == 4:
        labels = reversed(str(address).split("."))
    else:
        labels = reversed(address.exploded.replace(":", ""))
    return ".".join(labels) + "." + zone.strip(".")


def dnsbl_listed(resolver: BlockingResolver, client_ip: str, zone: str) -> bool | None:
    """Whether ``client_ip`` is listed in ``zone``: any A answer in 127.0.0.0/24
    is a listing (RFC 5782 §2.3); ``None`` when the lookup failed temporarily.
    Blocks on DNS: call it from a pool thread only."""
    try:
        answers = resolver.addresses(dnsbl_query_name(client_ip, zone))
    except DNSTempError:
        return None
    except ValueError:
        return False
    return any(address.startswith("127.0.0.") for address in answers)


def _decoded(value: bytes) -> str:
    """A header value as text, RFC 2047 encoded-words decoded when possible."""
    text = value.decode("utf-8", "replace").replace("\r", "").replace("\n", "")
    if "=?" in text:
        try:
            return str(make_header(decode_header(text)))
        except (ValueError, LookupError, UnicodeError):
            return text
    return text


def header_findings(message: bytes) -> list[str]:
    """The header rules ``message`` triggers (MISSING_*, SUBJECT_ALL_CAPS).

    Pure: looks at the header section only; never raises.
    """
    end, _body = header_end(message, 0)
    fields = dict(reversed(header_fields(message, 0, end)))  # first occurrence wins
    found = []
    for name, rule in ((b"from", "MISSING_FROM"), (b"date", "MISSING_DATE"),
                       (b"message-id", "MISSING_MESSAGE_ID")):
        if not fields.get(name, b"").strip():
            found.append(rule)
    letters = [char for char in _decoded(fields.get(b"subject", b"")) if char.isalpha()]
    if len(letters) >= _CAPS_MIN_LETTERS and all(char.isupper() for char in letters):
        found.append("SUBJECT_ALL_CAPS")
    return found


def bayes_tests(probability: float | None) -> list[str]:
    """The classifier's rule for a spam ``probability`` (None: no model yet)."""
    if probability is None:
        return []
    if probability >= BAYES_SPAM_CUTOFF:
        return ["BAYES_SPAM"]
    return ["BAYES_HAM"] if probability <= BAYES_HAM_CUTOFF else []


def total_score(tests: list[str]) -> float:
    """The sum of the scores of ``tests`` (rule names; ``DNSBL_LISTED:<zone>``
    counts as DNSBL_LISTED), rounded to one decimal."""
    return round(sum(RULES[test.partition(":")[0]].score for test in tests), 1)


def status_fields(score: float, tests: list[str], junk_threshold: float,
                  bayes: float | None = None) -> list[bytes]:
    """The ``X-Spam-Score`` and ``X-Spam-Status`` fields, CRLF-terminated.

    ``X-Spam-Status: Yes|No, score=N.N required=J.J tests=A,B`` where Yes means
    the score reached ``junk_threshold``; ``tests=none`` when nothing fired;
    `` bayes=0.NNN`` added when the classifier gave a ``bayes`` probability.
    """
    verdict = "Yes" if score >= junk_threshold else "No"
    names = ",".join(tests) if tests else "none"
    learned = "" if bayes is None else f" bayes={bayes:.3f}"
    return [
        f"X-Spam-Score: {score:.1f}\r\n".encode("ascii"),
        f"X-Spam-Status: {verdict}, score={score:.1f} required={junk_threshold:.1f} "
        f"tests={names}{learned}\r\n".encode("utf-8"),
    ]
