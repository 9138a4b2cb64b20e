"""Conversational recommendation: known answers for the simulator, the FM, max-entropy and
the episode loop; the config / CLI path on a tiny planted dataset; the real LastFM files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import sparse
from typer.testing import CliRunner

from userlens.cli.main import app
from userlens.config import ConfigError, validate_config
from userlens.conversation.bundle import ConversationBundle
from userlens.conversation.data import CRSDataError, load_crs
from userlens.conversation.estimator import Estimator
from userlens.conversation.policies import SCPR, AbsGreedy, MaxEntropy
from userlens.conversation.session import Conversations
from userlens.conversation.simulator import Ask, Recommend, UserSimulator, evaluate, run_episode
from userlens.models.nn.fm import AttributeFM, _Sampler, bags, embeddings

runner = CliRunner()


def write_crs(folder: Path, item_attrs: dict[int, list[int]], n_attributes: int,
              splits: dict[str, dict[int, list[int]]]) -> Path:
    """A conversational dataset folder in the EAR layout."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "item_dict.json").write_text(json.dumps(
        {str(i): {"feature_index": a} for i, a in item_attrs.items()}))
    (folder / "tag_map.json").write_text(json.dumps({str(100 + a): a
                                                     for a in range(n_attributes)}))
    (folder / "tags.dat").write_text("tagID\ttagValue\n" + "".join(
        f"{100 + a}\tgenre{a}\n" for a in range(n_attributes)))
    for split, reviews in splits.items():
        (folder / f"review_dict_{split}.json").write_text(json.dumps(
            {str(u): items for u, items in reviews.items()}))
    return folder


@pytest.fixture
def halves(tmp_path) -> Path:
    """16 items: attribute 0 on all, attribute 1 on items 0-7 (exactly half), attribute 2 on
    items 0-1, attribute 3 on items 8-9, attribute 4 on item 15 only."""
    attrs = {i: [0] + ([1] if i < 8 else []) + ([2] if i < 2 else [])
             + ([3] if 8 <= i < 10 else []) + ([4] if i == 15 else []) for i in range(16)}
    rng = np.random.default_rng(0)
    train = {u: sorted(rng.choice(16, 4, replace=False).tolist()) for u in range(6)}
    valid = {u: [int(rng.integers(16))] for u in range(6)}
    test = {u: [int(rng.integers(16))] for u in range(6)}
    return write_crs(tmp_path / "halves", attrs, 5, {"train": train, "valid": valid,
                                                     "test": test})


def flat_estimator(n_users: int, n_items: int, n_attributes: int) -> Estimator:
    """All scores zero: every candidate weighs the same in the entropy."""
    return Estimator(np.zeros((n_users, 4), np.float32), np.zeros((n_items, 4), np.float32),
                     np.zeros((n_attributes, 4), np.float32))


def test_load_reads_the_graph_names_and_split(halves):
    data = load_crs(halves)
    assert (data.n_users, data.n_items, data.n_attributes) == (6, 16, 5)
    assert data.attribute_names == [f"genre{a}" for a in range(5)]
    assert sorted(data.attributes_of(0).tolist()) == [0, 1, 2]
    assert data.pairs["train"].shape == (24, 2)
    assert data.train.sum() == 24


def test_load_names_the_bad_file_and_item(halves):
    item_dict = json.loads((halves / "item_dict.json").read_text())
    item_dict["3"]["feature_index"] = [0, 99]
    (halves / "item_dict.json").write_text(json.dumps(item_dict))
    with pytest.raises(CRSDataError, match=r"item_dict.json: item 3 names attribute 99"):
        load_crs(halves)


def test_simulator_answers_from_the_item_and_accepts_only_the_target(halves):
    data = load_crs(halves)
    simulator = UserSimulator(data)
    assert simulator.answer(0, 2) and simulator.answer(0, 1) and not simulator.answer(0, 3)
    assert simulator.answer(15, 4) and not simulator.answer(14, 4)
    assert simulator.accepts(5, np.array([1, 5, 9]))
    assert not simulator.accepts(5, np.array([1, 4, 9]))
    rng = np.random.default_rng(0)
    assert all(simulator.opening(8, rng) in (0, 3) for _ in range(20))


