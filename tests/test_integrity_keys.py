"""The master key and the data directory: first run by several processes at once, key files
left empty or truncated by a kill, a wrong but valid key refused at start (key check value),
and private file modes under a loose umask. Real processes on real files."""

from __future__ import annotations

import multiprocessing
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from concierge.registry import Registry
from concierge.registry.vault import VaultError
from tests.conftest import TEST_MASTER_KEY
from tests.mcp_servers import closed_port_url

pytestmark = pytest.mark.anyio

OTHER_KEY = "fe" * 32
PROCESSES = 6
ROUNDS = int(os.environ.get("CONCIERGE_FIRST_RUN_ROUNDS", "10"))


@pytest.fixture
def no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONCIERGE_MASTER_KEY", raising=False)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- first run ----------------------------------------------------------------------------------


def _open_at_once(homes: list[str], barrier: Any, results: Any) -> None:
    """For each fresh home: wait for the others, open the registry, report the key it uses."""
    for home in homes:
        barrier.wait(30)
        try:
            reg = Registry.open(home)
            with reg.store.transaction() as cx:  # a secret under the key this process uses
                reg.vault.put(cx, f"test/{os.getpid()}", f"written by {os.getpid()}")
            reg.close()
            results.put((home, "ok", os.getpid()))
        except BaseException as exc:  # noqa: BLE001  (reported to the parent)
            import traceback
            results.put((home, "error", f"{type(exc).__name__}: {exc} {traceback.format_exc()[-600:]}"))


def test_six_processes_opening_a_fresh_home_at_once_all_use_one_key(tmp_path, no_env_key):
    homes = [str(tmp_path / f"home{n}") for n in range(ROUNDS)]
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(PROCESSES), ctx.Queue()
    workers = [ctx.Process(target=_open_at_once, args=(homes, barrier, results)) for _ in range(PROCESSES)]
    for w in workers:
        w.start()
    answers = [results.get(timeout=60) for _ in range(PROCESSES * ROUNDS)]
    for w in workers:
        w.join(timeout=30)
    failures = [a for a in answers if a[1] != "ok"]
    print(f"\nfirst run: {len(failures)} of {len(answers)} opens failed "
          f"({PROCESSES} processes x {ROUNDS} fresh homes)")
    assert not failures, failures[:3]
    for home in homes:
        reg = Registry.open(home)  # with the key file's key: every process's secret decrypts
        for _, _, pid in (a for a in answers if a[0] == home):
            assert reg.vault.get(f"test/{pid}") == f"written by {pid}", home
        reg.close()
        assert _mode(Path(home) / "master.key") == 0o600
        assert not [p.name for p in Path(home).iterdir() if p.name.endswith(".tmp")]


def test_a_kill_while_creating_the_key_never_breaks_the_next_run(tmp_path, no_env_key):
    """SIGKILL a first run at varied moments; the next run always works, with one key."""
    code = "import sys; from concierge.registry import Registry; Registry.open(sys.argv[1]).close()"
    broken = []
    for n in range(12):
        home = tmp_path / f"home{n}"
        proc = subprocess.Popen([sys.executable, "-c", code, str(home)], env=dict(os.environ))
        deadline = time.monotonic() + 10
        # Kill it as soon as the home directory exists: the key is being made about now.
        while not home.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(0.002 * (n % 4))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        try:
            Registry.open(home).close()
            again = Registry.open(home)
            again.close()
        except VaultError as exc:
            broken.append(str(exc))
        leftovers = [p.name for p in home.iterdir() if p.name.endswith(".tmp")]
        assert not leftovers, leftovers  # a key file half made by the killed run is cleaned up
    print(f"\nkilled first runs: {len(broken)} of 12 left a home that does not open")
    assert not broken, broken


