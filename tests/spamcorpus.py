"""A generated corpus of ham and spam whose vocabularies overlap, as real ones do.

Both classes are written mostly in the same everyday words; each has words
it favours, and borrows some of the other's (newsletters that offer a
discount, spam about a "meeting" or an "invoice"); headers, links and
encodings (quoted-printable HTML, base64 text, RFC 2047 subjects) vary.
Everything comes from a seeded ``random.Random``: the same seed gives the
same messages.
"""

from __future__ import annotations

import base64
import quopri
import random

COMMON = """the and you your this that for with have will from please today time new
information email message team week here about more there what when just like
know also would could should people work year make good great help need want
next first last again still really best sure look thank hello regards""".split()

HAM = """meeting project report attached review schedule lunch thanks deadline draft
budget agenda colleague minutes quarterly notes tomorrow conference release
branch merge ticket customer feedback slides presentation calendar invite
holiday weekend dinner family photos kids birthday question proposal contract
analysis figures spreadsheet summary update status sprint roadmap backlog""".split()

SPAM = """free offer winner click unsubscribe discount limited money cash prize credit
loan guaranteed cheap bonus casino crypto investment urgent exclusive deal
pills pharmacy weight lose instantly million claim congratulations selected
reward gift card risk satisfaction order shipping lowest price bargain promo
jackpot bitcoin profit income earn""".split()

HAM_FROM = ["alice@corp.test", "bob@corp.test", "carol@partner.test", "dave@university.test",
            "news@weekly-digest.test", "mum@family.test"]
SPAM_TLDS = ["test", "example", "invalid"]


def _words(rng: random.Random, own: list[str], other: list[str], count: int, borrow: float) -> list[str]:
    """``count`` words: 55% everyday, then the class's own or, with ``borrow``, the other's."""
    words = []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.55:
            words.append(rng.choice(COMMON))
        elif roll < 0.55 + 0.45 * borrow:
            words.append(rng.choice(other))
        else:
            words.append(rng.choice(own))
    return words


def _body(rng: random.Random, words: list[str], link: str | None) -> str:
    lines, line = [], []
    for word in words:
        line.append(word)
        if len(line) >= rng.randint(8, 14):
            lines.append(" ".join(line).capitalize() + ".")
            line = []
    if line:
        lines.append(" ".join(line).capitalize() + ".")
    if link:
        lines.insert(rng.randint(0, len(lines)), link)
    return "\r\n".join(lines) + "\r\n"


def make(rng: random.Random, spam: bool, to: str = "alice@example.test", number: int = 0) -> bytes:
    """One generated message (CRLF line ends)."""
    own, other = (SPAM, HAM) if spam else (HAM, SPAM)
    # Ham borrows less than spam does: newsletters sell, spammers imitate.
    borrow = 0.25 if spam else 0.15
    subject_words = _words(rng, own, other, rng.randint(3, 7), borrow)
    subject = " ".join(subject_words).capitalize()
    if spam and rng.random() < 0.3:
        subject = subject.upper()
    if spam:
        sender = f"{rng.choice(['deals', 'promo', 'info', 'support'])}{rng.randint(1, 999)}@" \
                 f"{rng.choice(['best', 'mega', 'top', 'prime'])}-{rng.choice(own)}.{rng.choice(SPAM_TLDS)}"
        link = f"http://{rng.choice(own)}-{rng.randint(1, 99)}.{rng.choice(SPAM_TLDS)}/?id={number}"
    else:
        sender = rng.choice(HAM_FROM)
        link = "https://wiki.corp.test/page" if rng.random() < 0.3 else None
    text = _body(rng, _words(rng, own, other, rng.randint(40, 160), borrow), link)
    headers = [f"From: {sender}", f"To: {to}", f"Date: Mon, 1 Jan 2024 10:{number % 60:02d}:00 +0000",
               f"Message-ID: <{number}.{rng.getrandbits(48):x}@{sender.split('@')[1]}>", "MIME-Version: 1.0"]
    if rng.random() < 0.3:
        encoded = base64.b64encode(subject.encode()).decode()
        headers.append(f"Subject: =?utf-8?b?{encoded}?=")
    else:
        headers.append(f"Subject: {subject}")
    style = rng.random()
    if spam and style < 0.4:
        html = "<html><body><p>" + text.replace("\r\n", "</p>\r\n<p>") + "</p></body></html>"
        body = quopri.encodestring(html.encode()).decode().replace("\n", "\r\n")
        headers += ["Content-Type: text/html; charset=utf-8", "Content-Transfer-Encoding: quoted-printable"]
    elif style < 0.2:
        body = base64.encodebytes(text.encode()).decode().replace("\n", "\r\n")
        headers += ["Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: base64"]
    else:
        body = text
        headers += ["Content-Type: text/plain; charset=utf-8"]
    return ("\r\n".join(headers) + "\r\n\r\n" + body).encode()


def corpus(seed: int, hams: int, spams: int, to: str = "alice@example.test") -> list[tuple[bytes, bool]]:
    """``hams`` + ``spams`` messages as ``(message, is_spam)``, shuffled."""
    rng = random.Random(seed)
    made = [(make(rng, False, to, n), False) for n in range(hams)]
    made += [(make(rng, True, to, hams + n), True) for n in range(spams)]
    rng.shuffle(made)
    return made
