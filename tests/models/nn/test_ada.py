"""Ada-Retrieval: the contract over both backbones, the round-by-round list, the filter, and
the first stage being exactly the backbone trained alone."""

import numpy as np
import pytest
import torch

from tests.models.contract import ModelContract, cycle_walks
from tests.models.nn.test_sequential import TINY
from userlens.data.interactions import Interactions
from userlens.models import create
from userlens.models.nn.ada import AdaRetrieval, LowPassFilter
from userlens.models.sequential_config import AdaRetrievalConfig

ADA_TINY = {**TINY, "rounds": 2, "round_size": 3, "adapt_max_epochs": 15}
# the contract's next-item task repeats items (its answer is always in the history): the
# rounds may then select the user's own items, as with the repeats-included protocol
CONTRACT = {**ADA_TINY, "valid_repeats": "include"}


class TestAdaRetrievalSASRec(ModelContract):
    sequential = True

    def make(self):
        return AdaRetrieval(AdaRetrievalConfig(**CONTRACT))


class TestAdaRetrievalGRU4Rec(ModelContract):
    sequential = True

    def make(self):
        return AdaRetrieval(AdaRetrievalConfig(**{**CONTRACT, "backbone": "gru4rec"}))


def _random_walks(n_users: int = 60, n_items: int = 30, length: int = 10,
                  seed: int = 0) -> Interactions:
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users), length)
    items = np.concatenate([rng.choice(n_items, length, replace=False)
                            for _ in range(n_users)])
    return Interactions.from_arrays(users, items, n_items=n_items)


@pytest.fixture(scope="module")
def walks_model() -> tuple[AdaRetrieval, Interactions]:
    events = _random_walks()
    model = create("ada_retrieval", {**TINY, "rounds": 3, "round_size": 4,
                                     "max_epochs": 5, "adapt_max_epochs": 3})
    return model.fit(events, seed=0), events


def test_the_list_is_rounds_of_new_unseen_items_and_round_zero_is_the_backbone(walks_model):
    model, events = walks_model
    histories = events.histories()
    lists = model.round_lists(histories)  # (B, 12)
    assert lists.shape == (len(histories), 12)
    for row in range(len(histories)):
        assert len(set(lists[row])) == 12  # no item twice
        assert not set(lists[row]) & set(histories.sequence(row))  # nothing the user had
    model.adapting_ = False  # the backbone alone: round 0 is its top round_size
    backbone = model._device_scores(histories).cpu().numpy()
    model.adapting_ = True
    backbone[np.repeat(np.arange(len(histories)), histories.lengths()),
             histories.item_idx] = -np.inf
    top = np.argsort(-backbone, axis=1, kind="stable")[:, :4]
    np.testing.assert_array_equal(np.sort(lists[:, :4], axis=1), np.sort(top, axis=1))
    # later rounds are not the backbone's next items: the adapters moved the user vector
    assert np.mean([set(lists[r, 4:8]) != set(np.argsort(-backbone[r])[4:8])
                    for r in range(len(histories))]) > 0.5


def test_scores_keep_the_list_order_above_everything_else():
    model = AdaRetrieval(AdaRetrievalConfig(**ADA_TINY))
    logits = torch.tensor([[0.5, 2.0, 1.0, -1.0, 3.0]])
    scores = model._list_scores(logits, [torch.tensor([[2]]), torch.tensor([[0]])])
    # item 2 (round 0), item 0 (round 1), then the unlisted by the last round's logits
    assert torch.argsort(scores[0], descending=True).tolist() == [2, 0, 4, 1, 3]


def test_the_low_pass_filter_with_unit_weights_is_dense_plus_residual_norm():
    torch.manual_seed(0)
    layer = LowPassFilter(length=6, dim=4, dropout=0.0).eval()
    with torch.no_grad():
        layer.weight.zero_()
        layer.weight[..., 0] = 1.0  # every frequency passes unchanged: the filter is identity
    x = torch.randn(2, 6, 4)
    expected = torch.nn.functional.layer_norm(layer.dense(x) + x, (4,), eps=1e-12)
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        layer.weight.zero_()  # nothing passes: only the dense layer's bias is added
    expected = torch.nn.functional.layer_norm(layer.dense.bias + x, (4,), eps=1e-12)
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backbone, name", [("sasrec", "sasrec"), ("gru4rec", "gru4rec")])
def test_the_first_stage_is_the_backbone_trained_alone(backbone, name):
    events = cycle_walks()
    valid_free = {**TINY, "max_epochs": 8}
    alone = create(name, valid_free).fit(events, seed=3)
    ada = create("ada_retrieval", {**valid_free, "backbone": backbone, "rounds": 2,
                                   "round_size": 3, "adapt_max_epochs": 1}).fit(events, seed=3)
    first = [epoch["loss"] for epoch in ada.training_log()["backbone"]["epochs"]]
    assert first == [epoch["loss"] for epoch in alone.training_log()["epochs"]]


