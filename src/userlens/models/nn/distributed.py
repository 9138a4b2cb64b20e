"""Process-group setup for data-parallel training: ``--nproc N`` spawns N local workers;
under ``torchrun`` the environment it sets up is used instead."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def init_from_environment() -> tuple[int, int]:
    """Join the group torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR/PORT)."""
    if not dist.is_initialized():
        dist.init_process_group(backend(), init_method="env://")
    return dist.get_rank(), dist.get_world_size()


def _worker(rank: int, world_size: int, port: int, function: Callable[..., Any],
            args: tuple, results: Any) -> None:
    # each worker gets its share of the cores; gloo all-reduces run on CPU threads too
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    dist.init_process_group(backend(), init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world_size)
    try:
        value = function(rank, world_size, *args)
        if rank == 0:
            results.put(("value", value))
        dist.barrier()  # no rank tears gloo down while another still talks to it
    except Exception as error:
        try:  # the parent raises it as it is (a clear message, not a worker's traceback)
            results.put(("error", error))
        except Exception:  # not picklable: the parent reports the worker's traceback
            pass
        raise
    finally:
        dist.destroy_process_group()


def launch(function: Callable[..., Any], world_size: int, *args: Any) -> Any:
    """Run ``function(rank, world_size, *args)`` in ``world_size`` spawned processes joined in
    one process group (gloo on CPU, nccl on GPU); return rank 0's result. An exception a
    worker raised is raised here as it is (the other workers are stopped)."""
    context = mp.get_context("spawn")
    results = context.SimpleQueue()
    # torch warns as it stops the other workers once one has raised; that one's error is
    # what is reported, so the warning would only be a second, misleading line
    spawn_log = logging.getLogger(mp.spawn.__module__)
    level = spawn_log.level
    spawn_log.setLevel(logging.ERROR)
    try:
        mp.start_processes(_worker, args=(world_size, free_port(), function, args, results),
                           nprocs=world_size, start_method="spawn", join=True)
    except mp.ProcessRaisedException:
        while not results.empty():
            kind, payload = results.get()
            if kind == "error":
                raise payload from None
        raise
    finally:
        spawn_log.setLevel(level)
    return results.get()[1] if not results.empty() else None  # no worker raised: rank 0's
