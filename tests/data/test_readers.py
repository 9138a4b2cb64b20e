import gzip
import json

import numpy as np
import polars as pl
import pytest

from userlens.data import ColumnMap, DataFormatError, read
from userlens.data.readers import read_sequences


def write(path, text):
    path.write_text(text)
    return path


def test_csv_with_column_mapping(tmp_path):
    path = write(tmp_path / "log.csv",
                 "uid,movie,stars,ts\nu1,a,5,100\nu1,b,3,50\nu2,a,4,70\n")
    data = read(path, columns=ColumnMap(user="uid", item="movie", time="ts", value="stars"))
    assert data.summary() == {"users": 2, "items": 2, "interactions": 3}
    assert data.users.external([0, 1]) == ["u1", "u2"]
    assert data.items.index_of("b") == 1
    assert data.interactions.value.tolist() == [5.0, 3.0, 4.0]
    # histories are chronological: u1 saw b (t=50) before a (t=100)
    history = data.interactions.histories([0])
    assert data.items.external(history.sequence(0)) == ["b", "a"]


def test_iso_timestamps_are_parsed(tmp_path):
    path = write(tmp_path / "log.csv", "user_id,item_id,timestamp\n1,a,2024-01-02T00:00:00\n"
                 "1,b,2024-01-01T00:00:00\n")
    data = read(path)
    assert data.interactions.timestamp.tolist() == [1704153600, 1704067200]


@pytest.mark.parametrize("body, line, field", [
    ("1,a,100\n2,b,101,99\n", 3, None),           # too many fields
    ("1,a,100\n2,b\n", 3, None),                  # too few fields
    ("1,a,100\n2,b,yesterday\n", 3, "timestamp"),  # non-numeric timestamp
    ("1,a,100\n,b,101\n", 3, "user_id"),            # empty user id
    ("1,a,100\n2,,101\n", 3, "item_id"),            # empty item id
])
def test_malformed_rows_name_file_line_and_field(tmp_path, body, line, field):
    path = write(tmp_path / "bad.csv", "user_id,item_id,timestamp\n" + body)
    with pytest.raises(DataFormatError) as error:
        read(path)
    message = str(error.value)
    assert str(path) in message
    assert f"line {line}" in message
    if field:
        assert f"field '{field}'" in message


def test_missing_column_lists_available(tmp_path):
    path = write(tmp_path / "log.csv", "user,item\n1,2\n")
    with pytest.raises(DataFormatError, match="column 'user_id'.*columns are"):
        read(path)


def test_parquet_and_jsonl(tmp_path):
    frame = pl.DataFrame({"u": ["x", "y", "x"], "i": [1, 2, 2], "t": [1, 2, 3]})
    frame.write_parquet(tmp_path / "log.parquet")
    frame.write_ndjson(tmp_path / "log.jsonl")
    for name in ("log.parquet", "log.jsonl"):
        data = read(tmp_path / name, columns=ColumnMap(user="u", item="i", time="t"))
        assert data.summary() == {"users": 2, "items": 2, "interactions": 3}


def test_sequences_tab_space_and_gzip(tmp_path):
    write(tmp_path / "space.txt", "1 10 11 12\n2 11 13\n")
    with gzip.open(tmp_path / "tab.tsv.gz", "wt") as handle:
        handle.write("# comment\n1\t10 11 12\n2\t11 13\n")
    for name in ("space.txt", "tab.tsv.gz"):
        data = read_sequences(tmp_path / name)
        assert data.summary() == {"users": 2, "items": 4, "interactions": 5}
        assert not data.interactions.has_time
        first = data.interactions.histories([0]).sequence(0)
        assert data.items.external(first) == ["10", "11", "12"]


def test_sequence_line_without_items_is_an_error(tmp_path):
    path = write(tmp_path / "seq.txt", "1\t10 11\n2\t\n")
    with pytest.raises(DataFormatError, match="line 2"):
        read_sequences(path)


def test_movielens_100k_layout(tmp_path):
    write(tmp_path / "u.data", "1\t10\t5\t881250949\n2\t10\t3\t881250950\n1\t20\t4\t881250951\n")
    flags = "|".join(["0"] * 19)
    comedy = "|".join(["0"] * 5 + ["1"] + ["0"] * 13)
    write(tmp_path / "u.item", f"10|Toy Story (1995)|01-Jan-1995||url|{comedy}\n"
                               f"20|Heat (1995)|01-Jan-1995||url|{flags}\n")
    write(tmp_path / "u.user", "1|24|M|technician|85711\n2|53|F|other|94043\n")
    data = read(tmp_path, "movielens")
    assert data.summary() == {"users": 2, "items": 2, "interactions": 3}
    assert data.catalog.frame["title"].to_list() == ["Toy Story (1995)", "Heat (1995)"]
    assert data.catalog.categories() == [["Comedy"], []]
    assert data.user_table.frame["occupation"].to_list() == ["technician", "other"]


