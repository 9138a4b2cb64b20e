"""`userlens profile` and `userlens profiles export` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from tests.models.contract import two_groups_events
from tests.serving.conftest import item_id, write_artefact
from userlens.cli.main import app
from userlens.models.classic import EASE, EASEConfig
from userlens.serving.storage import Storage, StoredEvent

runner = CliRunner()
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def test_profile_prints_a_panel_and_json(tmp_path):
    artefact = write_artefact(tmp_path / "runs" / "ease",
                              EASE(EASEConfig(l2=1.0)).fit(two_groups_events()), 10)
    url = f"sqlite:///{tmp_path / 'events.db'}"
    storage = Storage(url)
    storage.add_events([StoredEvent("u1", item_id(i), 1_700_000_000_000 + 60_000 * n)
                        for n, i in enumerate([0, 1, 3, 6])])
    storage.close()
    result = runner.invoke(app, ["profile", str(artefact), "u1", "--db", url])
    assert result.exit_code == 0, result.output
    assert "Interests" in result.output and "categories:Comedy" in result.output
    assert "█" in result.output  # the share bars
    as_json = runner.invoke(app, ["profile", str(artefact), "u1", "--db", url, "--json"])
    profile = json.loads(as_json.output)
    assert profile["interests"][0]["value"] == "Comedy"
    assert profile["behaviour"]["sessions"]["value"] == 1
    missing = runner.invoke(app, ["profile", str(artefact), "nobody", "--db", url])
    assert missing.exit_code == 2 and "no events or controls" in missing.output


@pytest.mark.skipif(not (SHARED / "ml-100k").is_dir(), reason="needs ../shared/data/ml-100k")
def test_export_writes_one_row_per_user(tmp_path):
    config = Path(__file__).resolve().parents[2] / "configs" / "ml-100k-baselines.toml"
    out = tmp_path / "profiles.parquet"
    result = runner.invoke(app, ["profiles", "export", str(config), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["users"] == 943
    frame = pl.read_parquet(out)
    assert frame.height == 943 and frame["user_id"].n_unique() == 943
    assert frame.columns[0] == "user_id"
    first = frame.row(0, named=True)
    assert first["interests"][0]["share"] > 0 and first["summary_source"] == "template"
    assert first["behaviour"]["active_days"]["value"] >= 1  # ML-100K has real timestamps
