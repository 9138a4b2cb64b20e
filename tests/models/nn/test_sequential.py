import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.models.contract import ModelContract, cycle_walks
from userlens.data import leave_one_out
from userlens.data.interactions import Histories, Interactions
from userlens.evaluation import evaluate
from userlens.models import create
from userlens.models.base import top_k
from userlens.models.nn import losses
from userlens.models.nn.modules import TransformerSequenceEncoder
from userlens.models.nn.sequential import BERT4Rec, GRU4Rec, SASRec, target_ranks
from userlens.models.sequential_config import BERT4RecConfig, GRU4RecConfig, SASRecConfig

TINY = dict(dim=16, max_len=8, batch_size=8, max_epochs=60, dropout=0.0, learning_rate=0.02,
            threads=1)


# the cloze task on tiny data needs more, slower steps and forced last-item masking
BERT_TINY = {**TINY, "max_epochs": 300, "learning_rate": 0.005, "init_std": 0.1, "n_heads": 2,
             "last_item_mask_share": 0.2}


class TestSASRec(ModelContract):
    sequential = True

    def make(self):
        return SASRec(SASRecConfig(**TINY))


class TestSASRecGBCE(ModelContract):
    sequential = True

    def make(self):
        return SASRec(SASRecConfig(**TINY, loss="gbce", n_negatives=4))


class TestBERT4Rec(ModelContract):
    sequential = True

    def make(self):
        return BERT4Rec(BERT4RecConfig(**BERT_TINY))


class TestGRU4Rec(ModelContract):
    sequential = True

    def make(self):
        return GRU4Rec(GRU4RecConfig(**TINY))


def cycles(n_users=40, n_items=9, length=12, seed=0):
    return cycle_walks(n_users, n_items, length, seed)


@pytest.mark.parametrize("name, params", [
    ("sasrec", {"loss": "ce"}),
    ("sasrec", {"loss": "bce", "n_negatives": 1}),
    ("sasrec", {"loss": "sampled_softmax", "n_negatives": 4, "negative_sampler": "popularity"}),
    ("sasrec", {"loss": "gbce", "n_negatives": 4}),
    ("sasrec", {"positions": "from_start", "attention_init": "xavier"}),
    ("sasrec", {"batching": "random"}),
    ("sasrec", {"loss_mean": "batch"}),
    ("sasrec", {"pad_logit": True, "norm_eps": 1e-8}),
    ("gru4rec", {}),
    ("bert4rec", BERT_TINY),
    ("bert4rec", {**BERT_TINY, "layout": "post_norm"}),
])
def test_learns_a_deterministic_next_item(name, params):
    events = cycles()
    split = leave_one_out(events, validation=False)
    model = create(name, {**TINY, **params}).fit(split.train, seed=0)
    # next items repeat within a cycle, so do not exclude seen items here
    histories = split.train.histories(split.test.user_idx)
    items, _ = model.recommend(histories, k=1, exclude=False)
    assert (items[:, 0] == split.test.item_idx).mean() >= 0.95


def test_causal_mask_holds():
    torch.manual_seed(0)
    encoder = TransformerSequenceEncoder(20, 16, 2, 2, 10, 0.0, causal=True).eval()
    tokens = torch.tensor([[3, 5, 7, 9, 11, 0, 0]])
    changed = tokens.clone()
    changed[0, 3] = 2  # change the 4th event
    out, out_changed = encoder(tokens), encoder(changed)
    # positions count from the end, so compare with the same length; earlier outputs agree
    torch.testing.assert_close(out[0, :3], out_changed[0, :3])
    assert not torch.allclose(out[0, 3], out_changed[0, 3])


def test_positions_from_start_make_appending_leave_the_past_alone():
    torch.manual_seed(0)
    encoder = TransformerSequenceEncoder(20, 16, 2, 1, 10, 0.0, causal=True, layout="sasrec",
                                         positions="from_start", attention_init="xavier").eval()
    tokens = torch.tensor([[3, 5, 7, 0, 0]])
    appended = torch.tensor([[3, 5, 7, 9, 11]])
    # counted from the start, positions do not move when events are appended
    torch.testing.assert_close(encoder(tokens)[0, :3], encoder(appended)[0, :3])
    qkv = encoder.blocks[0].qkv.weight
    bound = (6 / (qkv.shape[0] + qkv.shape[1])) ** 0.5
    assert qkv.abs().max() <= bound and qkv.std() > 0.5 * bound / 3 ** 0.5


