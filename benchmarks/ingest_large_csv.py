"""Ingest a large synthetic CSV event log and report seconds and peak memory.

    python benchmarks/ingest_large_csv.py --rows 20000000

Writes a CSV of (user_id, item_id, rating, timestamp) rows to a temporary folder, then reads it
with userlens in a fresh process and reports wall time and the process's peak RSS. The bytes
per row matter: ids are strings as in real logs.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl


def write_csv(path: Path, rows: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    chunk = 5_000_000
    with path.open("wb") as handle:
        handle.write(b"user_id,item_id,rating,timestamp\n")
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            frame = pl.DataFrame({
                "user_id": rng.integers(0, 500_000, n),
                "item_id": (rng.zipf(1.3, n) % 200_000),
                "rating": rng.integers(1, 6, n),
                "timestamp": rng.integers(1_500_000_000, 1_700_000_000, n),
            })
            handle.write(frame.write_csv(include_header=False).encode())


def measure(path: Path) -> dict:
    from userlens.data import ColumnMap, read

    started = time.perf_counter()
    data = read(path, "csv", ColumnMap(value="rating"))
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"rows": len(data.interactions), **data.summary(), "seconds": seconds,
            "peak_rss_bytes": peak, "file_bytes": path.stat().st_size}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.csv"
        write_csv(path, args.rows)
        output = subprocess.run([sys.executable, __file__, "--measure", str(path)],
                                check=True, capture_output=True, text=True).stdout
        print(output.strip())


if __name__ == "__main__":
    main()