def test_max_entropy_asks_the_question_that_splits_the_candidates_in_half(halves):
    data = load_crs(halves)
    conversations = Conversations.from_data(data, flat_estimator(6, 16, 5), list_size=2)
    conversation = conversations.start(0, attribute=0)  # all 16 items stay candidates
    entropy = conversations.attribute_entropy(conversation)
    assert entropy[1] == pytest.approx(1.0)  # 8 of 16: one full bit
    assert entropy[0] == -np.inf  # asked (the opening)
    action = MaxEntropy()(conversations, conversation, 15)
    assert isinstance(action, Ask) and action.attribute == 1
    conversations.answer(conversation, 1, yes=False)  # SCPR: a "no" filters nothing
    assert conversation.candidates.sum() == 16
    conversations.answer(conversation, 2, yes=True)
    assert np.flatnonzero(conversation.candidates).tolist() == [0, 1]
    assert isinstance(MaxEntropy()(conversations, conversation, 15), Recommend)


def test_dropping_rejected_attributes_is_an_explicit_option(halves):
    data = load_crs(halves)
    conversations = Conversations.from_data(data, flat_estimator(6, 16, 5),
                                            drop_rejected_attributes=True)
    conversation = conversations.start(0, attribute=0)
    conversations.answer(conversation, 1, yes=False)
    assert np.flatnonzero(conversation.candidates).tolist() == list(range(8, 16))


def test_excluding_the_history_lists_only_what_the_user_does_not_have(halves, tmp_path):
    data = load_crs(halves)
    train = data.pairs["train"]
    user, target = (int(x) for x in train[0])  # a training pair, played as a target
    own = [int(i) for i in train[train[:, 0] == user, 1]]
    simulator = UserSimulator(data, ("train",))
    history = simulator.history(user, target)
    assert sorted(history) == sorted(set(own) - {target})  # the target is held out
    assert UserSimulator(data).history(user, target) == []
    # an estimator that scores exactly the user's own items 1, every other item 0
    items = np.zeros((16, 4), np.float32)
    items[own, 0] = 1.0
    users = np.zeros((6, 4), np.float32)
    users[user, 0] = 1.0
    estimator = Estimator(users, items, np.zeros((5, 4), np.float32))
    plain = Conversations.from_data(data, estimator, list_size=3)
    listed, _ = plain.recommend(plain.start(user, history))
    assert set(listed.tolist()) <= set(own)  # without the option: what they already have
    excluding = Conversations.from_data(data, estimator, list_size=3, exclude_history=True)
    conversation = excluding.start(user, history)
    listed, _ = excluding.recommend(conversation)
    assert listed[0] == target and not set(listed.tolist()) & set(history)
    assert not conversation.candidates[history].any() and conversation.candidates.sum() == 13
    ConversationBundle(excluding, MaxEntropy(), data.attribute_names, 15).save(tmp_path / "b")
    assert ConversationBundle.load(tmp_path / "b").conversations.exclude_history


def test_candidate_negatives_carry_every_confirmed_attribute():
    rng = np.random.default_rng(0)
    graph = sparse.csr_matrix((rng.random((200, 6)) < 0.4).astype(np.float32))
    dense = graph.toarray() > 0
    items = rng.integers(0, 200, 500)

    def carry_all(aware: str) -> float:
        batch = _Sampler(graph, 8, aware).sample(items, np.random.default_rng(1))
        rows = [(item, known[known < 6], negative) for item, known, negative
                in zip(items, batch["known"], batch["aware_item"], strict=True)]
        rows = [(item, known, negative) for item, known, negative in rows if len(known) > 1]
        assert rows  # pairs with two or more confirmed attributes were drawn
        return float(np.mean([dense[negative, known].all() and negative != item
                              for item, known, negative in rows]))

    assert carry_all("all") == 1.0
    assert carry_all("one") < 0.8  # EAR's negative shares one attribute, not all of them
    with pytest.raises(ValueError, match="aware_negative"):
        _Sampler(graph, 8, "some")


