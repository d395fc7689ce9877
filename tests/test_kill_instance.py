"""kill -9 of a ``concierge serve`` in the middle of writes, on both engines: every registration
it acknowledged is there afterwards with its secret, and no secret is left without its source."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import httpx2
import pytest

from concierge.registry import Registry
from tests.instances import concierge_cli, serve_instances
from tests.mcp_servers import RunningServer

pytestmark = pytest.mark.usefixtures("engine")

SB = "/api/v1/storage/sandboxes/default"
WRITERS = 4


@pytest.mark.timeout(120)
def test_kill_9_mid_writes_loses_nothing_acknowledged_and_leaves_no_orphan_secret(
        engine: str, tmp_path: Path, open_mcp: RunningServer) -> None:
    url = os.environ.get("CONCIERGE_DATABASE_URL")  # set by the engine fixture for PostgreSQL
    home = tmp_path / "home-A"
    made = concierge_cli("keys", "create", "--json", home=home, database_url=url)
    assert made.returncode == 0, made.stderr
    key = made.stdout.split('"key": "')[1].split('"')[0]
    acknowledged: dict[str, str] = {}  # source id -> its token
    lock = threading.Lock()
    stop = threading.Event()

    with serve_instances(tmp_path, url, ("A",)) as [instance]:
        def writer(n: int) -> None:
            with instance.client(key, timeout=10) as client:
                for i in range(1000):
                    if stop.is_set():
                        return
                    token = f"test-token-{n}-{i}-abcdef"
                    try:
                        r = client.post(f"{SB}/sources/user-mcp", json={
                            "name": f"w{n}-{i}", "base_url": open_mcp.url(), "auth_kind": "bearer",
                            "token": token, "app_namespace": f"w{n}_{i}"})
                    except httpx2.HTTPError:
                        return  # the instance is gone
                    if r.status_code in (200, 201):
                        with lock:
                            acknowledged[r.json()["data_source_id"]] = token

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while len(acknowledged) < 8 and time.monotonic() < deadline:
            time.sleep(0.02)
        instance.kill()  # mid-write: the writers have requests in flight
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert len(acknowledged) >= 8

    reg = Registry.open(home)  # the same database, as the next process would open it
    try:
        stored = {s.id: s for s in reg.list_sources()}
        for sid, token in acknowledged.items():
            assert sid in stored, f"acknowledged {sid} was lost"
            assert reg.endpoint(sid).headers["Authorization"] == f"Bearer {token}"
        keys = [r["key"] for r in reg.store.query("SELECT key FROM vault WHERE key LIKE 'user_mcp/%'")]
        owners = {k.split("/")[1] for k in keys}
        assert owners <= set(stored), f"secrets without a source: {owners - set(stored)}"
        for sid in stored:  # every stored source has both its secrets, or the row would not be there
            assert {f"user_mcp/{sid}/auth", f"user_mcp/{sid}/webhook"} <= set(keys)
    finally:
        reg.close()
