"""DKIM verification of every signature of a message (RFC 6376, 8301, 8463), via dkimpy.

dkimpy does the canonicalisation, hashing and signature arithmetic; this
module fetches the keys through the configured resolver and sorts each
signature's outcome into an RFC 8601 §2.7.1 result:

- ``pass``: the signature verifies;
- ``fail``: the key was found but the body hash or signature does not match;
- ``policy``: it verifies cryptographically but we do not accept it
  (rsa-sha1 or an RSA key under 1024 bits, RFC 8301 §3.1 and §3.2);
- ``neutral``: it could not be processed (ed25519 without pynacl installed);
- ``temperror``: the key lookup failed temporarily (SERVFAIL, timeout);
- ``permerror``: a malformed signature, or no usable key in DNS (RFC 6376 §6.1.2).

A message without signatures gives no results (the caller reports ``dkim=none``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import dkim as dkimpy
from dkim.util import InvalidTagValueList, parse_tag_value

from mailserverd.delivery.dns import BlockingResolver, DNSTempError
from mailserverd.mail.mime import header_end, header_fields

# RFC 6376 §6.1: a verifier MAY limit the signatures it checks; each costs a
# DNS lookup and a public-key operation, so a message cannot make us do many.
DKIM_SIGNATURES_MAX = 8
# RFC 8301 §3.2: verifiers MUST NOT consider keys under 1024 bits valid.
RSA_KEY_BITS_MIN = 1024
# RFC 6008 §4: header.b carries enough of b= to tell signatures apart (>= 8).
HEADER_B_PREFIX = 12


@dataclass(frozen=True)
class DKIMResult:
    """One signature's outcome: ``result`` (see the module docstring), the
    signing ``domain`` (d=), ``selector`` (s=), ``b_prefix`` (the start of
    b=, for ``header.b``), ``algorithm`` (a=) and a short ``reason`` for logs."""

    result: str
    domain: str
    selector: str
    b_prefix: str
    algorithm: str
    reason: str = ""


class _KeyFetch:
    """dkimpy's ``dnsfunc`` over our resolver, remembering what the lookup found.

    dkimpy turns every key problem into a plain ``False``; the outcome kept
    here (``"ok"``, ``"missing"``, ``"bad"``, ``"temp"``) lets us report
    permerror or temperror instead of fail.
    """

    def __init__(self, resolver: BlockingResolver):
        self.resolver = resolver
        self.outcome = ""
        self.detail = ""

    def __call__(self, name: bytes, timeout: float = 5) -> bytes | None:
        try:
            records = self.resolver.txt(name.decode("ascii", "replace"))
        except DNSTempError as error:
            self.outcome, self.detail = "temp", str(error)
            raise dkimpy.DnsTimeoutError(str(error)) from error
        if not records:
            self.outcome, self.detail = "missing", "no key record"
            return None
        # RFC 6376 §3.6.2.2: with several records the verifier may pick one; take the first.
        record = records[0]
        try:
            dkimpy.evaluate_pk(name, record)
        except dkimpy.NaClNotFoundError as error:
            self.outcome, self.detail = "unsupported", str(error)
        except (dkimpy.DKIMException, ValueError, TypeError, KeyError) as error:
            self.outcome, self.detail = "bad", f"bad key record: {error}"
        else:
            self.outcome = "ok"
        return record


def _signature_tags(value: bytes) -> dict[bytes, bytes]:
    """The tags of a DKIM-Signature value, or ``{}`` if it cannot be parsed."""
    try:
        return parse_tag_value(re.sub(rb"\r?\n[ \t]", b" ", value))
    except (InvalidTagValueList, ValueError):
        return {}


def _describe(tags: dict[bytes, bytes], result: str, reason: str) -> DKIMResult:
    def text(tag: bytes) -> str:
        return tags.get(tag, b"").decode("ascii", "replace")
    b_value = re.sub(r"\s+", "", text(b"b"))
    return DKIMResult(result, text(b"d").lower(), text(b"s"), b_value[:HEADER_B_PREFIX],
                      text(b"a").lower(), reason)


def _verify_one(message: bytes, index: int, tags: dict[bytes, bytes],
                resolver: BlockingResolver) -> DKIMResult:
    """Verify signature number ``index`` (0 = topmost) and classify the outcome."""
    fetch = _KeyFetch(resolver)
    try:
        verifier = dkimpy.DKIM(message, minkey=RSA_KEY_BITS_MIN, timeout=resolver.timeout)
        verified = verifier.verify(idx=index, dnsfunc=fetch)
    except dkimpy.DKIMException as error:
        if fetch.outcome == "ok" and isinstance(error, dkimpy.KeyFormatError):
            return _describe(tags, "policy", str(error))   # key too small (RFC 8301 §3.2)
        if fetch.outcome == "ok":
            return _describe(tags, "fail", str(error))     # body hash mismatch
        if fetch.outcome == "unsupported":
            return _describe(tags, "neutral", fetch.detail)
        return _describe(tags, "permerror", str(error) or error.__class__.__name__)
    if fetch.outcome == "temp":
        return _describe(tags, "temperror", fetch.detail)
    if fetch.outcome in ("missing", "bad"):
        return _describe(tags, "permerror", fetch.detail)
    if fetch.outcome == "unsupported":
        return _describe(tags, "neutral", fetch.detail)
    if not verified:
        return _describe(tags, "fail", "signature does not verify")
    if tags.get(b"a", b"").lower() == b"rsa-sha1":
        return _describe(tags, "policy", "rsa-sha1 is not accepted (RFC 8301 §3.1)")
    return _describe(tags, "pass", "")


def verify_signatures(message: bytes, resolver: BlockingResolver,
                      signatures_max: int = DKIM_SIGNATURES_MAX) -> list[DKIMResult]:
    """Verify each DKIM-Signature of ``message`` (topmost first).

    Takes the raw message (CRLF line ends) and the resolver for key lookups.
    Returns one :class:`DKIMResult` per signature, at most ``signatures_max``; ``[]`` when the message is unsigned. Never
    raises for bad input or DNS trouble. Blocks on DNS and crypto: call it
    from a pool thread only.
    """
    end, _body = header_end(message, 0)
    signatures = header_fields(message, 0, end, frozenset({b"dkim-signature"}))
    results = []
    for index, (_name, value) in enumerate(signatures[:signatures_max]):
        results.append(_verify_one(message, index, _signature_tags(value), resolver))
    return results