def test_an_empty_key_file_in_a_home_without_secrets_is_replaced(tmp_path, no_env_key):
    """What an older version left when killed between creating the key file and writing it,
    before anything was encrypted: replaced, since no secret can be lost."""
    home = tmp_path / "h"
    Registry.open(home).close()  # (the key check value of the key now lost is recorded)
    key_file = home / "master.key"
    key_file.write_bytes(b"")
    Registry.open(home).close()
    assert len(bytes.fromhex(key_file.read_text().strip())) == 32
    Registry.open(home).close()  # and it is the key from now on
    key_file.write_text("0123456789")  # truncated: refused, but deleting it is safe and said so
    with pytest.raises(VaultError, match="nothing is encrypted with it yet: delete it"):
        Registry.open(home)
    key_file.unlink()
    Registry.open(home).close()


def test_a_temporary_key_left_by_a_killed_run_is_removed(tmp_path, no_env_key):
    home = tmp_path / "h"
    home.mkdir()
    orphan = home / ".master.key.4242.0badcafe.tmp"  # what a kill between write and link leaves
    orphan.write_text("ab" * 32 + "\n")
    Registry.open(home).close()
    assert not orphan.exists()
    assert (home / "master.key").read_text().strip() != "ab" * 32  # it never became the key


async def test_an_empty_or_truncated_key_file_in_a_home_with_secrets_names_the_file(tmp_path, no_env_key):
    home = tmp_path / "h"
    reg = Registry.open(home)
    await reg.register({"name": "a", "base_url": closed_port_url(), "auth_kind": "bearer",
                        "token": "test-token-kept-5678"})
    reg.close()
    key_file = home / "master.key"
    good = key_file.read_text()
    for broken, what in ((b"", "is empty"), (good[:20].encode(), "does not hold a valid key"),
                         (None, "is missing")):
        if broken is None:
            key_file.unlink()
        else:
            key_file.write_bytes(broken)
        with pytest.raises(VaultError) as err:
            Registry.open(home)
        assert f"the key file {key_file} {what}" in err.value.detail
        assert "holds 2 secret(s)" in err.value.detail and "restore the file from a backup" in err.value.detail
        assert "CONCIERGE_MASTER_KEY must be" not in err.value.detail
        # never replaced (nor made) while secrets depend on the key it held
        assert (key_file.read_bytes() if key_file.exists() else None) == broken
    key_file.write_text(good)
    Registry.open(home).close()


# -- the key check value ------------------------------------------------------------------------


async def test_a_wrong_master_key_is_refused_at_start_and_writes_nothing(tmp_path, monkeypatch):
    home = tmp_path / "h"
    reg = Registry.open(home)
    await reg.register({"name": "a", "base_url": closed_port_url(), "auth_kind": "bearer",
                        "token": "test-token-under-key-a"})
    reg.close()
    before = (home / "concierge.db").stat().st_size
    monkeypatch.setenv("CONCIERGE_MASTER_KEY", OTHER_KEY)
    with pytest.raises(VaultError) as err:
        Registry.open(home)
    assert err.value.error == "wrong_master_key"
    assert "CONCIERGE_MASTER_KEY is not the key this registry's secrets are encrypted with" in err.value.detail
    assert str(home / "concierge.db") in err.value.detail
    # The CLI says the same in one line, exit 1, no traceback.
    run = subprocess.run([sys.executable, "-m", "concierge", "source", "list"], capture_output=True,
                         text=True, env={**os.environ, "CONCIERGE_HOME": str(home)}, timeout=60)
    assert run.returncode == 1 and "CONCIERGE_MASTER_KEY is not the key" in run.stderr
    assert "Traceback" not in run.stderr
    monkeypatch.setenv("CONCIERGE_MASTER_KEY", TEST_MASTER_KEY)
    reg = Registry.open(home)
    assert len(reg.store.query("SELECT key FROM vault")) == 2  # the auth and webhook secrets
    reg.close()
    assert before <= (home / "concierge.db").stat().st_size


