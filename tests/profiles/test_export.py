"""Every user's profile at once: several processes build the same rows as one."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest

from userlens.config import load_config
from userlens.pipeline import load_data
from userlens.profiles import export as export_module
from userlens.profiles.export import each_profile, export, population_of

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"


def built_in(user, profile):
    """Where a profile was built, and for whom (module level: it runs in the workers)."""
    return user, os.getpid(), profile.user_id, len(profile.interests)


@pytest.mark.skipif(not (SHARED / "ml-100k").is_dir(), reason="needs ../shared/data/ml-100k")
def test_processes_build_the_same_rows_in_the_same_order(tmp_path, monkeypatch):
    dataset = load_data(load_config(ROOT / "configs" / "ml-100k-baselines.toml").data)
    monkeypatch.setattr(export_module, "CHUNK", 100)  # 943 users: 10 chunks
    seen = []
    one, _ = export(dataset, tmp_path / "one.parquet", workers=1)
    two, _ = export(dataset, tmp_path / "two.parquet", workers=2,
                    progress=lambda done, total: seen.append((done, total)))
    assert one == two == 943
    a, b = pl.read_parquet(tmp_path / "one.parquet"), pl.read_parquet(tmp_path / "two.parquet")
    assert a.equals(b)
    assert seen[-1] == (943, 943) and len(seen) == 10
    # the profiles were built in two other processes, each user once, in user order
    population = population_of(dataset)
    built = each_profile(dataset.interactions, dataset.items.ids, population, built_in,
                         user_ids=dataset.users.ids, workers=2)
    assert [user for user, *_ in built] == list(range(943))
    assert {pid for _, pid, *_ in built} - {os.getpid()} and len({p for _, p, *_ in built}) == 2
    assert [user_id for *_, user_id, _ in built] == a["user_id"].to_list()
    assert [n for *_, n in built] == [len(x) for x in a["interests"].to_list()]


class Vague:
    """An LLM client whose every draft names none of the user's interests."""

    model = "vague"

    def __init__(self) -> None:
        self.calls = 0

    def complete(self, messages, *, max_tokens=None, seed=0) -> str:
        self.calls += 1
        return "A person who watches things."


@pytest.mark.skipif(not (SHARED / "ml-100k").is_dir(), reason="needs ../shared/data/ml-100k")
def test_llm_summaries_are_written_here_and_checked_whatever_the_workers(tmp_path):
    dataset = load_data(load_config(ROOT / "configs" / "ml-100k-baselines.toml").data)
    client = Vague()
    n, _ = export(dataset, tmp_path / "llm.parquet", llm=client, workers=2)
    frame = pl.read_parquet(tmp_path / "llm.parquet")
    # the client was asked in this process, for every user, and every draft was refused
    assert n == 943 and client.calls >= 943
    assert set(frame["summary_source"]) == {"template"}
    plain, _ = export(dataset, tmp_path / "plain.parquet")
    assert frame["summary_text"].to_list() == pl.read_parquet(
        tmp_path / "plain.parquet")["summary_text"].to_list()
