"""The notebook API: load_config, run (a DataFrame as data), load_artefact(...).recommend."""

import polars as pl

import userlens


def test_notebook_round_trip_from_a_dataframe(tmp_path):
    rows = [(f"u{u}", f"i{(u % 2) * 5 + t}", 1000 + t) for u in range(40) for t in range(5)
            if not (u % 5 == t)]
    frame = pl.DataFrame(rows, schema=["user", "item", "ts"], orient="row")
    report = userlens.run({"name": "nb", "data": {"columns": {"user": "user", "item": "item",
                                                               "time": "ts"}},
                           "models": [{"name": "ease", "params": {"l2": 1.0}}]},
                          data=frame, out=str(tmp_path / "nb"))
    assert report["data"]["users"] == 40 and report["results"][0]["model"] == "ease"
    artefact = userlens.load_artefact(str(tmp_path / "nb" / "ease"))
    top = artefact.recommend(["i0", "i1", "i2"], k=2)
    assert top.columns == ["item_id", "score"] and set(top["item_id"]) == {"i3", "i4"}
    assert top["score"].is_sorted(descending=True)
    assert artefact.recommend(["unknown"], k=3).height == 3  # popularity fallback


def test_load_config_is_top_level(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('name = "x"\n[data]\npath = "log.csv"\n[[models]]\nname = "ease"\n')
    config = userlens.load_config(str(path))
    assert config.data.path == str(tmp_path / "log.csv")  # resolved against the config
