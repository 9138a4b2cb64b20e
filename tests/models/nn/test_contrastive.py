"""ICSRec, ICLRec and their parts: InfoNCE, augmentations, cross subsequences, intents."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.models.contract import ModelContract, cycle_walks
from tests.models.nn.test_sequential import TINY
from userlens.data import leave_one_out
from userlens.data.interactions import Interactions
from userlens.models import create
from userlens.models.nn import augment, losses
from userlens.models.nn.contrastive import ICLRec, ICSRec, keep_per_row, mean_states
from userlens.models.nn.intents import kmeans, nearest
from userlens.models.nn.sequential import SASRec
from userlens.models.sequential_config import ICLRecConfig, ICSRecConfig, SASRecConfig

ICS_TINY = {**TINY, "positions": "from_start", "n_intents": 4}


class TestICSRec(ModelContract):
    sequential = True

    def make(self):
        return ICSRec(ICSRecConfig(**ICS_TINY))


class TestICLRec(ModelContract):
    sequential = True

    def make(self):
        return ICLRec(ICLRecConfig(**TINY, n_intents=4, similarity="cos"))


def _info_nce_by_hand(first, second, temperature, labels, similarity):
    """NT-Xent written out anchor by anchor, from the formula."""
    z = torch.cat([first, second]).double()
    if similarity == "cos":
        z = z / z.norm(dim=1, keepdim=True)
    n = len(first)
    both = None if labels is None else torch.cat([labels, labels])
    total = 0.0
    for a in range(2 * n):
        positive = (a + n) % (2 * n)
        terms = [float(z[a] @ z[positive]) / temperature]
        for b in range(2 * n):
            if both is None:
                if b not in (a, positive):
                    terms.append(float(z[a] @ z[b]) / temperature)
            elif both[b] != both[a]:
                terms.append(float(z[a] @ z[b]) / temperature)
        terms = np.array(terms)
        total += -terms[0] + np.log(np.exp(terms).sum())
    return total / (2 * n)


@pytest.mark.parametrize("labels", [None, [0, 1, 0, 2, 1]])
@pytest.mark.parametrize("similarity, temperature", [("dot", 1.0), ("cos", 0.5)])
def test_info_nce_matches_its_formula_by_hand(labels, similarity, temperature):
    generator = torch.Generator().manual_seed(0)
    first = torch.randn(5, 3, generator=generator)
    second = torch.randn(5, 3, generator=generator)
    label_t = None if labels is None else torch.tensor(labels)
    got = losses.info_nce(first, second, temperature, label_t, similarity)
    assert float(got) == pytest.approx(
        _info_nce_by_hand(first, second, temperature, label_t, similarity), rel=1e-5)


def test_info_nce_two_pairs_known_value():
    # two orthogonal unit pairs, dot similarity: each anchor sees its positive (1) and two
    # negatives (0): loss = -1 + log(e + 2)
    first = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    got = losses.info_nce(first, first.clone())
    assert float(got) == pytest.approx(-1 + np.log(np.e + 2))
    # the same with a shared label masks every negative: loss = -1 + log(e) = 0
    assert float(losses.info_nce(first, first.clone(), labels=torch.tensor([3, 3]))) == \
        pytest.approx(0.0, abs=1e-6)


def test_augmentations_keep_length_rules_and_items():
    rng = np.random.default_rng(0)
    tokens = np.arange(1, 11)
    for _ in range(50):
        cropped = augment.crop(tokens, 0.6, rng)
        assert len(cropped) == 6 and np.all(np.diff(cropped) == 1)  # contiguous segment
        masked = augment.mask(tokens, 0.3, 99, rng)
        assert (masked == 99).sum() == 3 and np.all((masked == tokens) | (masked == 99))
        reordered = augment.reorder(tokens, 0.5, rng)
        assert sorted(reordered) == list(tokens)
        changed = np.flatnonzero(reordered != tokens)
        assert len(changed) == 0 or changed.max() - changed.min() < 5  # one window of 5
    assert len(augment.crop(np.array([7]), 0.2, rng)) == 1


def test_cross_subsequences_pair_prefixes_followed_by_the_same_item():
    sequences = [np.array([1, 2, 3, 4]), np.array([5, 3, 6]), np.array([2, 3]),
                 np.array([9, 8])]
    index = augment.CrossSubsequences(sequences)
    # prefixes followed by 3: [1, 2] (seq 0, length 2), [5] (seq 1, 1), [2] (seq 2, 1)
    rng = np.random.default_rng(0)
    for _ in range(30):
        seq, end = index.partners(np.array([0, 3]), np.array([2, 1]), rng)
        partner = sequences[seq[0]][:end[0]]
        assert sequences[seq[0]][end[0]] == 3  # the target itself is not in the prefix
        assert (seq[0], end[0]) != (0, 2)  # never the prefix itself
        assert (seq[1], end[1]) == (3, 1)  # [9] -> 8 has no other prefix: itself
        assert len(partner) >= 1
    drawn = set()
    for _ in range(60):
        seq, end = index.partners(np.array([0]), np.array([2]), rng)
        drawn.add((int(seq[0]), int(end[0])))
    assert drawn == {(1, 1), (2, 1)}
    assert index.sequence_index(np.array([2, 3])) == 2


def test_keep_per_row_caps_each_row():
    rows = np.array([0, 0, 0, 0, 1, 1, 2])
    keep = keep_per_row(rows, 2, np.random.default_rng(0))
    assert np.bincount(rows[keep]).tolist() == [2, 2, 1]


def test_kmeans_finds_planted_intents():
    rng = np.random.default_rng(0)
    centres = np.array([[5.0, 0.0], [0.0, 5.0], [-5.0, -5.0]], np.float32)
    labels = rng.integers(3, size=600)
    points = centres[labels] + rng.normal(0, 0.3, (600, 2)).astype(np.float32)
    found = kmeans(points, 3, seed=0)
    assigned = nearest(torch.from_numpy(points), torch.from_numpy(found)).numpy()
    # every planted intent maps to one found intent and back
    pairs = set(zip(labels.tolist(), assigned.tolist(), strict=True))
    assert len(pairs) == 3


def test_prefix_representations_equal_the_prefixes_own_last_states():
    events = cycle_walks(n_users=10, length=6)
    model = ICSRec(ICSRecConfig(**{**ICS_TINY, "max_epochs": 2})).fit(events, seed=0)
    sequences = [events.histories().sequence(u).astype(np.int64) + 1 for u in range(10)]
    reps = model.prefix_representations(sequences)
    assert reps.shape == (10 * 5, 16)
    histories = events.histories()
    # user 0's prefix of length 3, scored alone, is its third representation
    one = Interactions.from_arrays(np.zeros(3, int), histories.sequence(0)[:3],
                                   n_items=events.n_items)
    alone = model.user_embeddings(one.histories())[0]
    np.testing.assert_allclose(reps[2], alone, rtol=1e-4, atol=1e-5)


def test_contrastive_losses_change_training_and_zero_weights_are_sasrec():
    events = cycle_walks(n_users=20, length=8)
    split = leave_one_out(events, validation=False)
    base = {**ICS_TINY, "max_epochs": 3}
    plain = create("sasrec", {**TINY, "positions": "from_start", "max_epochs": 3}).fit(
        split.train, seed=0)
    zero = create("icsrec", {**base, "coarse_weight": 0, "fine_weight": 0}).fit(
        split.train, seed=0)
    full = create("icsrec", base).fit(split.train, seed=0)
    histories = split.train.histories()
    np.testing.assert_allclose(zero.user_embeddings(histories),
                               plain.user_embeddings(histories), rtol=1e-5, atol=1e-6)
    assert not np.allclose(full.user_embeddings(histories), plain.user_embeddings(histories))


def _same_minus_different_target_similarity(model, events):
    sequences = [events.histories().sequence(u).astype(np.int64) + 1
                 for u in range(events.n_users)]
    reps = F.normalize(torch.from_numpy(model.prefix_representations(sequences)), dim=1)
    targets = torch.from_numpy(np.concatenate([s[1:] for s in sequences]))
    similarity = reps @ reps.T
    same = (targets[:, None] == targets[None, :]) & ~torch.eye(len(targets), dtype=bool)
    return float(similarity[same].mean() - similarity[targets[:, None] != targets].mean())


def test_coarse_contrast_alone_pulls_same_target_prefixes_together():
    # three groups of users, each drawing from its own pool of 8 items in random order: the
    # next item is unpredictable, but its pool is not. Trained on the coarse loss only (no
    # next-item loss), prefixes followed by the same item end up far closer than prefixes
    # followed by other items; untrained, they are hardly closer
    rng = np.random.default_rng(0)
    users, items = [], []
    for user in range(60):
        users += [user] * 6
        items += list((user % 3) * 8 + rng.permutation(8)[:6])
    events = Interactions.from_arrays(np.array(users), np.array(items), n_items=24)
    config = {**ICS_TINY, "rec_weight": 0.0, "fine_weight": 0.0, "coarse_weight": 1.0,
              "similarity": "cos", "temperature": 0.2}
    untrained = ICSRec(ICSRecConfig(**{**config, "coarse_weight": 0.0, "max_epochs": 1,
                                       "learning_rate": 1e-9})).fit(events, seed=0)
    trained = ICSRec(ICSRecConfig(**{**config, "max_epochs": 20})).fit(events, seed=0)
    assert _same_minus_different_target_similarity(untrained, events) < 0.3
    assert _same_minus_different_target_similarity(trained, events) > 0.7


def test_icsrec_requires_positions_from_start():
    with pytest.raises(ValueError, match="from_start"):
        ICSRecConfig(positions="from_end")


def test_iclrec_views_never_hold_the_item_to_predict():
    events = cycle_walks(n_users=12, length=8, n_items=20)
    model = ICLRec(ICLRecConfig(**{**TINY, "max_epochs": 1, "n_intents": 4})).fit(
        events, seed=0)
    rng_inputs = [np.arange(1, 9) + 10 * k for k in range(2)]  # distinct tokens
    for _ in range(100):
        for source, view in zip(rng_inputs, model.views(rng_inputs), strict=True):
            target = source[-1] + 1  # the item after the input
            assert target not in view
            real = view[view != model.mask_token]
            assert set(real.tolist()) <= set(source.tolist()) and len(view) >= 1


def test_mean_states_skip_padding():
    hidden = torch.arange(12, dtype=torch.float32).view(2, 3, 2)
    tokens = torch.tensor([[4, 5, 0], [1, 2, 3]])
    expected = torch.stack([hidden[0, :2].mean(0), hidden[1].mean(0)])
    torch.testing.assert_close(mean_states(hidden, tokens), expected)


class _SASRecWithMaskToken(SASRec):
    _n_special = 1  # the same embedding table as ICLRec's, so the same initial weights


def test_iclrec_losses_change_training_and_zero_weights_are_sasrec():
    events = cycle_walks(n_users=20, length=8)
    base = {**TINY, "max_epochs": 3, "n_intents": 4}
    plain = _SASRecWithMaskToken(SASRecConfig(**{**TINY, "max_epochs": 3})).fit(events, seed=0)
    zero = create("iclrec", {**base, "instance_weight": 0, "intent_weight": 0}).fit(
        events, seed=0)
    full = create("iclrec", base).fit(events, seed=0)
    histories = events.histories()
    np.testing.assert_allclose(zero.score(histories), plain.score(histories), rtol=1e-4,
                               atol=1e-5)
    assert not np.allclose(full.score(histories), plain.score(histories))
