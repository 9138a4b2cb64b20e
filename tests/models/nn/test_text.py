"""text_sasrec: items described by text, new items scored from their text alone."""

from __future__ import annotations

import numpy as np
import pytest

from tests.models.contract import ModelContract
from tests.models.nn.test_sequential import TINY
from userlens.data.interactions import Histories, Interactions, ItemCatalog
from userlens.models import create
from userlens.models.base import Capability
from userlens.models.nn.text import TextItemEmbedding, TextSASRec
from userlens.models.registry import load_model
from userlens.models.sequential_config import TextSASRecConfig


def random_texts(n_items: int, dim: int = 12, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n_items, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


class TestTextSASRec(ModelContract):
    sequential = True

    def make(self):
        return TextSASRec(TextSASRecConfig(**TINY, n_experts=2, adaptor_dropout=0.0))

    def prepare(self, model, events):
        # the contract's data has no catalogue: each item gets a random unit text vector
        model.set_item_text_embeddings(random_texts(events.n_items))


class TestTextSASRecInductive(TestTextSASRec):
    def make(self):
        return TextSASRec(TextSASRecConfig(**TINY, n_experts=2, adaptor_dropout=0.0,
                                           item_ids=False))


def test_item_vectors_are_the_mixture_of_whitening_experts_by_hand():
    import torch

    text = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    layer = TextItemEmbedding(text, torch.tensor([1.0, 0.0]), dim=3, n_experts=2,
                              dropout=0.0, item_ids=True, init_std=0.1)
    with torch.no_grad():
        layer.whitening_bias.copy_(torch.tensor([[0.5, 0.0], [0.0, 1.0]]))
        layer.experts.copy_(torch.arange(12, dtype=torch.float32).reshape(2, 2, 3) / 10)
        layer.gate.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        layer.ids.weight.copy_(torch.ones(3, 3))
    weight = layer.weight.detach().numpy()
    experts = np.arange(12, dtype=np.float32).reshape(2, 2, 3) / 10
    expected = []
    for row, seen in zip(([1.0, 0.0], [0.0, 2.0]), (1.0, 0.0), strict=True):
        x = np.array(row)
        gates = np.exp(x) / np.exp(x).sum()
        mix = sum(gates[k] * (x - [[0.5, 0.0], [0.0, 1.0]][k]) @ experts[k] for k in range(2))
        expected.append(mix + seen * np.ones(3))
    np.testing.assert_allclose(weight[0], 0.0)  # padding
    np.testing.assert_allclose(weight[1:], np.array(expected), rtol=1e-5)
    tokens = torch.tensor([[2, 0, 1]])
    np.testing.assert_allclose(layer(tokens).detach().numpy()[0], weight[[2, 0, 1]])


def test_the_scoring_table_is_computed_once_until_a_parameter_changes():
    import torch

    layer = TextItemEmbedding(torch.randn(5, 4), torch.ones(5), dim=3, n_experts=2,
                              dropout=0.2, item_ids=True, init_std=0.1).eval()
    with torch.no_grad():
        first = layer.weight
        assert layer.weight is first  # reused while scoring
        layer.load_state_dict({k: v + 1 for k, v in layer.state_dict().items()})
        second = layer.weight
        assert second is not first and not torch.allclose(second, first)
        np.testing.assert_allclose(second.numpy(), layer._compute().numpy(), rtol=1e-6)
    trained = layer.train().weight  # training: computed afresh, with dropout and grads
    assert trained.requires_grad and trained is not second


def two_topics(n_users: int = 80, seed: int = 0) -> tuple[Interactions, np.ndarray]:
    """Items 0-9 are about topic A, 10-19 about topic B (their texts say so: a topic
    direction plus noise). A user stays within one topic. Items 9 and 19 have no events."""
    rng = np.random.default_rng(seed)
    topic = np.zeros((2, 16), np.float32)
    topic[0, 0] = topic[1, 1] = 1.0
    texts = np.concatenate([topic[0] + 0.3 * rng.normal(size=(10, 16)),
                            topic[1] + 0.3 * rng.normal(size=(10, 16))]).astype(np.float32)
    users, items = [], []
    for user in range(n_users):
        base = 0 if user % 2 == 0 else 10
        users += [user] * 8
        items += (base + rng.choice(9, 8)).tolist()  # never item 9 / 19
    return Interactions.from_arrays(np.array(users), np.array(items), n_items=20), texts


@pytest.mark.parametrize("item_ids", [True, False])
def test_a_never_seen_item_is_scored_from_its_text(item_ids):
    events, texts = two_topics()
    model = TextSASRec(TextSASRecConfig(**{**TINY, "max_epochs": 40}, n_experts=2,
                                        adaptor_dropout=0.0, item_ids=item_ids))
    model.set_item_text_embeddings(texts)
    model.fit(events, seed=0)
    histories = Histories.from_lists([[0, 1, 2, 3], [10, 11, 12, 13]], n_items=20)
    scores = model.score(histories)
    # the topic-A history ranks the unseen topic-A item 9 above every topic-B item, the
    # unseen 19 included, and the topic-B history the other way round
    assert scores[0, 9] > scores[0, 10:].max()
    assert scores[1, 19] > scores[1, :10].max()


def test_sasrec_cannot_do_that():
    # the control: with ID embeddings only, the never-seen items keep their random init
    events, _ = two_topics()
    model = create("sasrec", {**TINY, "max_epochs": 40}).fit(events, seed=0)
    histories = Histories.from_lists([[0, 1, 2, 3], [10, 11, 12, 13]], n_items=20)
    ranks = (-model.score(histories)).argsort(axis=1).argsort(axis=1)
    assert ranks[0, 9] > 5 or ranks[1, 19] > 5


def test_save_and_load_keep_the_text_vectors(tmp_path):
    events, texts = two_topics()
    model = TextSASRec(TextSASRecConfig(**{**TINY, "max_epochs": 3}, n_experts=2))
    model.set_item_text_embeddings(texts)
    model.fit(events, seed=0)
    loaded = load_model(model.save(tmp_path / "m"))
    assert loaded.config.text_dim == 16
    histories = events.histories()
    np.testing.assert_allclose(loaded.score(histories), model.score(histories), rtol=1e-5)
    np.testing.assert_array_equal(loaded.text_, texts)
    assert loaded.can(Capability.ITEM_TEXT) and loaded.can(Capability.EMBEDDINGS)


def test_without_texts_fit_says_what_is_missing():
    events, texts = two_topics()
    with pytest.raises(ValueError, match="texts before fit"):
        TextSASRec(TextSASRecConfig(**TINY)).fit(events)
    model = TextSASRec(TextSASRecConfig(**TINY))
    model.set_item_text_embeddings(texts[:5])
    with pytest.raises(ValueError, match="5 item texts for a catalogue of 20"):
        model.fit(events)
    with pytest.raises(NotImplementedError, match="does not read item texts"):
        create("sasrec", TINY).set_item_texts(["a"])


def test_catalogue_texts_fall_back_to_title_and_categories():
    import polars as pl

    catalog = ItemCatalog(pl.DataFrame({"item_id": ["a", "b"], "title": ["Glue", None],
                                        "categories": [["Adhesives", "Tools"], None]}))
    assert catalog.texts() == ["Glue. Adhesives. Tools", None]
    with_text = ItemCatalog(pl.DataFrame({"item_id": ["a"], "text": ["Glue. Adhesives."]}))
    assert with_text.texts() == ["Glue. Adhesives."]
    assert ItemCatalog(pl.DataFrame({"item_id": ["a"]})).texts() is None


def _needs_minilm() -> None:
    import importlib.util

    for package in ("sentence_transformers", "all_minilm_l6_v2"):  # found, not imported
        if importlib.util.find_spec(package) is None:
            pytest.skip(f"needs {package} (userlens[text])")


def test_packaged_minilm_embeds_offline_and_caches(tmp_path, monkeypatch):
    _needs_minilm()
    from userlens.data import text

    monkeypatch.setenv("USERLENS_CACHE", str(tmp_path))
    titles = ["Gorilla Original Gorilla Glue, Waterproof Polyurethane Glue",
              "Titebond wood glue for carpentry",
              "Digital multimeter, AC/DC voltage tester"]
    vectors = text.embed_texts(titles)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    similar = vectors @ vectors.T
    assert similar[0, 1] > similar[0, 2] and similar[0, 1] > similar[1, 2]  # glue ~ glue
    # the unpacked weights are all-MiniLM-L6-v2's, checked by hash
    folder = text.model_folder()
    assert text._sha256(folder / "model.safetensors") == text.MINILM_WEIGHTS_SHA256
    # a second call reads the cache: the model is not run
    def refuse(*args, **kwargs):
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(text, "_encoder", refuse)
    np.testing.assert_array_equal(text.embed_texts(titles), vectors)
    with pytest.raises(AssertionError, match="cache was not used"):
        text.embed_texts(titles[:2])  # another catalogue version is embedded anew


def test_a_text_model_that_is_not_there_is_named(tmp_path):
    from userlens.data.text import model_folder

    with pytest.raises(FileNotFoundError, match="no model hub is contacted"):
        model_folder(str(tmp_path / "nowhere"))


@pytest.mark.parametrize("unseen_negatives", [False, True])
def test_items_without_training_events_are_left_out_of_the_training_softmax(unseen_negatives):
    import torch
    import torch.nn.functional as F

    events, texts = two_topics()  # items 9 and 19 have no events
    model = TextSASRec(TextSASRecConfig(**{**TINY, "max_epochs": 1}, n_experts=2,
                                        unseen_negatives=unseen_negatives))
    model.set_item_text_embeddings(texts)
    model.fit(events, seed=0)
    model._prepare_training([], 0)
    hidden = torch.randn(5, TINY["dim"], generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([0, 3, 10, 18, 8])
    with torch.no_grad():
        got = model._loss(hidden, targets, torch.Generator())
        table = model.module_.item_weights()
        keep = [i for i in range(20) if unseen_negatives or i not in (9, 19)]
        position = {item: p for p, item in enumerate(keep)}
        expected = F.cross_entropy(hidden @ table[keep].T,
                                   torch.tensor([position[int(t)] for t in targets]))
    if model.config.loss_mean == "global":  # the loss is a share of the batch's targets
        expected = expected * len(targets) / model.targets_per_batch_
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("loss", ["sampled_softmax", "bce", "gbce"])
def test_sampled_losses_train_on_the_trained_items(loss):
    events, texts = two_topics()
    model = TextSASRec(TextSASRecConfig(**{**TINY, "max_epochs": 2}, loss=loss, n_negatives=4,
                                        n_experts=2))
    model.set_item_text_embeddings(texts)
    model.fit(events, seed=0)
    assert len(model.trained_) == 18  # items 9 and 19 have no events
    assert np.isfinite(model.score(events.histories())).all()


GLUES = ["Gorilla Original Glue, waterproof polyurethane, 8 oz", "Loctite Super Glue gel",
         "Elmer's wood glue for carpentry", "J-B Weld epoxy adhesive, two-part",
         "Titebond III ultimate wood glue", "3M spray adhesive for foam and fabric",
         "E6000 craft adhesive, clear", "Liquid Nails construction adhesive"]
METERS = ["Fluke digital multimeter, true RMS", "Klein Tools voltage tester, non-contact",
          "AstroAI digital multimeter with ohm and amp meter", "Clamp meter for AC current",
          "Extech insulation resistance tester", "Outlet tester with GFCI indicator",
          "Oscilloscope probe kit, 100 MHz", "Continuity tester with alligator clips"]
NEW = {"new-glue": "Gorilla clear grip contact adhesive, waterproof glue",
       "new-meter": "Fluke clamp multimeter for AC and DC voltage testing"}


def test_new_catalogue_items_are_recommended_from_their_text(tmp_path, monkeypatch):
    """End to end: events for 16 items, a catalogue file with two more items that nobody
    had (``new_items = "keep"``); the real sentence model embeds the titles; a glue history
    gets the new glue before the new multimeter, and the other way round."""
    _needs_minilm()
    import polars as pl

    import userlens

    monkeypatch.setenv("USERLENS_CACHE", str(tmp_path / "cache"))
    titles = {f"g{i}": t for i, t in enumerate(GLUES)} | {f"m{i}": t for i, t in
                                                          enumerate(METERS)} | NEW
    pl.DataFrame({"item_id": list(titles), "title": list(titles.values())}).write_csv(
        tmp_path / "items.csv")
    rng = np.random.default_rng(0)
    rows = []
    for user in range(120):
        prefix = "g" if user % 2 == 0 else "m"
        for step, item in enumerate(rng.choice(8, 6, replace=False)):
            rows.append({"user": f"u{user}", "item": f"{prefix}{item}", "ts": step})
    config = {"name": "new-items", "data": {"items": str(tmp_path / "items.csv"),
                                            "new_items": "keep", "columns": {
                                                "user": "user", "item": "item", "time": "ts"}},
              "split": {"method": "leave_one_out"}, "evaluation": {"metrics": ["hr@10"]},
              "models": [{"name": "text_sasrec", "params": {**TINY, "max_epochs": 30,
                                                            "n_experts": 2,
                                                            "item_ids": False}}]}
    userlens.run(config, data=pl.DataFrame(rows), out=tmp_path / "run")
    shop = userlens.load_artefact(tmp_path / "run" / "text_sasrec")
    assert set(NEW) <= set(shop.items.ids.tolist())  # kept although nobody had them

    def rank(history, item):
        top = shop.recommend(history, k=18)["item_id"].to_list()
        return top.index(item)

    assert rank(["g0", "g1", "g2"], "new-glue") < rank(["g0", "g1", "g2"], "new-meter")
    assert rank(["m0", "m1", "m2"], "new-meter") < rank(["m0", "m1", "m2"], "new-glue")


def test_new_items_need_a_catalogue():
    from userlens.config import DataConfig

    with pytest.raises(ValueError, match="give data.items too"):
        DataConfig(path="events.csv", new_items="keep")


def test_added_items_extend_the_scoring_table_as_a_full_recompute_would():
    _needs_minilm()
    import torch

    events, _ = two_topics()
    model = TextSASRec(TextSASRecConfig(**{**TINY, "max_epochs": 2}, n_experts=2))
    model.set_item_text_embeddings(random_texts(20, dim=384))
    model.fit(events, seed=0)
    before = model.score(Histories.from_lists([[0, 1, 2]], n_items=20))
    model.add_items(["Wood glue for carpentry", "Digital multimeter"])
    assert model.n_items_ == 22 and len(model.popularity()) == 22
    layer = model.module_.item_embedding
    with torch.no_grad():
        cached = layer.weight  # the extended cache
        np.testing.assert_allclose(cached.numpy(), layer._compute().numpy(), rtol=1e-5,
                                   atol=1e-6)
    after = model.score(Histories.from_lists([[0, 1, 2]], n_items=22))
    assert np.isfinite(after).all()
    np.testing.assert_allclose(after[0, :20], before[0], rtol=1e-5)  # old items unchanged
    assert model.seen_[20:].sum() == 0 and np.abs(model.text_[20:]).sum() > 0
    with pytest.raises(ValueError, match="non-empty text per item"):
        model.add_items(["ok", " "])
    small = TextSASRec(TextSASRecConfig(**{**TINY, "max_epochs": 1}))
    small.set_item_text_embeddings(random_texts(20, dim=16))
    small.fit(events, seed=0)
    with pytest.raises(ValueError, match="gives 384 dimensions, the model was trained on 16"):
        small.add_items(["Wood glue"])