def test_a_wrong_key_file_is_refused_naming_the_file(tmp_path, no_env_key):
    home = tmp_path / "h"
    Registry.open(home).close()
    key_file = home / "master.key"
    key_file.write_text(OTHER_KEY + "\n")
    with pytest.raises(VaultError, match=f"the key file {key_file} holds not the key"):
        Registry.open(home)


async def test_a_database_from_before_the_check_gets_one_with_the_right_key(tmp_path, monkeypatch):
    home = tmp_path / "h"
    reg = Registry.open(home)
    await reg.register({"name": "a", "base_url": closed_port_url(), "auth_kind": "bearer",
                        "token": "test-token-before-check"})
    with reg.store.transaction() as cx:
        cx.execute("DELETE FROM vault_key_check")  # as a database from before the check
    reg.close()
    monkeypatch.setenv("CONCIERGE_MASTER_KEY", OTHER_KEY)
    with pytest.raises(VaultError, match="not the key this registry's secrets are encrypted with"):
        Registry.open(home)  # it cannot decrypt the oldest secret: refused, no check recorded
    monkeypatch.setenv("CONCIERGE_MASTER_KEY", TEST_MASTER_KEY)
    reg = Registry.open(home)
    assert reg.store.query_one("SELECT COUNT(*) AS n FROM vault_key_check")["n"] == 1
    reg.close()
    monkeypatch.setenv("CONCIERGE_MASTER_KEY", OTHER_KEY)
    with pytest.raises(VaultError, match="not the key"):
        Registry.open(home)


def test_an_unset_env_key_is_never_blamed(tmp_path, no_env_key):
    home = tmp_path / "h"
    home.mkdir()
    (home / "master.key").write_text("abc\n")
    with pytest.raises(VaultError) as err:
        Registry.open(home)
    assert "CONCIERGE_MASTER_KEY must be" not in err.value.detail
    assert str(home / "master.key") in err.value.detail


# -- file modes -----------------------------------------------------------------------------------


_MODES = """
import json, os, stat, sys, anyio
from concierge.registry import Registry
reg = Registry.open(sys.argv[1])
anyio.run(reg.register, {"name": "a", "base_url": sys.argv[2], "auth_kind": "bearer",
                         "token": "test-token-perm-1234"})
home = sys.argv[1]
modes = {n: stat.S_IMODE(os.stat(os.path.join(home, n)).st_mode) for n in os.listdir(home)}
modes["."] = stat.S_IMODE(os.stat(home).st_mode)
print(json.dumps(modes))
"""


def _modes_seen_by_a_process(home: Path) -> dict[str, int]:
    """Open the registry in a new process under umask 022, register a source, and report the
    mode of everything in the home while the database (and its -wal, -shm) is open."""
    import json

    run = subprocess.run([sys.executable, "-c", _MODES, str(home), closed_port_url()],
                         capture_output=True, text=True, timeout=60, preexec_fn=lambda: os.umask(0o022))
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_home_and_files_are_private_under_umask_022(tmp_path, no_env_key):
    modes = _modes_seen_by_a_process(tmp_path / "fresh")
    assert {"concierge.db", "concierge.db-wal", "concierge.db-shm", "master.key"} <= set(modes)
    assert modes.pop(".") == 0o700
    assert modes == dict.fromkeys(modes, 0o600)


def test_an_existing_loose_home_is_tightened(tmp_path, no_env_key):
    home = tmp_path / "old"
    Registry.open(home).close()
    (home / "chat_history").write_text("+hello\n")
    os.chmod(home, 0o755)
    for name in ("concierge.db", "master.key", "chat_history"):
        os.chmod(home / name, 0o644)
    (home / "notes.txt").write_text("the user's own file")
    os.chmod(home / "notes.txt", 0o644)
    modes = _modes_seen_by_a_process(home)
    assert modes.pop(".") == 0o700
    assert modes.pop("notes.txt") == 0o644  # not ours: left alone
    assert modes == dict.fromkeys(modes, 0o600)