def test_post_norm_block_matches_torch_transformer_encoder_layer():
    torch.manual_seed(0)
    encoder = TransformerSequenceEncoder(20, 16, 1, 2, 10, 0.0, causal=False, ff_mult=4,
                                         layout="post_norm").eval()
    block = encoder.blocks[0]
    reference = torch.nn.TransformerEncoderLayer(16, 2, 64, dropout=0.0, activation="gelu",
                                                 batch_first=True, norm_first=False).eval()
    with torch.no_grad():
        reference.self_attn.in_proj_weight.copy_(block.qkv.weight)
        reference.self_attn.in_proj_bias.copy_(torch.randn(48))
        block.qkv.bias.copy_(reference.self_attn.in_proj_bias)
        reference.self_attn.out_proj.weight.copy_(block.attention_out.weight)
        reference.self_attn.out_proj.bias.copy_(block.attention_out.bias)
        reference.linear1.weight.copy_(block.ff_in.weight)
        reference.linear1.bias.copy_(block.ff_in.bias)
        reference.linear2.weight.copy_(block.ff_out.weight)
        reference.linear2.bias.copy_(block.ff_out.bias)
        for ours, theirs in ((block.attention_norm, reference.norm1),
                             (block.ff_norm, reference.norm2)):
            ours.weight.copy_(torch.rand(16) + 0.5)
            ours.bias.copy_(torch.randn(16))
            theirs.weight.copy_(ours.weight)
            theirs.bias.copy_(ours.bias)
    x = torch.randn(3, 7, 16)
    no_mask = torch.zeros(1, 1, 7, 7)
    torch.testing.assert_close(block(x, no_mask), reference(x))
    # the encoder normalises its embeddings and returns the last block's output as it is
    tokens = torch.tensor([[3, 5, 7, 9]])
    embedded = encoder.embedding_norm(encoder.item_embedding(tokens)
                                  + encoder.position_embedding(encoder.positions(tokens, 10)))
    torch.testing.assert_close(encoder(tokens), block(embedded, encoder.attention_bias(tokens)))


def test_bidirectional_encoder_sees_the_future():
    torch.manual_seed(0)
    encoder = TransformerSequenceEncoder(20, 16, 1, 1, 10, 0.0, causal=False).eval()
    tokens = torch.tensor([[3, 5, 7, 0]])
    changed = torch.tensor([[3, 5, 8, 0]])
    assert not torch.allclose(encoder(tokens)[0, 0], encoder(changed)[0, 0])


def test_bert4rec_masking_never_exposes_the_target():
    model = BERT4Rec(BERT4RecConfig(**TINY, mask_prob=0.3, last_item_mask_share=0.2))
    model.n_items_ = 50
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, 51, (64, 12))
    tokens[::3, 9:] = 0  # some padding
    inputs, mask = model.cloze(tokens, generator)
    assert torch.all(inputs[mask] == model.mask_token)
    assert torch.all(mask.any(dim=1))
    assert not torch.any(mask & (tokens == 0))
    assert torch.equal(inputs[~mask], tokens[~mask])


def test_sampled_softmax_over_all_items_equals_full_cross_entropy():
    torch.manual_seed(0)
    hidden, weights = torch.randn(30, 8), torch.randn(12, 8)
    targets = torch.randint(0, 12, (30,))
    all_items = torch.arange(12)
    full = F.cross_entropy(hidden @ weights.T, targets)
    sampled = losses.sampled_softmax(hidden, targets, weights, all_items)
    torch.testing.assert_close(sampled, full)
    # uniform log-Q correction shifts every logit equally: still the same
    corrected = losses.sampled_softmax(hidden, targets, weights, all_items,
                                       losses.uniform_log_q(12))
    torch.testing.assert_close(corrected, full)