def test_fm_scores_match_the_formula_by_hand():
    model = AttributeFM(2, 3, 4, dim=2)
    with torch.no_grad():
        model.user.weight[:] = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
        model.item.weight[:] = torch.tensor([[1.0, 1.0], [2.0, -1.0], [0.0, 3.0]])
        model.attribute.weight[:4] = torch.tensor([[1.0, 2.0], [0.5, 0.0], [0.0, -1.0],
                                                   [3.0, 3.0]])
    users, pad = torch.tensor([0, 1]), 4
    known = torch.tensor([[0, 1], [2, pad]])
    query = model.query(users, known)
    # user 0, known {0, 1}: u + p0 + p1 = (2.5, 2); item 1: 5 - 2 = 3
    # user 1, known {2}: (0, 2) + (0, -1) = (0, 1); item 2: 3
    scores = model.item_score(query, torch.tensor([1, 2]))
    assert scores.tolist() == pytest.approx([3.0, 3.0])
    # attribute 3 for user 0: (2.5, 2) . (3, 3) = 13.5; attribute 0 for user 1: 2
    attribute = model.attribute_score(query, torch.tensor([3, 0]))
    assert attribute.tolist() == pytest.approx([13.5, 2.0])
    # the numpy estimator computes the same from the exported tables
    from scipy import sparse

    empty = sparse.csr_matrix((3, 4), dtype=np.float32)
    estimator = Estimator(**embeddings(model, empty))
    assert estimator.item_scores(estimator.user[0], [0, 1])[1] == pytest.approx(3.0)
    assert estimator.attribute_scores(estimator.user[1], [2])[0] == pytest.approx(2.0)


def test_item_content_is_the_mean_of_the_items_attributes():
    from scipy import sparse

    item_attributes = sparse.csr_matrix(np.array([[1, 1, 0], [0, 0, 1]], np.float32))
    model = AttributeFM(1, 2, 3, dim=2, item_content=True)
    with torch.no_grad():
        model.item.weight.zero_()
        model.content.weight[:] = torch.tensor([[2.0, 0.0], [0.0, 4.0], [1.0, 1.0]])
    flat, offsets = bags(item_attributes, np.array([1, 0]))
    assert flat.tolist() == [2, 0, 1] and offsets.tolist() == [0, 1]
    vectors = embeddings(model, item_attributes)["item"]
    assert vectors.tolist() == [[1.0, 2.0], [1.0, 1.0]]


def test_items_no_training_pair_holds_are_scored_from_their_content_alone():
    from scipy import sparse

    from userlens.models.nn.fm import FMTraining, train_fm

    model = AttributeFM(2, 4, 3, dim=4, item_content=True,
                        identity=np.array([True, True, True, False]))
    with torch.no_grad():
        model.item.weight.fill_(5.0)
        model.content.weight.zero_()
    item_attributes = sparse.csr_matrix(np.array(
        [[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1]], np.float32))
    vectors = embeddings(model, item_attributes)["item"]
    assert vectors[3].tolist() == [0.0] * 4 and vectors[0].tolist() == [5.0] * 4

    # items 3 and 4 share their one attribute and are in no training pair: with "seen" they
    # are the same vector after training (content alone), with "all" their own rows differ
    item_attributes = sparse.csr_matrix(np.array(
        [[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1], [0, 0, 1]], np.float32))
    pairs = np.array([[0, 0], [1, 1], [0, 2], [1, 0]])
    trained = {}
    for identity in ("seen", "all"):
        config = FMTraining(dim=4, max_epochs=3, batch_size=2, item_identity=identity)
        trained[identity], _ = train_fm(pairs, item_attributes, 2, config=config, seed=0)
    assert np.array_equal(trained["seen"]["item"][3], trained["seen"]["item"][4])
    assert not np.allclose(trained["all"]["item"][3], trained["all"]["item"][4])
    with pytest.raises(ValueError, match="needs item_content"):
        AttributeFM(2, 4, 3, dim=4, identity=np.ones(4, bool))
    with pytest.raises(ConfigError, match="needs item_content"):
        validate_config({"name": "x", "data": {"dataset": "crs-lastfm-ear"}, "conversation": {
            "estimator": {"item_content": False, "item_identity": "seen"}}})


