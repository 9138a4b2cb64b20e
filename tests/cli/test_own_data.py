"""Bringing your own data as a new user: describe, models, errors without tracebacks."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from userlens.cli.main import app

runner = CliRunner()


@pytest.mark.parametrize("content, expected", [
    ("", "the file is empty"),
    ("user_id,item_id,timestamp\n", "only a header"),
    ('user_id,item_id,timestamp\nu1,"i1,2\nu2,i2,3\n', "line 2: a quoted field is never closed"),
])
def test_bad_files_give_one_error_line_naming_the_file(tmp_path, content, expected):
    path = tmp_path / "log.csv"
    path.write_text(content)
    result = runner.invoke(app, ["describe", str(path)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "log.csv" in lines[0]
    assert expected in lines[0] and "Traceback" not in result.output


def test_bare_dates_and_blank_optional_values_are_read(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("uid,movie,day,stars\nu1,a,2020-01-05,\nu1,b,2020-01-06,4\nu2,a,2020-01-07,\n")
    result = runner.invoke(app, ["describe", str(path), "--json",
                                 "--columns", "user=uid,item=movie,time=day,value=stars"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats["users"] == 2 and stats["events"] == 3


def test_describe_accepts_a_config(tmp_path):
    (tmp_path / "log.csv").write_text("user_id,item_id\n" + "".join(
        f"u{u},i{i}\n" for u in range(10) for i in range(u % 3 + 1)))
    config = tmp_path / "c.toml"
    config.write_text('name = "c"\n[data]\npath = "log.csv"\nmin_user_interactions = 2\n'
                      '[[models]]\nname = "ease"\n')
    result = runner.invoke(app, ["describe", str(config), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["users"] == 6  # the config's filter applied


def test_models_list_and_show(tmp_path):
    listed = runner.invoke(app, ["models", "--json"])
    names = [row["name"] for row in json.loads(listed.stdout)]
    assert {"ease", "sasrec", "bpr"} <= set(names)
    shown = json.loads(runner.invoke(app, ["models", "show", "bpr", "--json"]).stdout)
    threads = next(row for row in shown if row["name"] == "num_threads")
    assert threads["default"] == 0 and "reproducible" in threads["meaning"]
    wrong = runner.invoke(app, ["models", "show", "eas"])
    assert wrong.exit_code == 2 and "known models" in wrong.output


def test_version_flag():
    from userlens import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.stdout


def test_describe_ml1m_outside_make_finds_the_mirror(shared_data, monkeypatch, tmp_path):
    from pathlib import Path

    monkeypatch.delenv("USERLENS_DATA_MIRROR", raising=False)
    monkeypatch.setenv("USERLENS_DATA_HOME", str(tmp_path))
    monkeypatch.chdir(Path(__file__).resolve().parents[2])  # the checkout, shared/ beside it
    result = runner.invoke(app, ["describe", "ml-1m", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["users"] == 6040
    listed = {row["name"]: row for row in json.loads(
        runner.invoke(app, ["datasets", "list", "--json"]).stdout)}
    assert listed["ml-1m"]["local"] is not None


def test_without_a_mirror_the_message_says_how_to_point_at_one(monkeypatch, tmp_path):
    monkeypatch.delenv("USERLENS_DATA_MIRROR", raising=False)
    monkeypatch.setenv("USERLENS_DATA_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    # a shared/data folder in a parent of the temporary folder (e.g. /tmp/shared on a
    # developer machine) would be found by the upward search: take that search out
    monkeypatch.setattr("userlens.data.datasets.find_mirror", lambda start=None: None)
    result = runner.invoke(app, ["describe", "ml-1m"])
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "userlens datasets fetch ml-1m" in text and "USERLENS_DATA_MIRROR" in text


def test_a_failed_download_names_the_url(monkeypatch, tmp_path):
    import dataclasses

    from userlens.data import datasets

    url = "http://127.0.0.1:9/ml-100k.zip"  # nothing listens on the discard port
    broken = dataclasses.replace(datasets.REGISTRY["ml-100k"], url=url, mirror_file=None)
    monkeypatch.setitem(datasets.REGISTRY, "ml-100k", broken)
    monkeypatch.setenv("USERLENS_DATA_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("USERLENS_DATA_MIRROR", raising=False)
    result = runner.invoke(app, ["datasets", "fetch", "ml-100k"])
    assert result.exit_code == 2
    assert url in " ".join(result.output.split()) and "Traceback" not in result.output
    assert not (tmp_path / "ml-100k").exists()


def test_an_item_catalogue_file_joins_any_format(tmp_path):
    from userlens.config import load_config
    from userlens.pipeline import load_data

    (tmp_path / "log.csv").write_text("user_id,item_id\nu1,a\nu1,b\nu2,b\n")
    (tmp_path / "items.csv").write_text("sku,title,genres\nb,Bee,Drama|Comedy\na,Ay,Horror\n"
                                        "z,Unused,Drama\n")
    config = tmp_path / "c.toml"
    config.write_text('name = "c"\n[data]\npath = "log.csv"\nitems = "items.csv"\n'
                      'item_columns = { sku = "item_id", genres = "categories" }\n'
                      '[[models]]\nname = "most_popular"\n')
    dataset = load_data(load_config(config).data)
    frame = dataset.catalog.frame
    assert frame["item_id"].to_list() == dataset.items.ids.tolist() == ["a", "b"]
    assert frame["title"].to_list() == ["Ay", "Bee"]
    assert frame["categories"].to_list() == [["Horror"], ["Drama", "Comedy"]]
    missing = tmp_path / "c2.toml"
    missing.write_text(config.read_text().replace("items.csv", "nowhere.csv"))
    result = runner.invoke(app, ["describe", str(missing)])
    assert result.exit_code == 2 and "nowhere.csv" in result.output