def test_chunked_cross_entropy_matches_torch_values_and_gradients():
    torch.manual_seed(0)
    hidden = torch.randn(37, 8, requires_grad=True)
    weights = torch.randn(15, 8, requires_grad=True)
    targets = torch.randint(0, 15, (37,))
    ours = losses.full_cross_entropy(hidden, targets, weights, chunk=5)
    ours.backward()
    grads = hidden.grad.clone(), weights.grad.clone()
    hidden.grad, weights.grad = None, None
    reference = F.cross_entropy(hidden @ weights.T, targets)
    reference.backward()
    torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(grads[0], hidden.grad)
    torch.testing.assert_close(grads[1], weights.grad)


def test_chunked_cross_entropy_is_float32_under_bfloat16_autocast():
    # mixed precision keeps the loss in float32: inside autocast the chunked loss and its
    # gradients equal the float32 ones (were its forward's logits bfloat16, the backward's
    # float32 softmax would not match the forward's normaliser)
    torch.manual_seed(0)
    hidden = (torch.randn(300, 64) * 2).requires_grad_()
    weights = torch.randn(5000, 64, requires_grad=True)
    targets = torch.randint(0, 5000, (300,))
    results = []
    for amp in (False, True):
        hidden.grad, weights.grad = None, None
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = losses.full_cross_entropy(hidden, targets, weights)
        loss.backward()
        results.append((loss.detach(), hidden.grad.clone(), weights.grad.clone()))
    for exact, mixed in zip(*results, strict=True):
        assert mixed.dtype == torch.float32
        torch.testing.assert_close(mixed, exact)


