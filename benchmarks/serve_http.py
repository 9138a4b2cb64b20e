"""HTTP serving benchmark on ML-1M: latency/throughput, ingestion, memory soak.

Starts `userlens serve` as its own process and loads it with wrk (Debian package `wrk`)
from a second process on loopback; both share this machine's cores.

    python benchmarks/serve_http.py                       # EASE + SASRec, c = 1, 8, 32
    python benchmarks/serve_http.py --soak-seconds 600    # plus the 10-minute RSS soak
    python benchmarks/serve_http.py --baseline-src /tmp/old/src --baseline-work /tmp/old-bench
        # before/after: the same GET load on a checkout of another commit and on this one,
        # alternating servers, --reps times per level; medians and ratios

Writes benchmarks/results/serve_http.json (and serve_soak.png with --soak-seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
from _machine import machine

ROOT = Path(__file__).resolve().parents[1]
WRK_DIR = Path(__file__).resolve().parent / "wrk"
DATA = ROOT.parent / "shared" / "data" / "ml-1m" / "ml-1m_user_sequences.tsv.gz"
USERLENS = [sys.executable, "-m", "userlens.cli.main"]

CONFIG = """
name = "{name}"
seed = 0
[data]
path = "{data}"
format = "sequences"
min_item_interactions = 5
[split]
method = "leave_one_out"
[evaluation]
metrics = ["hr@10", "ndcg@10"]
[[models]]
name = "{model}"
params = {params}
"""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def train(work: Path, model: str, params: str) -> Path:
    """Artefact of one model on ML-1M, trained with `userlens run` (reused when present)."""
    name = f"bench-{model}"
    artefact = work / name / model
    if (artefact / "model" / "model.json").is_file():
        return artefact
    config = work / f"{name}.toml"
    config.write_text(CONFIG.format(name=name, data=DATA, model=model, params=params))
    log(f"training {model} on ML-1M")
    subprocess.run([*USERLENS, "run", str(config), "--out", str(work / name), "--json"],
                   check=True, stdout=subprocess.DEVNULL)
    return artefact


def import_events(work: Path, db: str) -> None:
    config = next(work.glob("bench-*.toml"))
    log(f"importing ML-1M events into {db}")
    subprocess.run([*USERLENS, "import-events", str(config), "--db", db], check=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    def __init__(self, artefact: Path, db: str, workers: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        self.process = subprocess.Popen(
            [*USERLENS, "serve", str(artefact), "--db", db, "--port", str(self.port),
             "--workers", str(workers)], env=env, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(self.process.stderr.read().decode())
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        time.sleep(2 if workers > 1 else 0)  # let every worker come up

    def rss_bytes(self) -> int:
        parent = psutil.Process(self.process.pid)
        return sum(p.memory_info().rss for p in [parent, *parent.children(recursive=True)])

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def wrk(url: str, script: str, connections: int, seconds: int, env: dict | None = None) -> dict:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
               "-s", str(WRK_DIR / script), url]
    done = subprocess.run(command, capture_output=True, text=True, check=True,
                          env={**os.environ, "WRK_DIR": str(WRK_DIR), **(env or {})})
    line = [x for x in done.stdout.splitlines() if x.startswith("{")][-1]
    return {"connections": connections, **json.loads(line)}


def latency_table(server: Server, levels: list[int], seconds: int) -> list[dict]:
    wrk(server.url, "recommendations.lua", 8, 5)  # warm-up
    rows = []
    for connections in levels:
        row = wrk(server.url, "recommendations.lua", connections, seconds)
        log(f"  c={connections:>2}: {row['requests_per_s']:.0f} req/s, p50 {row['p50_ms']:.2f}"
            f" ms, p95 {row['p95_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms, "
            f"errors {row['socket_errors']}, non-2xx {row['non_2xx']}")
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/userlens-serve-bench"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--levels", default="1,8,32")
    parser.add_argument("--sasrec-artefact", type=Path, default=None,
                        help="a trained ML-1M SASRec artefact; default: train one epoch "
                             "(latency does not depend on how well it is trained)")
    parser.add_argument("--soak-seconds", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--baseline-src", type=Path, default=None,
                        help="src/ folder of another commit to compare GET latency against")
    parser.add_argument("--baseline-work", type=Path, default=None,
                        help="its work folder (artefacts and database made by that commit)")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    if args.baseline_src is not None:
        compare(args)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    levels = [int(x) for x in args.levels.split(",")]

    ease = train(args.work, "ease", "{ l2 = 500.0 }")
    sasrec = args.sasrec_artefact or train(
        args.work, "sasrec", "{ loss = \"ce\", dim = 64, n_blocks = 2, n_heads = 1, "
                             "max_len = 200, max_epochs = 1 }")
    db_path = args.work / "events.db"
    db = f"sqlite:///{db_path}"
    if not db_path.exists():
        import_events(args.work, db)
    result: dict = {"machine": machine(),
                    "workers": args.workers, "seconds_per_level": args.seconds,
                    "database": "sqlite (WAL, synchronous=FULL), ML-1M events imported"}

    for name, artefact in (("ease", ease), ("sasrec", sasrec)):
        log(f"GET /users/{{id}}/recommendations k=10, {name}, {args.workers} workers")
        server = Server(artefact, db, args.workers)
        try:
            result[f"recommendations_{name}"] = latency_table(server, levels, args.seconds)
            result[f"rss_bytes_{name}"] = server.rss_bytes()
        finally:
            server.stop()

    log("POST /events, batches of 100, durable commits into SQLite")
    server = Server(ease, db, args.workers)
    try:
        result["ingest"] = []
        for connections in (1, 8):
            row = wrk(server.url, "events.lua", connections, args.seconds,
                      {"RUN_ID": f"{int(time.time())}-{connections}"})
            row["events_per_s"] = row["requests_per_s"] * 100
            log(f"  c={connections}: {row['events_per_s']:.0f} events/s, p99 "
                f"{row['p99_ms']:.1f} ms, non-2xx {row['non_2xx']}")
            result["ingest"].append(row)
        if args.soak_seconds:
            result["soak"] = soak(server, args.soak_seconds, args.out)
    finally:
        server.stop()

    log("kill -9 in the middle of an ingestion load")
    result["crash"] = crash(ease, args.work, args.workers)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serve_http.json").write_text(json.dumps(result, indent=2))
    log(f"wrote {args.out / 'serve_http.json'}")


def compare(args) -> None:
    """GET latency of a baseline commit and of this tree, servers alternating, medians."""
    import statistics

    sides = {"baseline": (args.baseline_work, str(args.baseline_src.resolve())),
             "current": (args.work, "")}
    result: dict = {"machine": machine(),
                    "workers": args.workers, "seconds_per_run": args.seconds,
                    "reps": args.reps, "baseline_src": str(args.baseline_src)}
    for model in ("ease", "sasrec"):
        for connections in [int(x) for x in args.levels.split(",")]:
            runs: dict[str, list[dict]] = {side: [] for side in sides}
            for _ in range(args.reps):
                for side, (work, pythonpath) in sides.items():
                    os.environ["PYTHONPATH"] = pythonpath
                    server = Server(work / f"bench-{model}" / model,
                                    f"sqlite:///{work / 'events.db'}", args.workers)
                    try:
                        wrk(server.url, "recommendations.lua", connections, 3)  # warm-up
                        runs[side].append(wrk(server.url, "recommendations.lua", connections,
                                              args.seconds))
                    finally:
                        server.stop()
            os.environ.pop("PYTHONPATH", None)
            row = {side: {"median_requests_per_s": statistics.median(
                              r["requests_per_s"] for r in rows),
                          "median_p99_ms": statistics.median(r["p99_ms"] for r in rows),
                          "median_p50_ms": statistics.median(r["p50_ms"] for r in rows),
                          "runs": rows} for side, rows in runs.items()}
            row["p99_ratio"] = (row["current"]["median_p99_ms"]
                                / row["baseline"]["median_p99_ms"])
            row["throughput_ratio"] = (row["current"]["median_requests_per_s"]
                                       / row["baseline"]["median_requests_per_s"])
            log(f"{model} c={connections}: p99 {row['baseline']['median_p99_ms']:.2f} -> "
                f"{row['current']['median_p99_ms']:.2f} ms (x{row['p99_ratio']:.2f}), "
                f"req/s {row['baseline']['median_requests_per_s']:.0f} -> "
                f"{row['current']['median_requests_per_s']:.0f} "
                f"(x{row['throughput_ratio']:.2f})")
            result[f"{model}_c{connections}"] = row
            args.out.mkdir(parents=True, exist_ok=True)  # after each level: a long series
            (args.out / "serve_http_compare.json").write_text(json.dumps(result, indent=2))
    log(f"wrote {args.out / 'serve_http_compare.json'}")


def crash(artefact: Path, work: Path, workers: int, seconds: float = 8.0) -> dict:
    """kill -9 the server in the middle of an ingestion load, restart, count what survived.

    Each request is one batch of 100 events of its own user; a batch that got a 2xx must be
    there in full after the restart, and no batch may be there in part.
    """
    import signal
    import threading

    db_path = work / "crash.db"
    db_path.unlink(missing_ok=True)
    db = f"sqlite:///{db_path}"
    server = Server(artefact, db, workers)
    acknowledged, attempted, lock = [], [], threading.Lock()
    counter = iter(range(10**9))

    def writer() -> None:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            while True:
                with lock:
                    batch = next(counter)
                    attempted.append(batch)
                events = [{"user_id": f"crash-{batch}", "item_id": str(1 + i),
                           "event_id": f"{batch}-{i}"} for i in range(100)]
                try:
                    response = client.post("/events", json={"events": events})
                except httpx.HTTPError:
                    return
                if response.status_code == 200:
                    with lock:
                        acknowledged.append(batch)

    threads = [threading.Thread(target=writer) for _ in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    for process in [psutil.Process(server.process.pid),
                    *psutil.Process(server.process.pid).children(recursive=True)]:
        process.send_signal(signal.SIGKILL)
    server.process.wait()
    for thread in threads:
        thread.join()
    restarted = Server(artefact, db, 1)
    try:
        with httpx.Client(base_url=restarted.url, timeout=30) as client:
            stored = {b: len(client.get(f"/users/crash-{b}/history").json()["events"])
                      for b in attempted}
    finally:
        restarted.stop()
    lost = [b for b in acknowledged if stored[b] != 100]
    partial = [b for b, n in stored.items() if n not in (0, 100)]
    result = {"batches_attempted": len(attempted), "batches_acknowledged": len(acknowledged),
              "events_acknowledged": 100 * len(acknowledged),
              "batches_stored_without_ack": sum(1 for b in attempted
                                                if stored[b] == 100 and b not in acknowledged),
              "acknowledged_batches_lost": len(lost), "partially_written_batches": len(partial)}
    log(f"  crash: {result}")
    return result


def plot_soak(samples: list, requests: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 3.5))
    mib = [r / 2**20 for _, r in samples]
    axis.plot([t for t, _ in samples], mib)
    axis.set_xlabel("seconds under load (GET recommendations, 8 connections)")
    axis.set_ylabel("server RSS, MiB (all workers)")
    axis.set_ylim(0, max(mib) * 1.25)
    axis.set_title(f"userlens serve soak: {requests:,} requests, RSS over time")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def soak(server: Server, seconds: int, out: Path) -> dict:
    """Steady GET load (8 connections) for `seconds`, RSS of all server processes sampled."""
    log(f"soak: {seconds} s of GET load at c=8, RSS sampled every 5 s")
    load = subprocess.Popen(
        ["wrk", "-t1", "-c8", f"-d{seconds}s", "-s", str(WRK_DIR / "recommendations.lua"),
         server.url], env={**os.environ, "WRK_DIR": str(WRK_DIR)}, stdout=subprocess.PIPE,
        text=True)
    started, samples = time.monotonic(), []
    while load.poll() is None:
        samples.append((round(time.monotonic() - started, 1), server.rss_bytes()))
        time.sleep(5)
    summary = json.loads([x for x in load.stdout.read().splitlines() if x.startswith("{")][-1])
    plot_soak(samples, summary["requests"], out / "serve_soak.png")
    first, last = samples[0][1], samples[-1][1]
    log(f"  RSS {first / 2**20:.0f} MiB -> {last / 2**20:.0f} MiB over {seconds} s, "
        f"{summary['requests_per_s']:.0f} req/s")
    return {"load": summary, "rss_samples": samples,
            "rss_growth_bytes": last - first,
            "rss_growth_after_first_minute_bytes":
                last - next(r for t, r in samples if t >= 60) if seconds > 60 else None}


if __name__ == "__main__":
    main()
