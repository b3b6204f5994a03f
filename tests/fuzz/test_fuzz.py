"""Fuzzing with atheris: each harness beside this file (``fuzz_<name>.py``, one per
parser) replays its seed corpus (``corpus/<name>/``), and fuzzes for a bounded time.

The harnesses run as subprocesses (libFuzzer owns the process it runs in), so
this module never imports atheris: without it these tests skip, except under
CI=true, where they fail. A crash, a hang (one input running past
:data:`INPUT_TIMEOUT`) or memory past :data:`RSS_LIMIT_MB` fails the test with
the path of the input and the harness's traceback; replay the input with
``python tests/fuzz/fuzz_<name>.py FILE``, then add it as a regression test
(tests/unit/test_fuzz_regressions.py). The fuzzing runs on a copy of the
corpus in a temporary directory: CI never grows the repository's corpus.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import IN_CI

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
HARNESSES = sorted(path.stem.removeprefix("fuzz_") for path in HERE.glob("fuzz_*.py"))

#: Seconds each harness fuzzes; six of them take about three minutes. Set
#: MAILSERVERD_FUZZ_SECONDS to fuzz longer (a nightly run, or before a release).
FUZZ_SECONDS = int(os.environ.get("MAILSERVERD_FUZZ_SECONDS", "30"))
#: Seconds one input may run before libFuzzer reports it as a hang.
INPUT_TIMEOUT = 10
#: Memory (MB) a harness may use before libFuzzer reports it as out of memory.
RSS_LIMIT_MB = 2048
#: Seconds a harness may take beyond its fuzzing time (start-up, the corpus, exit).
GRACE_SECONDS = 300
#: Lines of a harness's output shown when it found no traceback to show.
OUTPUT_TAIL_LINES = 60


def require_atheris() -> None:
    """Skip without atheris (fail under CI, which must run these tests)."""
    if importlib.util.find_spec("atheris") is None:
        message = "atheris is not installed (pip install -e '.[test]')"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def run_harness(name: str, arguments: list[str], seconds: int) -> subprocess.CompletedProcess:
    """Run ``fuzz_<name>.py`` with libFuzzer ``arguments``; its output is in ``stdout``."""
    command = [sys.executable, str(HERE / f"fuzz_{name}.py"), f"-timeout={INPUT_TIMEOUT}",
               f"-rss_limit_mb={RSS_LIMIT_MB}", *arguments]
    return subprocess.run(command, cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, errors="replace", timeout=seconds + GRACE_SECONDS)


def crash_report(name: str, result: subprocess.CompletedProcess, artifacts: Path | None) -> str:
    """What the failure says: the inputs kept, how to replay them, the traceback."""
    output = result.stdout
    if artifacts is not None:
        found = sorted(artifacts.iterdir())
    else:  # replaying seeds: the one running when it crashed
        found = [line.removeprefix("Running: ") for line in output.splitlines()
                 if line.startswith("Running: ")][-1:]
    start = output.find("=== Uncaught Python exception: ===")
    if start < 0:
        detail = "\n".join(output.splitlines()[-OUTPUT_TAIL_LINES:])
    else:
        detail = output[start:]
    inputs = "\n".join(f"  {path}  (replay: python tests/fuzz/fuzz_{name}.py {path})" for path in found)
    return (f"fuzz_{name}.py exited {result.returncode}; input(s) kept:\n{inputs or '  (none)'}\n"
            f"{detail}")


@pytest.mark.parametrize("name", HARNESSES)
def test_seed_corpus_replays_cleanly(name):
    """Every seed runs through its harness without a crash (also checks the harness starts)."""
    require_atheris()
    seeds = sorted(str(path) for path in (CORPUS / name).iterdir())
    assert seeds, f"no seed corpus in {CORPUS / name}"
    result = run_harness(name, seeds, seconds=0)
    if result.returncode != 0:
        pytest.fail(crash_report(name, result, None), pytrace=False)
    assert result.stdout.count("Executed ") == len(seeds), result.stdout[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("name", HARNESSES)
def test_fuzzing_finds_no_crash(name, tmp_path):
    """libFuzzer for FUZZ_SECONDS on a copy of the corpus: no crash, hang or memory blow-up."""
    require_atheris()
    corpus = tmp_path / "corpus"
    shutil.copytree(CORPUS / name, corpus)
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    result = run_harness(name, [str(corpus), f"-max_total_time={FUZZ_SECONDS}",
                                f"-artifact_prefix={artifacts}/", "-print_final_stats=1"],
                         seconds=FUZZ_SECONDS)
    if result.returncode != 0 or any(artifacts.iterdir()):
        pytest.fail(crash_report(name, result, artifacts), pytrace=False)
    assert "Done " in result.stdout, result.stdout[-2000:]


def test_every_harness_has_a_seed_corpus():
    """Harnesses and corpus directories match one to one."""
    assert HARNESSES, "no harness found"
    assert sorted(path.name for path in CORPUS.iterdir()) == HARNESSES
