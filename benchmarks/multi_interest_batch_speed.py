"""Forward and backward time of one training batch through a multi-interest encoder against
the SASRec stack under it, on synthetic histories of a chosen length.

    OMP_NUM_THREADS=1 python benchmarks/multi_interest_batch_speed.py --length 200
    OMP_NUM_THREADS=1 python benchmarks/multi_interest_batch_speed.py --length 200 --amp

Every model gets one torch thread, ML-1M's catalogue size (3,416 items), a batch of 128
right-padded histories (half of them full, half half-full) and the shipped ML-1M settings
(dim 64, 2 blocks, 1 head; HCN: 4 + 1 interests, 2 levels, a one-event short-term window;
ComiRec: 4 interests and the last state). The loss is a stand-in (the mean square of the
interests), so this times the encoders, not the sampled softmax. ``--amp`` runs the forward
pass under bfloat16 autocast (the models' ``amp = true``; fast on CPUs with AMX). Reports the
median seconds per batch over ``--repeats`` and the ratio to the SASRec stack alone; writes
``benchmarks/results/multi_interest_batch_speed_<length>[_amp].json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from _machine import machine

from userlens.models.nn.multi_interest import HCNEncoder, MultiInterestEncoder, sequence_encoder
from userlens.models.sequential_config import ComiRecConfig, HCNConfig

ROOT = Path(__file__).resolve().parents[1]
N_ITEMS = 3416


def _seconds(module: torch.nn.Module, tokens: torch.Tensor, repeats: int, amp: bool
             ) -> float:
    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out = module(tokens)
        out.float().pow(2).mean().backward()

    step()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--length", type=int, default=200)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    shared = dict(dim=64, n_blocks=2, n_heads=1, max_len=args.length, dropout=0.1,
                  n_interests=4, encoder="transformer", readout="max",
                  positions="from_start", attention_init="xavier")
    hcn = HCNConfig(**shared, n_levels=2, n_short_interests=1, short_window=1,
                    center_dropout=0.3)
    comirec = ComiRecConfig(**shared, short_term=True)
    modules = {"sasrec stack": sequence_encoder(N_ITEMS, comirec),
               "comirec (4 + last state)": MultiInterestEncoder(N_ITEMS, comirec),
               "hcn (4 + 1, 2 levels)": HCNEncoder(N_ITEMS, hcn)}
    tokens = torch.randint(1, N_ITEMS + 1, (args.batch, args.length))
    tokens[: args.batch // 2, args.length // 2:] = 0
    rows = {}
    for label, module in modules.items():
        module.train()
        seconds = _seconds(module, tokens, args.repeats, args.amp)
        rows[label] = {"seconds_per_batch": seconds}
        print(f"{label}: {seconds:.3f} s per batch of {args.batch} x {args.length}",
              flush=True)
    base = rows["sasrec stack"]["seconds_per_batch"]
    for label, row in rows.items():
        row["ratio_to_sasrec_stack"] = row["seconds_per_batch"] / base
        print(f"{label}: x{row['ratio_to_sasrec_stack']:.2f} of the sasrec stack")
    suffix = "_amp" if args.amp else ""
    out = ROOT / "benchmarks" / "results" / f"multi_interest_batch_speed_{args.length}{suffix}.json"
    out.write_text(json.dumps({
        "what": "forward + backward seconds per training batch, one thread"
                + (", bfloat16 autocast" if args.amp else ""),
        "command": f"OMP_NUM_THREADS=1 python benchmarks/multi_interest_batch_speed.py "
                   f"--length {args.length}" + (" --amp" if args.amp else ""),
        "batch": args.batch, "length": args.length, "n_items": N_ITEMS,
        "machine": machine(threads=1),
        "torch": torch.__version__, "models": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