def test_identity_dropout_lifts_never_seen_items_among_their_kind():
    from scipy import sparse

    from userlens.models.nn.fm import FMTraining, train_fm

    # two tastes: users 0-9 like items 0-7 (attribute 0), users 10-19 items 8-15
    # (attribute 1); the last two items of each kind are in no training pair
    rng = np.random.default_rng(0)
    attributes = np.zeros((16, 4), np.float32)
    attributes[:8, 0] = attributes[8:, 1] = 1
    attributes[np.arange(16), 2 + np.arange(16) % 2] = 1  # an uninformative second one
    item_attributes = sparse.csr_matrix(attributes)
    pairs = np.array([(user, item) for user in range(20) for item in rng.choice(
        np.arange(6) + (0 if user < 10 else 8), 4, replace=False)])

    def cold_rank(dropout: float) -> float:
        """Mean share of its own kind scored above a never-seen item (0 = top)."""
        config = FMTraining(dim=8, max_epochs=30, batch_size=8, learning_rate=0.05,
                            item_identity="seen", identity_dropout=dropout)
        tables, _ = train_fm(pairs, item_attributes, 20, config=config, seed=0)
        scores = tables["user"] @ tables["item"].T
        ranks = []
        for user in range(20):
            kind = np.arange(8) + (0 if user < 10 else 8)
            ranks += [(scores[user, kind] > scores[user, cold]).sum() / 7 for cold in kind[6:]]
        return float(np.mean(ranks))

    # without it the cold items sit at the bottom of their kind (measured 0.83); with it
    # content alone learns to rank and they move towards the middle (0.65)
    assert cold_rank(0.5) < cold_rank(0.0) - 0.1
    with pytest.raises(ValueError, match="needs item_content"):
        train_fm(pairs, item_attributes, 20, config=FMTraining(
            item_content=False, identity_dropout=0.5, max_epochs=1))
    with pytest.raises(ConfigError, match="needs item_content"):
        validate_config({"name": "x", "data": {"dataset": "crs-lastfm-ear"}, "conversation": {
            "estimator": {"item_content": False, "identity_dropout": 0.5}}})


def test_episode_is_reproducible_for_a_seed_and_counts_turns(halves):
    data = load_crs(halves)
    rng = np.random.default_rng(3)
    estimator = Estimator(rng.normal(size=(6, 4)).astype(np.float32),
                          rng.normal(size=(16, 4)).astype(np.float32),
                          rng.normal(size=(5, 4)).astype(np.float32))
    conversations = Conversations.from_data(data, estimator, list_size=3)
    simulator = UserSimulator(data)
    pairs = np.array([[0, 5], [1, 12], [2, 15], [3, 0]])
    first = evaluate(conversations, simulator, MaxEntropy(), pairs, seed=7)
    again = evaluate(conversations, simulator, MaxEntropy(), pairs, seed=7)
    assert first == again
    # abs greedy over 16 items in lists of 3 without repeats finds any target by turn 6
    greedy = evaluate(conversations, simulator, AbsGreedy(), pairs, seed=7)
    assert greedy["sr@15"] == 1.0 and greedy["curve"][5] == 1.0
    episode = run_episode(conversations, simulator, AbsGreedy(), 0, 5,
                          rng=np.random.default_rng(0), max_turns=1)
    assert episode.turns == 1 and len(episode.rewards) == 1


def test_reflection_moves_the_user_away_from_a_rejected_list(halves):
    data = load_crs(halves)
    rng = np.random.default_rng(1)
    estimator = Estimator(rng.normal(size=(6, 4)).astype(np.float32),
                          rng.normal(size=(16, 4)).astype(np.float32),
                          np.zeros((5, 4), np.float32))
    conversations = Conversations.from_data(data, estimator, reflection_rate=0.5)
    conversation = conversations.start(0)
    top, _ = conversations.recommend(conversation, 3)
    before = conversations.item_scores(conversation)[top].mean()
    conversations.reject(conversation, top)
    assert conversations.item_scores(conversation)[top].mean() < before
    assert not conversation.candidates[top].any()


def test_scpr_policy_saves_and_loads_its_weights(halves, tmp_path):
    data = load_crs(halves)
    from userlens.config import PolicyTraining

    training = PolicyTraining(episodes=20, eval_every=10, valid_pairs=6)
    conversations = Conversations.from_data(data, flat_estimator(6, 16, 5), list_size=3)
    policy = SCPR(15, training, seed=0).fit(conversations, UserSimulator(data),
                                            data.pairs["train"], data.pairs["valid"])
    assert [row["episode"] for row in policy.history] == [10, 20]
    policy.save(tmp_path)
    loaded = SCPR(15, training, seed=5).load(tmp_path)
    state = np.random.default_rng(0).random(15 + 8).astype(np.float32)
    assert np.allclose(policy.learner.values(state), loaded.learner.values(state))


