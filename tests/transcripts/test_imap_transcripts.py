"""Every IMAP transcript under imap/ replayed against ImapSession on the real store:
one test per file (the format is described in imap_transcript.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted

from transcript_store import store  # noqa: F401 (the fixture; first: it puts tests/unit on the path)
from imap_transcript import parse_file, replay
from mailserverd.imap.commands import COMMANDS
from mailserverd.imap.session import BASE_CAPABILITIES

FILES = sorted((Path(__file__).parent / "imap").glob("*.txt"))


def _param(path: Path):
    reason = parse_file(path).xfail
    marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
    return pytest.param(path, id=path.stem, marks=marks)


#: COMPRESS (RFC 4978) changes the byte stream itself; its tests are its own.
TESTED_ELSEWHERE = {"COMPRESS", "COMPRESS=DEFLATE"}


def _client_commands() -> set[str]:
    """The command names the transcripts' C: lines send (``UID FETCH`` as one)."""
    names = set()
    for path in FILES:
        for step in parse_file(path).dialogue:
            words = step.data.decode("utf-8", "replace").upper().split()
            if step.kind == "C" and len(words) >= 2:
                names.add(" ".join(words[1:3]) if words[1] == "UID" and len(words) > 2 else words[1])
    return names


def test_every_command_has_a_transcript():
    missing = set(COMMANDS) - _client_commands() - TESTED_ELSEWHERE
    assert not missing, f"no transcript sends {sorted(missing)}"


def test_every_capability_is_named_by_a_transcript():
    """Each extension's transcript names it in its comments (with the RFC section)."""
    comments = "".join(line for path in FILES for line in path.read_text("utf-8").splitlines()
                       if line.startswith("#")).upper()
    missing = {cap for cap in BASE_CAPABILITIES
               if cap not in TESTED_ELSEWHERE and cap.upper() not in comments}
    assert not missing, f"no transcript is about {sorted(missing)}"


def test_there_are_transcripts():
    assert len(FILES) >= 20, FILES


@pytest.mark.parametrize("path", [_param(path) for path in FILES])
@pytest_twisted.ensureDeferred
async def test_imap_transcript(path, store):
    await replay(parse_file(path), store)
