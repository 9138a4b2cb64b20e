"""Multi-interest models (ComiRec-SA, DESMIL, HCN), their HSIC parts and center updates, and
per-interest ANN serving."""

import numpy as np
import pytest
import torch

from tests.models.contract import ModelContract, cycle_walks
from tests.models.nn.test_sequential import TINY
from userlens.data.interactions import Histories, Interactions
from userlens.models import create
from userlens.models.base import Capability
from userlens.models.nn import losses
from userlens.models.nn.multi_interest import DESMIL, HCN, CenterUpdate, ComiRec, _newest
from userlens.models.sequential_config import ComiRecConfig, DESMILConfig, HCNConfig
from userlens.serving.engine import merge_hits


class TestComiRecTransformer(ModelContract):
    sequential = True

    def make(self):
        return ComiRec(ComiRecConfig(**TINY, n_interests=2, encoder="transformer",
                                     readout="max"))


class TestComiRecEmbeddings(ModelContract):
    sequential = True

    def make(self):
        return ComiRec(ComiRecConfig(**TINY, n_interests=2, readout="max"))

    def test_learns_the_obvious_answer(self):
        # ComiRec-SA's own encoder sees order only through absolute positions: it does not
        # learn "the item after the last one" of the cycle task (measured: 0.12 hit rate
        # after 300 epochs), and no next-item model learns the two-groups task (an item
        # that starts every history is never a target). Its obvious answer: a user whose
        # every event is in one cluster gets that cluster's items.
        events, pairs, size = _planted_interests(n_users=80, length=12, one_cluster=True)
        model = self.make().fit(events, seed=0)
        items, _ = model.recommend(events.histories(), k=1, exclude=False)
        clusters = [next(iter(pair)) for pair in pairs]
        assert np.mean(items[:, 0] // size == np.array(clusters)) >= 0.95


class TestDESMIL(ModelContract):
    sequential = True

    def make(self):
        return DESMIL(DESMILConfig(**TINY, n_interests=2, encoder="transformer",
                                   readout="max", reweight_steps=3, short_term=True))


class TestHCN(ModelContract):
    sequential = True

    def make(self):
        return HCN(HCNConfig(**TINY, n_interests=2, encoder="transformer", readout="max",
                             short_window=3))


def test_hard_readout_leaves_an_unpicked_interest_free_and_max_readout_fixes_it():
    # measured on the cycle task: with the paper's hard readout one interest settles on a
    # fixed item that no target ever selects it for, and wins every ranking at serving time
    # How often depends on the seed and on the machine's kernels (seeds 0-4 on a fresh
    # environment: hard 0.8, 0.43, 0.1, 0.8, 0.38; max 1.0 every time), so three seeds.
    events = cycle_walks()
    histories = events.histories()
    nxt = (histories.item_idx[histories.indptr[1:] - 1] + 1) % 9
    hits: dict[str, list[float]] = {"hard": [], "max": []}
    for seed in range(3):
        for readout in ("hard", "max"):
            model = create("comirec", {**TINY, "encoder": "transformer", "n_interests": 2,
                                       "readout": readout}).fit(events, seed=seed)
            items, _ = model.recommend(histories, k=1, exclude=False)
            hits[readout].append(float(np.mean(items[:, 0] == nxt)))
    assert min(hits["max"]) >= 0.95, hits
    assert max(hits["hard"]) < 0.95 and np.mean(hits["hard"]) < 0.6, hits


@pytest.mark.parametrize("name, encoder, short_term", [
    ("comirec", "embeddings", False), ("comirec", "transformer", False),
    ("comirec", "transformer", True), ("hcn", "embeddings", False),
    ("hcn", "transformer", False)])
def test_every_prefix_interests_equal_the_prefix_encoded_alone(name, encoder, short_term):
    extra = {"short_term": short_term} if name == "comirec" else {"short_window": 2}
    model = create(name, dict(dim=8, max_len=10, n_interests=3, encoder=encoder, dropout=0.0,
                              threads=1, **extra))
    module = model._build_module(20).eval()
    tokens = torch.tensor([[3, 7, 1, 12, 5, 9], [4, 2, 8, 0, 0, 0]])
    with torch.no_grad():
        every = module(tokens)  # (B, L, K, D)
        for row, length in ((0, 6), (1, 3)):
            for end in range(1, length + 1):
                alone = module(tokens[row:row + 1, :end], every_prefix=False)[0]  # (K, D)
                torch.testing.assert_close(every[row, end - 1], alone, atol=1e-5, rtol=1e-5)


def _planted_interests(n_users=120, n_clusters=4, size=6, length=30, seed=0,
                       one_cluster=False, cycles=True):
    """Each user has two of four item clusters (one, with ``one_cluster``) and draws every
    event from one of them at random; within a cluster the next item follows a cycle (or,
    without ``cycles``, is any of the cluster's items)."""
    rng = np.random.default_rng(seed)
    users, items, pairs = [], [], []
    for user in range(n_users):
        pair = rng.choice(n_clusters, 2, replace=False)
        if one_cluster:
            pair[1] = pair[0]
        position = rng.integers(size, size=2)
        for _ in range(length):
            which = rng.integers(2)
            position[which] = (position[which] + 1) % size if cycles else rng.integers(size)
            users.append(user)
            items.append(pair[which] * size + position[which])
        pairs.append(set(pair.tolist()))
    events = Interactions.from_arrays(np.array(users), np.array(items),
                                      n_items=n_clusters * size)
    return events, pairs, size


def test_two_interests_recover_the_two_planted_clusters():
    events, pairs, size = _planted_interests()
    model = ComiRec(ComiRecConfig(dim=16, max_len=20, n_interests=2, batch_size=16,
                                  max_epochs=40, dropout=0.0, learning_rate=0.01,
                                  encoder="transformer", readout="max",
                                  threads=1)).fit(events, seed=0)
    interests = model.interest_vectors(events.histories())  # (U, 2, D)
    items = model.item_vectors()
    top = np.argmax(interests @ items.T, axis=2) // size  # (U, 2): each interest's cluster
    split = [set(row.tolist()) == pair for row, pair in zip(top, pairs, strict=True)]
    assert np.mean(split) >= 0.8, np.mean(split)
    # the planted structure needs both vectors: a single interest puts both clusters in
    # one direction, so its best item covers only one of the user's clusters
    scores = model.score(events.histories())
    best = np.argsort(-scores, axis=1)[:, :2] // size
    assert np.mean([set(row.tolist()) == pair for row, pair in zip(best, pairs, strict=True)]
                   ) >= 0.8


def test_scores_are_the_best_interest_per_item():
    events, _, _ = _planted_interests(n_users=20, length=10)
    model = create("comirec", {**TINY, "max_epochs": 2, "n_interests": 3}).fit(events)
    histories = events.histories()
    expected = (model.interest_vectors(histories) @ model.item_vectors().T).max(axis=1)
    np.testing.assert_allclose(model.score(histories), expected, rtol=1e-5, atol=1e-5)
    assert model.can(Capability.INTERESTS) and not model.can(Capability.EMBEDDINGS)
    with pytest.raises(NotImplementedError, match="embeddings"):
        model.user_vectors(histories)


def test_short_term_interest_is_the_sasrec_state_after_the_last_event():
    events, _, _ = _planted_interests(n_users=20, length=10)
    model = create("comirec", {**TINY, "max_epochs": 2, "n_interests": 3,
                               "encoder": "transformer", "short_term": True}).fit(events)
    histories = events.histories()
    vectors = model.interest_vectors(histories)
    assert vectors.shape == (20, 4, 16)
    with torch.no_grad():
        tokens = torch.from_numpy(np.stack([histories.sequence(u)[-8:] + 1
                                            for u in range(20)]).astype(np.int64))
        states = model.module_.encoder(tokens)[:, -1]  # every history fills the window
    np.testing.assert_allclose(vectors[:, 3], states.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("update", ["mean", "mass"])
def test_center_update_is_soft_k_means_over_the_held_events(update):
    # with identity projections and no feed-forward step, a level moves center k by the
    # mean of the events weighted by their softmax-over-centers share of k, counting only
    # the events the prefix holds ("mass": that mean times m / (1 + m) for k's mass m);
    # computed here by hand, in numpy
    rng = np.random.default_rng(0)
    dim = 4
    level = CenterUpdate(dim, 1, update=update)
    with torch.no_grad():
        for linear in (level.query, level.key, level.value):
            linear.weight.copy_(torch.eye(dim))
        level.feed[2].weight.zero_()
        level.feed[2].bias.zero_()
    centers = rng.normal(size=(2, 3, dim)).astype(np.float32)  # (T, K, D) for one user
    states = rng.normal(size=(5, dim)).astype(np.float32)  # (S, D)
    valid = np.array([[1, 1, 0, 0, 0], [1, 1, 1, 0, 1]], dtype=bool)  # (T, S)
    with torch.no_grad():
        moved = level(torch.from_numpy(centers)[None], torch.from_numpy(states)[None],
                      torch.from_numpy(valid)[None])[0].numpy()
    normed = (centers - centers.mean(-1, keepdims=True)) / np.sqrt(
        centers.var(-1, keepdims=True) + 1e-5)
    for t in range(2):
        logits = normed[t] @ states.T / np.sqrt(dim)  # (K, S)
        share = np.exp(logits) / np.exp(logits).sum(axis=0, keepdims=True) * valid[t]
        mass = share.sum(axis=1, keepdims=True)  # (K, 1)
        step = (share @ states) / (mass + 1e-6)
        if update == "mass":
            step = step * mass / (1 + mass)
        expected = centers[t] + step
        np.testing.assert_allclose(moved[t], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("update", ["mean", "mass"])
def test_center_update_shortcuts_equal_the_masked_update(update):
    # running sums (centers shared by every prefix) and windows of the newest events give
    # what the plain update gives with the causal / windowed mask, checked by hand above
    torch.manual_seed(0)
    level = CenterUpdate(6, 2, update=update).eval()
    states = torch.randn(3, 7, 6)
    lengths = torch.tensor([7, 4, 1])
    real = torch.arange(7) < lengths.unsqueeze(1)  # (B, S) right-padded
    age = torch.arange(7).view(-1, 1) - torch.arange(7).view(1, -1)  # (T, S)
    held = (age >= 0) & real.unsqueeze(1)
    shared = torch.randn(1, 1, 4, 6)
    with torch.no_grad():
        torch.testing.assert_close(level.forward_cumulative(shared, states, real),
                                   level(shared, states, held), atol=1e-5, rtol=1e-5)
        for window in (1, 3, 9):
            newest, valid = _newest(states, real, window, every_prefix=True)
            masked = held & (age < window)
            per_prefix = torch.randn(3, 7, 4, 6)
            for centers in (shared, per_prefix):
                torch.testing.assert_close(level.forward_window(centers, newest, valid),
                                           level(centers, states, masked),
                                           atol=1e-5, rtol=1e-5)
            newest, valid = _newest(states, real, window, every_prefix=False)
            last = (lengths - 1).view(-1, 1, 1)
            torch.testing.assert_close(
                level.forward_window(shared, newest, valid),
                level(shared, states, real.unsqueeze(1) & (last - torch.arange(7) < window)),
                atol=1e-5, rtol=1e-5)


def test_hcn_short_term_centers_see_only_the_newest_events():
    model = HCN(HCNConfig(dim=8, max_len=10, n_interests=2, n_short_interests=2,
                          short_window=3, dropout=0.0, threads=1))
    module = model._build_module(20).eval()
    states = torch.randn(1, 7, 8)
    with torch.no_grad():
        windowed = module.short_term(states, torch.ones(1, 7, dtype=torch.bool),
                                     every_prefix=False, window=3)
        alone = module.short_term(states[:, 4:], torch.ones(1, 3, dtype=torch.bool),
                                  every_prefix=False)
        torch.testing.assert_close(windowed, alone, atol=1e-5, rtol=1e-5)
        tokens = torch.tensor([[3, 7, 1, 12, 5, 9, 4]])
        changed = tokens.clone()
        changed[0, 0] = 15  # older than the window: the long-term side sees it
        every = module(tokens, every_prefix=False)
        assert module(changed, every_prefix=False).shape == every.shape == (1, 4, 8)
    assert not torch.allclose(module(changed, every_prefix=False), every)


def test_hcn_recovers_the_two_planted_clusters():
    events, pairs, size = _planted_interests()
    model = HCN(HCNConfig(dim=16, max_len=20, n_interests=2, batch_size=16, max_epochs=40,
                          dropout=0.0, learning_rate=0.01, encoder="transformer",
                          readout="max", threads=1)).fit(events, seed=0)
    scores = model.score(events.histories())
    best = np.argsort(-scores, axis=1)[:, :2] // size
    assert np.mean([set(row.tolist()) == pair for row, pair in zip(best, pairs, strict=True)]
                   ) >= 0.8
    assert model.interest_vectors(events.histories()).shape == (120, 3, 16)


def test_hcn_refuses_comirecs_short_term_flag():
    with pytest.raises(ValueError, match="n_short_interests"):
        HCNConfig(short_term=True)


def test_comirec_refuses_positions_from_end_and_max_readout_without_ce():
    with pytest.raises(ValueError, match="from_start"):
        ComiRecConfig(positions="from_end")
    with pytest.raises(ValueError, match="readout"):
        ComiRecConfig(readout="max", loss="bce")


def test_max_readout_losses_match_their_formula():
    generator = torch.Generator().manual_seed(4)
    interests = torch.randn(5, 3, 4, generator=generator)  # T=5, K=3, D=4
    weights = torch.randn(7, 4, generator=generator)
    targets = torch.tensor([0, 3, 6, 3, 1])
    logits = (interests @ weights.T).amax(dim=1)  # (T, n_items): each item's best interest
    full = torch.nn.functional.cross_entropy(logits, targets)
    torch.testing.assert_close(losses.max_interest_cross_entropy(interests, targets, weights,
                                                                 chunk=2), full)
    negatives = torch.tensor([2, 3, 5])
    by_hand = []
    for t in range(5):
        row = [logits[t, targets[t]]] + [logits[t, n] for n in negatives
                                         if n != targets[t]]
        by_hand.append(-row[0] + torch.logsumexp(torch.stack(row), 0))
    torch.testing.assert_close(losses.sampled_softmax(interests, targets, weights, negatives),
                               torch.stack(by_hand).mean())


def test_max_readout_pad_logit_adds_one_zero_logit_class():
    """pad_logit reaches the max readout too: one more class whose logit is 0."""
    events = cycle_walks(40, 9, 12, 0)
    model = ComiRec(ComiRecConfig(**{**TINY, "max_epochs": 1}, n_interests=2, readout="max",
                                  pad_logit=True, loss_mean="batch")).fit(events)
    generator = torch.Generator().manual_seed(1)
    interests = torch.randn(6, 2, TINY["dim"], generator=generator)
    targets = torch.randint(0, events.n_items, (6,), generator=generator)
    logits = (interests @ model.module_.item_weights().detach().T).amax(dim=1)
    with_pad = torch.cat([logits, torch.zeros(6, 1)], dim=1)
    with torch.no_grad():
        loss = model._readout_loss(interests, interests[:, 0], targets, generator, None)
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(with_pad, targets))
    assert float(loss) > float(torch.nn.functional.cross_entropy(logits, targets))


def test_weighted_hsic_matches_its_formula_by_hand():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(7, 3, 2, generator=generator).double()  # T=7, K=3, R=2
    weights = torch.rand(7, generator=generator).double()
    weights = weights / weights.sum()
    expected = 0.0
    mean = (weights[:, None, None] * features).sum(0)
    for i in range(3):
        for j in range(i + 1, 3):
            for r in range(2):
                for s in range(2):
                    cov = sum(float(weights[t]) * float(features[t, i, r] - mean[i, r])
                              * float(features[t, j, s] - mean[j, s]) for t in range(7))
                    expected += cov ** 2
    assert float(losses.weighted_hsic(features, weights)) == pytest.approx(expected)


def test_weighted_hsic_is_zero_for_a_constant_and_positive_for_a_copy():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(50, 4, generator=generator)
    uniform = torch.full((50,), 1 / 50)
    constant = torch.stack([x, torch.ones_like(x)], dim=1)  # (T, 2, R)
    assert float(losses.weighted_hsic(constant, uniform)) == pytest.approx(0.0, abs=1e-10)
    copy = torch.stack([x, x], dim=1)
    assert float(losses.weighted_hsic(copy, uniform)) > 0.1


def test_random_fourier_features_approximate_the_gaussian_kernel():
    generator = torch.Generator().manual_seed(2)
    x, y = torch.randn(2, 3, generator=generator)
    features = 20_000
    projection = torch.randn(3, features, generator=generator) / 1.5
    phase = torch.rand(features, generator=generator) * 2 * np.pi
    fx = losses.random_fourier_features(x, projection, phase)
    fy = losses.random_fourier_features(y, projection, phase)
    kernel = float(torch.exp(-(x - y).pow(2).sum() / (2 * 1.5 ** 2)))
    assert float(fx @ fy) == pytest.approx(kernel, abs=0.03)


def test_stable_weights_lower_the_dependence_between_interests():
    generator = torch.Generator().manual_seed(3)
    base = torch.randn(200, 4, generator=generator)
    # interest 2 copies interest 1 on the first half of the samples, is noise on the rest
    other = torch.where(torch.arange(200)[:, None] < 100, base,
                        torch.randn(200, 4, generator=generator))
    interests = torch.stack([base, other], dim=1)  # (T, K=2, D)
    model = DESMIL(DESMILConfig(n_interests=2, dim=4, rff_features=32, reweight_steps=50))
    weights = model.stable_weights(interests, torch.Generator().manual_seed(0))
    assert weights.shape == (200,) and float(weights.mean()) == pytest.approx(1.0, abs=0.05)
    assert float(weights[100:].mean()) > float(weights[:100].mean())  # the independent half
    projection = torch.randn(4, 32, generator=generator)
    phase = torch.rand(32, generator=generator) * 2 * np.pi
    features = losses.random_fourier_features(interests, projection, phase)
    assert float(losses.weighted_hsic(features, weights / weights.sum())) < float(
        losses.weighted_hsic(features, torch.full((200,), 1 / 200)))


def test_merge_hits_keeps_each_items_best_score_best_first():
    values = np.array([[5.0, 3.0, 1.0], [4.0, 3.5, -1.0]], np.float32)
    found = np.array([[7, 2, 9], [2, 8, -1]])
    scores, items = merge_hits(values, found)
    assert items.tolist() == [7, 2, 8, 9] and scores.tolist() == [5.0, 4.0, 3.5, 1.0]


def test_serving_retrieves_per_interest_through_the_ann(tmp_path):
    from tests.serving.conftest import item_id, write_artefact
    from userlens.serving.engine import Engine

    events, _, size = _planted_interests(n_users=150, n_clusters=25, size=8, length=16)
    model = ComiRec(ComiRecConfig(**{**TINY, "max_epochs": 3}, n_interests=2)).fit(events)
    path = write_artefact(tmp_path / "comirec", model, events.n_items, "comirec")
    exact = Engine.load(path, ann_min_items=10_000)
    approximate = Engine.load(path, ann_min_items=100, ann_kind="hnsw", ann_depth=400)
    assert exact.ann is None and approximate.ann is not None
    for user in range(10):
        history = [item_id(int(i)) for i in events.histories().sequence(user)]
        a, _, _ = exact.recommend(history, 10)
        b, _, _ = approximate.recommend(history, 10)
        assert {s.source for s in b} == {"ann"} and not {s.item_id for s in b} & set(history)
        # HNSW searched this deep over 200 items is exact: the same items, the same scores
        assert [s.item_id for s in b] == [s.item_id for s in a]
        np.testing.assert_allclose([s.score for s in b], [s.score for s in a], rtol=1e-4)


def test_empty_history_interest_vectors_are_zero():
    events, _, _ = _planted_interests(n_users=10, length=8)
    model = create("comirec", {**TINY, "max_epochs": 1}).fit(events)
    vectors = model.interest_vectors(Histories.from_lists([[], [1, 2]], n_items=events.n_items))
    assert vectors.shape == (2, 4, 16) and not vectors[0].any() and vectors[1].any()


def test_profile_clusters_are_the_models_interests(tmp_path):
    from tests.serving.conftest import item_id, make_client, write_artefact

    # no order inside a cluster: an interest then stands for a whole cluster (with cycles
    # it points at the next item of one, and the far side of the cycle scores below zero)
    events, pairs, size = _planted_interests(cycles=False)
    model = ComiRec(ComiRecConfig(dim=16, max_len=20, n_interests=2, batch_size=16,
                                  max_epochs=40, dropout=0.0, learning_rate=0.01,
                                  encoder="transformer", readout="max",
                                  threads=1)).fit(events, seed=0)
    path = write_artefact(tmp_path / "comirec", model, events.n_items, "comirec")
    client, storage = make_client(path, f"sqlite:///{tmp_path / 'p.db'}")
    with client:
        history = events.histories().sequence(0)
        client.post("/events", json={"events": [
            {"user_id": "u", "item_id": item_id(int(i)), "timestamp": 1e9 + t}
            for t, i in enumerate(history)]})
        profile = client.get("/users/u/profile").json()
    storage.close()
    assert profile["cluster_source"] == "model interests"
    groups = [{int(i.removeprefix("m")) // size for i in c["evidence"]}
              for c in profile["clusters"]]
    # two groups, each holding the items of one of the user's two planted clusters
    assert len(groups) == 2 and all(len(g) == 1 for g in groups)
    assert set().union(*groups) == pairs[0]