def test_gbce_matches_its_formula_by_hand():
    hidden = torch.tensor([[1.0, 0.0]])
    weights = torch.tensor([[2.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    targets = torch.tensor([0])
    negatives = torch.tensor([[1, 2]])
    n_items, t = 3, 0.5
    alpha = 2 / (n_items - 1)  # = 1: every other item sampled
    beta = alpha * (t * (1 - 1 / alpha) + 1 / alpha)
    sigmoid = lambda s: 1 / (1 + np.exp(-s))  # noqa: E731
    expected = -(beta * np.log(sigmoid(2.0)) + np.log(1 - sigmoid(0.0))
                 + np.log(1 - sigmoid(-1.0)))
    value = losses.gbce(hidden, targets, weights, negatives, t, n_items)
    assert float(value) == pytest.approx(expected, rel=1e-6)
    assert losses.gbce_beta(256, 3417, 0.75) == pytest.approx(
        (256 / 3416) * (0.75 * (1 - 3416 / 256) + 3416 / 256))
    # t = 0 is plain BCE
    bce = losses.binary_cross_entropy(hidden, targets, weights, negatives)
    gbce_zero = losses.gbce(hidden, targets, weights, negatives, 0.0, n_items)
    assert float(gbce_zero) == pytest.approx(float(bce))


def test_history_longer_than_max_len_and_appended_events():
    events = cycles(length=30)
    model = SASRec(SASRecConfig(**TINY)).fit(events, seed=0)
    long = Histories.from_lists([list(range(9)) * 4], n_items=9)  # 36 > max_len = 8
    items, _ = model.recommend(long, k=1, exclude=False)
    assert items[0, 0] == 0  # ... 7 -> 8 -> next is 0
    appended = Histories.from_lists([list(range(9)) * 4 + [0, 1]], n_items=9)
    items, _ = model.recommend(appended, k=1, exclude=False)
    assert items[0, 0] == 2


def test_early_stopping_restores_the_best_epoch():
    events = cycles(length=9)  # no repeats: every validation item is rankable
    split = leave_one_out(events)
    model = SASRec(SASRecConfig(**{**TINY, "max_epochs": 40}, patience=3)).fit(
        split.train, valid=split.valid)
    history = model.training_
    best = max(e.get("valid_ndcg@10", -1) for e in history["epochs"])
    assert history["best_valid_ndcg@10"] == pytest.approx(best)
    # the restored weights reproduce the best validation score
    result = evaluate(model, split, ["ndcg@10"], stage="valid")
    assert result.means()["ndcg@10"] == pytest.approx(best, abs=1e-6)


def test_validation_curve_leaves_out_repeated_targets_as_evaluation_does():
    # 30 users walk 9 steps of the 9-item cycle (the validation item is new to them), 10
    # walk 12 (it is already in their history, so evaluation drops it as a repeat)
    rng = np.random.default_rng(0)
    users, items = [], []
    for user in range(40):
        length, start = (9 if user < 30 else 12), rng.integers(9)
        users += [user] * length
        items += [(start + step) % 9 for step in range(length)]
    split = leave_one_out(Interactions.from_arrays(np.array(users), np.array(items), n_items=9))
    model = SASRec(SASRecConfig(**{**TINY, "max_epochs": 15}, patience=3)).fit(
        split.train, valid=split.valid)
    result = evaluate(model, split, ["ndcg@10"], stage="valid")
    assert result.info["targets_removed_as_repeats"] == 10
    # the same number in both places: the 10 are not averaged in as misses
    assert model.training_["best_valid_ndcg@10"] == pytest.approx(
        result.means()["ndcg@10"], abs=1e-6)
    assert model.training_["best_valid_ndcg@10"] > 0.8


def test_target_ranks_are_the_positions_top_k_gives_ties_included():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(64, 30)).astype(np.float32)  # many ties
    scores[rng.random(scores.shape) < 0.2] = -np.inf  # seen items, also tied
    targets = rng.integers(0, 30, size=64)
    ranking, _ = top_k(scores, 30)
    expected = (ranking == targets[:, None]).argmax(axis=1)
    for k in (30, 10, 1):  # ranks from k on read as k
        got = target_ranks(torch.from_numpy(scores), torch.from_numpy(targets), k)
        np.testing.assert_array_equal(got.numpy(), np.minimum(expected, k))
    assert len(set(expected.tolist())) > 10  # the targets land all over the rankings


@pytest.mark.slow
def test_ml100k_short_run_beats_popularity(shared_data):
    from userlens.data import read

    data = read(shared_data / "ml-100k" / "ml-100k.inter", "recbole")
    split = leave_one_out(data.interactions)
    popular = evaluate(create("most_popular").fit(split.train), split, ["ndcg@10"])
    model = create("sasrec", {"max_epochs": 30, "max_len": 50, "dim": 32, "batch_size": 64,
                              "learning_rate": 3e-3}).fit(split.train, valid=split.valid)
    sasrec = evaluate(model, split, ["ndcg@10"])
    assert sasrec.means()["ndcg@10"] > 1.3 * popular.means()["ndcg@10"]


def test_negative_logits_paths_agree():
    torch.manual_seed(0)
    hidden, weights = torch.randn(20, 8), torch.randn(50, 8)
    few = torch.randint(0, 50, (20, 2))     # gather path (50 > 16 * 2)
    many = torch.randint(0, 50, (20, 4))    # full-matmul path (50 <= 16 * 4)
    for negatives in (few, many):
        expected = torch.stack([weights[negatives[t]] @ hidden[t] for t in range(20)])
        torch.testing.assert_close(losses.negative_logits(hidden, weights, negatives), expected)


@pytest.mark.parametrize("loss, n_negatives, t", [("bce", 1, 0.0), ("bce", 64, 0.0),
                                                  ("gbce", 256, 0.75), ("gbce", 16, 0.2)])
def test_initial_logit_bias_is_where_the_loss_is_flat(loss, n_negatives, t):
    # every score 0: the loss as a function of the global offset alone has its minimum there
    n_items = 500
    hidden, weights = torch.zeros(6, 4), torch.randn(n_items, 4)
    targets = torch.arange(6)
    negatives = torch.randint(6, n_items, (6, n_negatives))  # no accidental hits
    start = losses.initial_logit_bias(loss, n_negatives, n_items, t)
    bias = torch.tensor(start, requires_grad=True)
    if loss == "bce":
        value = losses.binary_cross_entropy(hidden, targets, weights, negatives, bias)
    else:
        value = losses.gbce(hidden, targets, weights, negatives, t, n_items, bias)
    (grad,) = torch.autograd.grad(value, bias)
    assert abs(float(grad)) < 1e-5
    if loss == "bce" and n_negatives == 1:
        assert start == 0.0  # SASRec's original setting is unchanged at the start


def test_logit_bias_is_trained_saved_and_never_changes_a_ranking(tmp_path):
    events = cycles()
    model = SASRec(SASRecConfig(**TINY, loss="gbce", n_negatives=4)).fit(events, seed=0)
    start = losses.initial_logit_bias("gbce", 4, 9, 0.75)
    assert model.module_.logit_bias.item() != pytest.approx(start)  # it was trained
    model.save(tmp_path / "m")
    loaded = type(model).load(tmp_path / "m")
    assert loaded.module_.logit_bias.item() == model.module_.logit_bias.item()
    # scores are h·w: the offset is a training device, the same for every item
    histories = events.histories()
    np.testing.assert_allclose(model.score(histories), loaded.score(histories))
    ce = SASRec(SASRecConfig(**TINY)).fit(events, seed=0)
    assert not hasattr(ce.module_, "logit_bias")


@pytest.mark.slow
def test_ml100k_gsasrec_with_256_negatives_beats_popularity(shared_data):
    # gBCE with 256 negatives collapsed to popularity before the global logit offset
    # (validation NDCG@10 0.036 after 40 epochs); with it, it learns like CE.
    from userlens.data import read

    data = read(shared_data / "ml-100k" / "ml-100k.inter", "recbole")
    split = leave_one_out(data.interactions)
    popular = evaluate(create("most_popular").fit(split.train), split, ["ndcg@10"])
    model = create("sasrec", {"loss": "gbce", "n_negatives": 256, "max_epochs": 20,
                              "max_len": 50, "dim": 32, "batch_size": 64,
                              "learning_rate": 3e-3}).fit(split.train, valid=split.valid)
    gsasrec = evaluate(model, split, ["ndcg@10"])
    assert gsasrec.means()["ndcg@10"] > 1.5 * popular.means()["ndcg@10"]


def test_batches_cover_every_sequence_once_per_epoch():
    from userlens.models.nn.trainer import length_batches, random_batches

    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 200, size=1000)
    for batches in (length_batches(lengths, 128, rng), random_batches(1000, 128, rng)):
        assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
        assert max(len(b) for b in batches) == 128
    # similar lengths share a batch in one mode, not in the other
    spread = [np.ptp(lengths[b]) for b in length_batches(lengths, 128, rng)[:-1]]
    mixed = [np.ptp(lengths[b]) for b in random_batches(1000, 128, rng)[:-1]]
    assert max(spread) < 40 < min(mixed)


@pytest.mark.parametrize("loss_mean", ["batch", "global"])
def test_global_loss_mean_weighs_every_position_the_same(loss_mean):
    events = cycle_walks(40, 9, 12, 0)
    model = create("sasrec", {**TINY, "max_epochs": 1, "loss_mean": loss_mean}).fit(events)
    assert model.targets_per_batch_ == pytest.approx(TINY["batch_size"] * TINY["max_len"])
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    hidden = torch.randn(40, TINY["dim"])
    targets = torch.randint(0, events.n_items, (40,))
    per_position = F.cross_entropy(hidden @ model.module_.item_weights().detach().T, targets,
                                   reduction="none")
    short, long = slice(0, 4), slice(4, 40)  # a batch of few targets and one of many
    total = sum(model._loss(hidden[part], targets[part], generator).detach()
                for part in (short, long))
    if loss_mean == "global":  # the two batches add up to a sum with one weight per position
        assert float(total) == pytest.approx(float(per_position.sum()) / model.targets_per_batch_,
                                             rel=1e-5)
    else:  # each batch averages its own positions: the 4 short ones weigh 9x more
        assert float(total) == pytest.approx(float(per_position[short].mean()
                                                   + per_position[long].mean()), rel=1e-5)


def test_pad_logit_adds_one_zero_logit_class_to_the_softmax():
    """K&V's port: the padding row of the embedding table is one more class, logit 0."""
    events = cycle_walks(40, 9, 12, 0)
    model = create("sasrec", {**TINY, "max_epochs": 1, "pad_logit": True,
                              "loss_mean": "batch"}).fit(events)
    torch.manual_seed(0)
    hidden = torch.randn(40, TINY["dim"])
    targets = torch.randint(0, events.n_items, (40,))
    logits = hidden @ model.module_.item_weights().detach().T  # (T, n_items)
    with_pad = torch.cat([logits, torch.zeros(40, 1)], dim=1)
    loss = model._loss(hidden, targets, torch.Generator().manual_seed(0)).detach()
    torch.testing.assert_close(loss, F.cross_entropy(with_pad, targets))
    assert float(loss) > float(F.cross_entropy(logits, targets))  # the extra class costs
    with pytest.raises(ValueError, match="pad_logit applies to loss"):
        SASRecConfig(loss="bce", pad_logit=True)


def test_norm_eps_reaches_every_layer_norm():
    module = SASRec(SASRecConfig(**TINY, norm_eps=1e-8))._build_module(7)
    norms = [m for m in module.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 2 * 2 + 1  # two per block (two blocks by default) and the final
    assert {m.eps for m in norms} == {1e-8}
    default = SASRec(SASRecConfig(**TINY))._build_module(7)
    assert {m.eps for m in default.modules() if isinstance(m, torch.nn.LayerNorm)} == {1e-5}


@pytest.mark.parametrize("loss", ["ce", "sampled_softmax", "bce", "gbce"])
def test_weighted_losses_are_the_mean_of_weighted_positions(loss):
    """Each position's loss times its weight, averaged over positions; weight 1 changes
    nothing and the chunked cross-entropy's gradient is the reference one."""
    torch.manual_seed(0)
    hidden = torch.randn(23, 8, requires_grad=True)
    weights = torch.randn(15, 8, requires_grad=True)
    targets = torch.randint(0, 15, (23,))
    sample_weight = torch.rand(23)
    negatives = torch.randint(0, 15, (23, 4))

    def value(h, w):
        if loss == "ce":
            return losses.full_cross_entropy(hidden, targets, weights, chunk=5, sample_weight=w)
        if loss == "sampled_softmax":
            return losses.sampled_softmax(hidden, targets, weights, torch.arange(15),
                                          sample_weight=w)
        if loss == "bce":
            return losses.binary_cross_entropy(hidden, targets, weights, negatives,
                                               sample_weight=w)
        return losses.gbce(hidden, targets, weights, negatives, 0.75, 15, sample_weight=w)

    per_position = torch.stack([value(hidden, torch.eye(23)[t]) * 23 for t in range(23)])
    weighted = value(hidden, sample_weight)
    torch.testing.assert_close(weighted, (per_position * sample_weight).mean())
    torch.testing.assert_close(value(hidden, torch.ones(23)), value(hidden, None))
    if loss == "ce":
        weighted.backward()
        grads = hidden.grad.clone(), weights.grad.clone()
        hidden.grad, weights.grad = None, None
        reference = (F.cross_entropy(hidden @ weights.T, targets, reduction="none")
                     * sample_weight).mean()
        reference.backward()
        torch.testing.assert_close(grads[0], hidden.grad)
        torch.testing.assert_close(grads[1], weights.grad)


@pytest.mark.parametrize("name", ["sasrec", "gru4rec"])
def test_a_user_weighted_zero_teaches_the_model_nothing(name):
    """150 fake users hold 3 -> 9 (item 9 is nowhere else; real users walk a cycle, 3 -> 4):
    unweighted, the model follows them after 3; with their weight 0 item 9 falls out."""
    real = cycle_walks(40, 9, 12, seed=0)
    n_fake = 150
    events = Interactions.from_arrays(np.r_[real.user_idx, np.repeat(np.arange(40, 40 + n_fake),
                                                                      2)],
                                      np.r_[real.item_idx, np.tile([3, 9], n_fake)], n_items=10)
    history = Histories.from_lists([[3]], n_items=10)
    config = TINY
    plain = create(name, config).fit(events, seed=0)
    weighted = create(name, config)
    weighted.set_user_weights(np.r_[np.ones(40), np.zeros(n_fake)])
    weighted.fit(events, seed=0)
    assert plain.recommend(history, k=1, exclude=False)[0][0, 0] == 9
    top = weighted.recommend(history, k=10, exclude=False)[0][0].tolist()
    assert top.index(9) >= 5
