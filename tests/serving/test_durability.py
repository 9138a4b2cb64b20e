"""A real server process is killed with SIGKILL in the middle of an ingestion load; after a
restart every acknowledged event is there and no batch is half-written."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(artefact, url: str, port: int, workers: int = 1,
                 root=None) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "userlens.cli.main", "serve", str(artefact), "--db", url,
         "--port", str(port), "--workers", str(workers)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env={**os.environ, "USERLENS_RELOAD_POLL_SECONDS": "0.2",
             "USERLENS_ARTEFACT_ROOT": str(root or Path(artefact).parent)})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited: {process.stderr.read().decode()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    pytest.fail("server did not start within 60 s")


def test_kill_9_loses_no_acknowledged_event(ease_artefact, db_url):
    port = free_port()
    server = start_server(ease_artefact, db_url, port)
    acknowledged: list[int] = []
    attempted: list[int] = []
    lock = threading.Lock()
    counter = iter(range(1_000_000))

    def writer() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            while True:
                with lock:
                    batch = next(counter)
                    attempted.append(batch)
                events = [{"user_id": f"load-{batch}", "item_id": f"m{i % 10}",
                           "event_id": f"{batch}-{i}", "timestamp": 1e9 + i}
                          for i in range(100)]
                try:
                    response = client.post("/events", json={"events": events})
                except httpx.HTTPError:
                    return  # the server is gone
                if response.status_code == 200 and response.json()["accepted"] == 100:
                    with lock:
                        acknowledged.append(batch)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for thread in threads:
        thread.start()
    while len(acknowledged) < 30:
        time.sleep(0.01)
    os.kill(server.pid, signal.SIGKILL)  # mid-load: requests are in flight
    server.wait()
    for thread in threads:
        thread.join(timeout=30)
    assert len(attempted) > len(acknowledged)  # some requests were cut off

    restarted = start_server(ease_artefact, db_url, port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            stored = {batch: len(client.get(f"/users/load-{batch}/history").json()["events"])
                      for batch in attempted}
    finally:
        restarted.terminate()
        restarted.wait(timeout=30)
    assert all(stored[batch] == 100 for batch in acknowledged), "acknowledged events lost"
    assert set(stored.values()) <= {0, 100}, f"half-written batches: {stored}"


def test_two_worker_processes_serve_and_reload_together(ease_artefact, tmp_path):
    from tests.models.contract import two_groups_events
    from tests.serving.conftest import write_artefact
    from userlens.models.classic import MostPopular

    other = write_artefact(tmp_path / "pop", MostPopular().fit(two_groups_events()), 10,
                           label="pop")
    port = free_port()
    server = start_server(ease_artefact, f"sqlite:///{tmp_path / 'e.db'}", port, workers=2,
                          root=tmp_path)
    base = f"http://127.0.0.1:{port}"

    def health_count() -> float:
        text = httpx.get(f"{base}/metrics", timeout=10).text
        line = next(x for x in text.splitlines()
                    if x.startswith('userlens_requests_total{method="GET",route="/health"'))
        return float(line.rsplit(" ", 1)[1])

    try:
        reloaded = httpx.post(f"{base}/admin/reload", json={"path": str(other)}, timeout=30)
        assert reloaded.status_code == 200
        time.sleep(1.5)
        before = health_count()
        pids, names = set(), set()
        for _ in range(30):  # fresh connections land on either worker
            health = httpx.get(f"{base}/health", timeout=10).json()
            names.add(health["model"]["name"])
            pids.add(health["worker_pid"])
        assert len(pids) == 2, "only one worker ever answered"
        assert names == {"most_popular"}  # both follow the reload made through one of them
        assert health_count() - before == 30  # /metrics adds up both workers
    finally:
        server.terminate()
        server.wait(timeout=30)