def test_movielens_1m_layout_and_bad_line(tmp_path):
    write(tmp_path / "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n")
    write(tmp_path / "movies.dat", "1193::One Flew Over (1975)::Drama\n661::James (1996)::"
                                   "Animation|Children's\n")
    data = read(tmp_path / "ratings.dat", "movielens")
    assert data.catalog.categories() == [["Drama"], ["Animation", "Children's"]]
    write(tmp_path / "ratings.dat", "1::1193::5::978300760\n1::661::3\n")
    with pytest.raises(DataFormatError, match="line 2"):
        read(tmp_path / "ratings.dat", "movielens")


def test_recbole_atomic_files(tmp_path):
    write(tmp_path / "toy.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                                  "1\t10\t3\t100\n2\t10\t5\t90\n")
    write(tmp_path / "toy.item", "item_id:token\tmovie_title:token_seq\tclass:token_seq\n"
                                 "10\tHeat\tAction Crime\n")
    data = read(tmp_path / "toy.inter", "recbole")
    assert data.interactions.value.tolist() == [3.0, 5.0]
    assert data.catalog.frame["title"].to_list() == ["Heat"]
    assert data.catalog.categories() == [["Action", "Crime"]]
    write(tmp_path / "bad.inter", "user_id\titem_id\n1\t2\n")
    with pytest.raises(DataFormatError, match="line 1"):
        read(tmp_path / "bad.inter", "recbole")


def test_amazon_2014_and_2023(tmp_path):
    old = [{"reviewerID": "A", "asin": "X", "overall": 5.0, "unixReviewTime": 10},
           {"reviewerID": "B", "asin": "X", "overall": 4.0, "unixReviewTime": 11}]
    write(tmp_path / "old.json", "\n".join(json.dumps(r) for r in old))
    new = [{"user_id": "A", "parent_asin": "Y", "rating": 5.0, "timestamp": 10_000}]
    with gzip.open(tmp_path / "new.jsonl.gz", "wt") as handle:
        handle.write("\n".join(json.dumps(r) for r in new))
    assert read(tmp_path / "old.json", "amazon").summary()["interactions"] == 2
    data = read(tmp_path / "new.jsonl.gz", "amazon")
    assert data.interactions.timestamp.tolist() == [10]


def test_unknown_format_lists_known(tmp_path):
    write(tmp_path / "x.csv", "a\n")
    with pytest.raises(ValueError, match="known formats: csv"):
        read(tmp_path / "x.csv", "excel")


def test_ml1m_loads_as_the_benchmark_version(shared_data):
    from userlens.data import k_core

    data = read(shared_data / "ml-1m" / "ml-1m_user_sequences.tsv.gz", "sequences")
    assert data.summary() == {"users": 6040, "items": 3706, "interactions": 1_000_209}
    filtered = k_core(data, min_item=5)
    assert filtered.summary() == {"users": 6040, "items": 3416, "interactions": 999_611}
    assert filtered.catalog is not None and filtered.catalog.frame["title"].null_count() == 0
    assert np.all(filtered.interactions.item_counts() >= 5)


def test_ml100k_recbole_real(shared_data):
    data = read(shared_data / "ml-100k" / "ml-100k.inter", "recbole")
    assert data.summary() == {"users": 943, "items": 1682, "interactions": 100_000}
    assert data.user_table.frame.columns[:3] == ["user_id", "age", "gender"]


def test_external_histories_skip_and_count_unknown_items(tmp_path):
    path = write(tmp_path / "log.csv", "user_id,item_id\nu1,a\nu1,b\nu2,c\n")
    data = read(path)
    histories, skipped = data.items.encode_histories([["a", "zzz", "c"], [], ["nope"]])
    assert skipped == 2
    assert data.items.external(histories.sequence(0)) == ["a", "c"]
    assert histories.lengths().tolist() == [2, 0, 0]


def test_ml1m_sasrec_is_the_published_file_with_metadata_through_the_id_maps(shared_data):
    """SASRec's ml-1m.txt: 6,040 / 3,416 / 999,611; titles, genres and demographics joined
    through the id maps (SASRec's user 1 is MovieLens user 5988, its item 1 movie 1198)."""
    from userlens.pipeline import read_registered

    data = read_registered("ml-1m-sasrec", mirror=shared_data)
    events = data.interactions
    assert (events.n_users, events.n_items, len(events)) == (6040, 3416, 999_611)
    assert not events.has_time  # order only: the file has no timestamps
    catalog = data.catalog.frame
    assert catalog["title"].null_count() == 0 and catalog["categories"].null_count() == 0
    movies = (shared_data / "ml-1m" / "movies.dat").read_text(encoding="latin-1")
    original_1198 = next(line for line in movies.splitlines() if line.startswith("1198::"))
    first = data.items.index_of("1")
    assert catalog["title"][int(first)] == original_1198.split("::")[1]
    users = (shared_data / "ml-1m" / "users.dat").read_text().splitlines()
    gender, age = next(line for line in users if line.startswith("5988::")).split("::")[1:3]
    row = data.user_table.frame.row(data.users.index_of("1"), named=True)
    assert (row["gender"], row["age"]) == (gender, age)
    assert data.user_table.frame["gender"].null_count() == 0


def _unisrec(folder, valid_row="0\t7 8\t9"):
    write(folder / "Toy.test.inter", "user_id:token\titem_id_list:token_seq\titem_id:token\n"
          "0\t7 8 9\t10\n1\t10\t7\n")
    write(folder / "Toy.valid.inter", "user_id:token\titem_id_list:token_seq\titem_id:token\n"
          f"{valid_row}\n1\t\t10\n")
    write(folder / "Toy.train.inter", "user_id:token\titem_id_list:token_seq\titem_id:token\n"
          "0\t7\t8\n")
    write(folder / "Toy.item2index", "B07\t7\nB08\t8\nB09\t9\nB10\t10\n")
    write(folder / "Toy.text", "item_id:token\ttext:token_seq\n"
          "B07\tGorilla Glue, 8 oz. Adhesives. Gorilla. \nB10\tMultimeter. Testers. Fluke. \n")


def test_unisrec_layout_gives_sequences_with_asins_and_texts(tmp_path):
    from userlens.data import leave_one_out

    _unisrec(tmp_path)
    dataset = read(tmp_path, "unisrec")
    assert dataset.summary() == {"users": 2, "items": 4, "interactions": 6}
    split = leave_one_out(dataset.interactions)
    # the published test and validation targets come back from leave-one-out
    ids = dataset.items.ids
    assert sorted(ids[i] for i in split.test.item_idx) == ["B07", "B10"]
    assert [ids[i] for i in split.valid.item_idx] == ["B09"]
    texts = dict(zip(dataset.catalog.frame["item_id"], dataset.catalog.texts(), strict=True))
    assert texts["B07"] == "Gorilla Glue, 8 oz. Adhesives. Gorilla." and texts["B08"] is None
    titles = dict(zip(dataset.catalog.frame["item_id"], dataset.catalog.frame["title"],
                      strict=True))
    assert titles["B10"] == "Multimeter"


def test_unisrec_validation_row_that_disagrees_is_named(tmp_path):
    _unisrec(tmp_path, valid_row="0\t7 9\t8")
    with pytest.raises(DataFormatError, match=r"Toy.valid.inter.*line 2"):
        read(tmp_path / "Toy.test.inter", "unisrec")


def test_real_scientific_matches_its_published_counts(shared_data):
    import numpy as np

    from userlens.data import leave_one_out

    folder = shared_data / "amazon-scientific-unisrec"
    if not folder.is_dir():
        pytest.skip("needs ../shared/data/amazon-scientific-unisrec")
    dataset = read(folder, "unisrec")
    assert dataset.summary() == {"users": 2928, "items": 1585, "interactions": 19712}
    assert all(t is not None for t in dataset.catalog.texts())
    # every published test target is the leave-one-out test target of its user
    split = leave_one_out(dataset.interactions)
    test = pl.read_csv(folder / "Scientific.test.inter", separator="\t")
    index = dict(pl.read_csv(folder / "Scientific.item2index", separator="\t",
                             has_header=False).iter_rows())
    asin_of_index = {v: k for k, v in index.items()}
    published = {str(u): asin_of_index[t] for u, t in test.select(
        "user_id:token", "item_id:token").iter_rows()}
    ours = {dataset.users.ids[u]: dataset.items.ids[i]
            for u, i in zip(split.test.user_idx, split.test.item_idx, strict=True)}
    assert ours == published and len(np.unique(split.test.user_idx)) == 2928