def test_the_second_stage_selects_on_its_own_cutoff_and_reports_both_stages():
    events = _random_walks(seed=1)
    split_users = np.arange(events.n_users)
    histories = events.histories()
    last = histories.item_idx[histories.indptr[1:] - 1]
    keep = np.ones(len(events), bool)
    keep[histories.indptr[1:] - 1] = False  # each user's last event is validation
    train_events = Interactions.from_arrays(events.user_idx[keep], events.item_idx[keep],
                                            n_users=events.n_users, n_items=events.n_items)
    valid = Interactions.from_arrays(split_users, last, n_users=events.n_users,
                                     n_items=events.n_items)
    records = []
    model = create("ada_retrieval", {**TINY, "rounds": 2, "round_size": 5, "max_epochs": 3,
                                     "adapt_max_epochs": 2, "adapt_valid_k": 5,
                                     "mask_selected": True})
    model.set_epoch_callback(records.append)
    model.fit(train_events, valid=valid, seed=0)
    assert [r["stage"] for r in records] == ["backbone"] * 3 + ["adapt"] * 2
    assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5]
    assert all("valid_ndcg@10" in r for r in records[:3])
    assert all("valid_ndcg@5" in r and "valid_ndcg@10" not in r for r in records[3:])
    log = model.training_log()
    assert "best_valid_ndcg@5" in log and log["backbone"]["best_epoch"] >= 1


def test_bad_settings_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="full softmax"):
        AdaRetrievalConfig(loss="bce")
    with pytest.raises(ValueError, match="no padding class: pad_logit"):
        AdaRetrievalConfig(pad_logit=True)
    with pytest.raises(ValueError, match="more than the 9 items"):
        create("ada_retrieval", {**TINY, "rounds": 5, "round_size": 2}).fit(cycle_walks())


def test_a_saved_backbone_is_loaded_as_the_first_stage_after_checks(tmp_path):
    events = cycle_walks()
    params = {**TINY, "max_epochs": 5}
    create("sasrec", params).fit(events, seed=0).save(tmp_path / "sasrec")
    ada = create("ada_retrieval", {**params, "rounds": 2, "round_size": 3,
                                   "adapt_max_epochs": 1, "adapt_learning_rate": 1e-12,
                                   "backbone_from": str(tmp_path / "sasrec")}).fit(events)
    assert ada.training_log()["backbone"]["loaded_from"] == str(tmp_path / "sasrec")
    reloaded = create("sasrec", params).load(tmp_path / "sasrec")
    for name, value in reloaded.module_.state_dict().items():  # lr 1e-12: nothing moved
        torch.testing.assert_close(ada.module_.backbone.state_dict()[name], value)
    with pytest.raises(ValueError, match="another architecture .*dim 16 != 8"):
        create("ada_retrieval", {**params, "dim": 8, "rounds": 2, "round_size": 3,
                                 "backbone_from": str(tmp_path / "sasrec")}).fit(events)
    with pytest.raises(ValueError, match="'sasrec' model; this ada_retrieval runs backbone "
                                         "'gru4rec'"):
        create("ada_retrieval", {**params, "backbone": "gru4rec", "rounds": 2,
                                 "round_size": 3,
                                 "backbone_from": str(tmp_path / "sasrec")}).fit(events)
    with pytest.raises(ValueError, match="other training events"):
        create("ada_retrieval", {**params, "rounds": 2, "round_size": 3,
                                 "backbone_from": str(tmp_path / "sasrec")}).fit(
            cycle_walks(seed=1))


@pytest.mark.parametrize("mask_selected", [False, True])
def test_the_round_losses_match_their_formula(monkeypatch, mask_selected):
    model = AdaRetrieval(AdaRetrievalConfig(**{**ADA_TINY, "rounds": 3, "round_size": 2,
                                               "round_weight": 0.5,
                                               "mask_selected": mask_selected}))
    model.device_, model.n_items_ = torch.device("cpu"), 5
    logits = [torch.tensor([[2.0, 1.0, 0.0, -1.0, 0.5], [0.0, 3.0, 1.0, 0.0, 0.0]]),
              torch.tensor([[1.0, 0.0, 2.0, 0.0, 1.0], [1.0, 1.0, 0.0, 2.0, 0.0]]),
              torch.tensor([[0.0, 1.0, 0.0, 3.0, 0.0], [0.0, 0.0, 1.0, 0.0, 2.0]])]
    logits = [row.requires_grad_() for row in logits]
    selected = [torch.tensor([[0, 4], [1, 2]]), torch.tensor([[2, 1], [3, 0]])]
    monkeypatch.setattr(model, "_rounds", lambda *args, **kwargs: (logits, selected))
    # targets: sequence [t, x] -> prefix [t], target x; items are tokens - 1
    batch = [np.array([1, 3]), np.array([2, 5])]  # targets: item 2 and item 4
    loss = model._adapt_loss(None, batch, torch.Generator().manual_seed(0), None)

    def ce(row, target, drop=()):
        keep = [i for i in range(5) if i not in drop]
        return -(row[target] - torch.logsumexp(row[keep], 0))

    if not mask_selected:
        expected = sum(0.5 ** t * (ce(logits[t][0], 2) + ce(logits[t][1], 4)) / 2
                       for t in range(3))
    else:
        # round 1: row 0 leaves out {0, 4}, row 1 {1, 2}; round 2: row 0's target 2 is now
        # listed (adds nothing), row 1 leaves out {1, 2, 3, 0}
        expected = ((ce(logits[0][0], 2) + ce(logits[0][1], 4)) / 2
                    + 0.5 * (ce(logits[1][0], 2, (0, 4)) + ce(logits[1][1], 4, (1, 2))) / 2
                    + 0.25 * ce(logits[2][1], 4, (0, 1, 2, 3)) / 2)
    torch.testing.assert_close(loss, expected)
    loss.backward()  # the masks are not changed in place under autograd
    assert all(torch.isfinite(row.grad).all() for row in logits)
