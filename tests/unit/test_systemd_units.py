"""The systemd units: `systemd-analyze verify` accepts them without a warning, and
the socket unit opens exactly the example config's listeners."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO, require_program
from mailserverd.config import load_config

UNITS = REPO / "systemd"


def test_units_verify_cleanly(tmp_path):
    analyze = require_program("systemd-analyze", "systemd")
    # verify checks that ExecStart's program exists; in a checkout it is the venv's.
    program = Path(sys.executable).with_name("mailserverd")
    assert program.exists(), program
    service = (UNITS / "mailserverd.service").read_text()
    assert service.count("/usr/bin/mailserverd") == 3
    (tmp_path / "mailserverd.service").write_text(service.replace("/usr/bin/mailserverd", str(program)))
    shutil.copy(UNITS / "mailserverd.socket", tmp_path)
    # --man=no: the man pages the units name are not installed in a checkout.
    result = subprocess.run(
        [analyze, "verify", "--man=no", "mailserverd.service", "mailserverd.socket"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""  # unknown keys are only warnings: none either


def settings(text: str, key: str) -> list[str]:
    return re.findall(rf"(?m)^{key}=(.*)$", text)


def test_service_is_notify_and_hardened():
    service = (UNITS / "mailserverd.service").read_text()
    assert settings(service, "Type") == ["notify"]
    assert settings(service, "ExecReload")[-1] == "/bin/kill -HUP $MAINPID"
    assert settings(service, "User") == ["mailserverd"]
    assert settings(service, "AmbientCapabilities") == ["CAP_NET_BIND_SERVICE"]
    assert settings(service, "CapabilityBoundingSet") == ["CAP_NET_BIND_SERVICE"]
    assert settings(service, "ProtectSystem") == ["strict"]
    assert settings(service, "ReadWritePaths") == [str(load_config(REPO / "etc" / "mailserverd.toml")
                                                       .server.data_dir)]
    for flag in ("NoNewPrivileges", "PrivateTmp", "ProtectHome", "MemoryDenyWriteExecute"):
        assert settings(service, flag) == ["yes"], flag


def test_socket_unit_matches_the_example_listeners():
    config = load_config(REPO / "etc" / "mailserverd.toml")
    wanted = sorted(f"{listener.address}:{listener.port}" for listener in config.listeners)
    assert sorted(settings((UNITS / "mailserverd.socket").read_text(), "ListenStream")) == wanted