def test_ear_pretraining_imitates_max_entropy_before_policy_gradient(halves):
    from userlens.config import PolicyTraining
    from userlens.conversation.policies import EAR

    data = load_crs(halves)
    conversations = Conversations.from_data(data, flat_estimator(6, 16, 5), list_size=3)
    simulator = UserSimulator(data)
    training = PolicyTraining(episodes=1, eval_every=1, valid_pairs=6, pretrain_episodes=60,
                              pretrain_epochs=200, learning_rate=0.01)
    policy = EAR(5, 15, training, seed=0)
    assert policy.pretrain(conversations, simulator, data.pairs["train"], max_turns=15)
    moves = policy.history[0]
    assert moves["pretrain_moves"] >= 60 and moves["agreement"] > 0.9
    # greedy, the imitating policy opens as max-entropy does: attribute 1 halves the items
    conversation = conversations.start(0, attribute=0)
    assert policy(conversations, conversation, 15) == MaxEntropy()(conversations,
                                                                   conversation, 15)
    # fit keeps the pre-trained weights as a candidate, checked on validation first
    fitted = EAR(5, 15, training, seed=0).fit(conversations, simulator, data.pairs["train"],
                                              data.pairs["valid"])
    assert [row.get("episode") for row in fitted.history] == [None, 0, 1]
    assert not EAR(5, 15, PolicyTraining(), seed=0).pretrain(
        conversations, simulator, data.pairs["train"], max_turns=15)


def test_config_needs_models_or_a_conversation():
    with pytest.raises(ConfigError, match="at least one"):
        validate_config({"name": "x", "data": {"dataset": "crs-lastfm-ear"}})
    config = validate_config({"name": "x", "data": {"dataset": "crs-lastfm-ear"},
                              "conversation": {"policies": ["scpr"]}})
    assert config.conversation.max_turns == 15
    with pytest.raises(ConfigError, match="conversation.policies.0"):
        validate_config({"name": "x", "data": {"dataset": "crs-lastfm-ear"},
                         "conversation": {"policies": ["crm"]}})


def test_run_json_reports_each_policy(halves, tmp_path):
    config = tmp_path / "crs.toml"
    config.write_text(f"""
name = "tiny-crs"
[data]
path = "{halves}"
[conversation]
policies = ["abs_greedy", "max_entropy", "scpr"]
list_size = 3
[conversation.estimator]
dim = 8
max_epochs = 2
[conversation.training]
episodes = 10
eval_every = 5
""")
    result = runner.invoke(app, ["run", str(config), "--json", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [r["model"] for r in report["results"]] == ["abs_greedy", "max_entropy", "scpr"]
    for row in report["results"]:
        assert set(row["metrics"]) == {"sr@5", "sr@10", "sr@15", "at"}
        assert 0 <= row["metrics"]["sr@15"] <= 1 and 1 <= row["metrics"]["at"] <= 15
        assert row["users"] == 6
    assert (tmp_path / "run" / "estimator" / "estimator.npz").is_file()
    assert (tmp_path / "run" / "policy-scpr.npz").is_file()


def test_real_lastfm_star_estimator_and_greedy_policy(shared_data):
    """Minimum quality on the real LastFM* files (validation pairs, a few FM epochs)."""
    from userlens.config import EstimatorConfig
    from userlens.conversation.estimator import fit_estimator

    data = load_crs(shared_data / "crs-lastfm-star-scpr")
    assert data.summary()["attributes"] == 8438
    assert (data.n_users, data.n_items, len(data.pairs["train"])) == (1801, 7432, 52910)
    assert data.friends is not None and data.friends.nnz > 0
    estimator, history = fit_estimator(data, EstimatorConfig(max_epochs=4), valid_sample=300)
    assert history[-1]["valid"] > history[0]["valid"] or history[-1]["valid"] > 0.2
    conversations = Conversations.from_data(data, estimator)
    pairs = data.pairs["valid"][np.random.default_rng(0).choice(len(data.pairs["valid"]), 300,
                                                                replace=False)]
    result = evaluate(conversations, UserSimulator(data), AbsGreedy(), pairs)
    assert result["sr@15"] > 0.5


def test_converse_in_the_terminal(halves, tmp_path):
    data = load_crs(halves)
    from userlens.conversation.bundle import ConversationBundle

    conversations = Conversations.from_data(data, flat_estimator(6, 16, 5), list_size=2)
    ConversationBundle(conversations, MaxEntropy(), data.attribute_names).save(tmp_path / "b")
    # attribute 1 (yes), attribute 2 (yes) -> items 0 and 1 listed; accept the second
    result = runner.invoke(app, ["converse", str(tmp_path / "b"), "--history", "3"],
                           input="y\ny\n2\n")
    assert result.exit_code == 0, result.output
    assert "do you want 'genre1'?" in result.output and "'genre2'?" in result.output
    assert "accepted item" in result.output and "after 3 turns" in result.output
    missing = runner.invoke(app, ["converse", str(tmp_path)])
    assert missing.exit_code == 2 and "conversation.json" in missing.output
