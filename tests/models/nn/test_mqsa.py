"""MQSA-TED: the contract, the long-query window, the two stacks' mix, the transition
counts and the distillation loss against its dense formula."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.models.contract import ModelContract
from tests.models.nn.test_sequential import TINY, cycles
from userlens.data.splits import leave_one_out
from userlens.models import create
from userlens.models.nn.losses import transition_distillation
from userlens.models.nn.modules import (
    MultiQueryEncoder,
    TransformerBlock,
    TransformerSequenceEncoder,
    causal_window_mean,
)
from userlens.models.nn.mqsa import MQSATED, transition_strengths
from userlens.models.sequential_config import MQSATEDConfig


class TestMQSATED(ModelContract):
    sequential = True

    def make(self):
        return MQSATED(MQSATEDConfig(**TINY))


def test_window_mean_averages_the_real_rows_of_each_window():
    x = torch.arange(1.0, 6.0).view(1, 5, 1).repeat(1, 1, 2)  # rows 1..5
    real = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0]).view(1, 5, 1)  # last row a pad
    x = x * real
    mean = causal_window_mean(x, real, 3)
    # position 0: (1); 1: (1+2)/2; 2: (1+2+3)/3; 3: (2+3+4)/3; pad stays 0
    expected = torch.tensor([1.0, 1.5, 2.0, 3.0, 0.0])
    torch.testing.assert_close(mean[0, :, 0], expected)
    torch.testing.assert_close(mean[0, :, 1], expected)
    torch.testing.assert_close(causal_window_mean(x, real, 1), x)
    torch.testing.assert_close(causal_window_mean(x, real, 10)[0, :4, 0],
                               torch.tensor([1.0, 1.5, 2.0, 2.5]))


def test_a_block_queried_with_its_own_input_is_the_plain_block():
    torch.manual_seed(0)
    block = TransformerBlock(8, 2, 8, 0.0, "relu", "sasrec").eval()
    x = torch.randn(2, 5, 8)
    bias = torch.zeros(1, 1, 5, 5)
    torch.testing.assert_close(block(x, bias, x), block(x, bias))
    assert not torch.allclose(block(x, bias, x.flip(1)), block(x, bias))
    with pytest.raises(ValueError, match="sasrec"):
        TransformerBlock(8, 2, 8, 0.0, "relu", "pre_norm")(x, bias, x)


def test_alpha_one_is_the_short_stack_and_the_long_stack_is_causal():
    torch.manual_seed(0)
    encoder = MultiQueryEncoder(20, 16, 2, 1, 10, 0.0, query_window=3, alpha=1.0).eval()
    plain = TransformerSequenceEncoder(20, 16, 2, 1, 10, 0.0, causal=True,
                                       ff_mult=1, activation="relu", layout="sasrec",
                                       scale_embeddings=True).eval()
    plain.load_state_dict({k: v for k, v in encoder.state_dict().items()
                           if not k.startswith("long_")})
    tokens = torch.tensor([[3, 5, 7, 9, 11, 0, 0], [2, 4, 0, 0, 0, 0, 0]])
    torch.testing.assert_close(encoder(tokens), plain(tokens))
    encoder.alpha = 0.0
    changed = tokens.clone()
    changed[0, 3] = 2  # a later event cannot change earlier long-query outputs
    out, out_changed = encoder(tokens), encoder(changed)
    torch.testing.assert_close(out[0, :3], out_changed[0, :3])
    assert not torch.allclose(out[0, 3], out_changed[0, 3])
    encoder.alpha = 0.3
    short, long = encoder.streams(tokens)
    torch.testing.assert_close(encoder(tokens), 0.3 * short + 0.7 * long)


def test_transition_strengths_count_followers_and_scale_rows_by_their_largest():
    sequences = [np.array([1, 2, 3, 2, 3]), np.array([1, 3])]  # tokens: item = token - 1
    strengths = transition_strengths(sequences, 4).toarray()
    # item 0 -> 1 once, -> 2 once; item 1 -> 2 twice; item 2 -> 1 once
    expected = np.zeros((4, 4), np.float32)
    expected[0, 1] = expected[0, 2] = 1.0
    expected[1, 2] = 1.0
    expected[2, 1] = 1.0
    np.testing.assert_allclose(strengths, expected)
    two = transition_strengths([np.array([1, 2, 3])], 3, span=2).toarray()
    np.testing.assert_allclose(two[0], [0.0, 1.0, 1.0])  # 0 -> 1 and 0 -> 2


def test_distillation_matches_the_dense_cross_entropy():
    torch.manual_seed(0)
    heads, items = torch.randn(4, 6, dtype=torch.float64), torch.randn(7, 6, dtype=torch.float64)
    dense = torch.zeros(4, 7, dtype=torch.float64)
    dense[0, 2], dense[0, 5], dense[1, 1], dense[2, 6] = 1.0, 0.5, 1.0, 1.0  # row 3: none
    for tau in (0.1, 1.0):
        teacher = torch.softmax(dense / tau, dim=1)  # row 3 uniform
        expected = -(teacher * F.log_softmax(heads @ items.T / tau, dim=1)).sum(1).mean()
        got = transition_distillation(heads, items, dense.to_sparse(), tau)
        torch.testing.assert_close(got, expected)
    heads.requires_grad_(True)
    items.requires_grad_(True)
    transition_distillation(heads, items, dense.to_sparse(), 0.1).backward()
    assert torch.isfinite(heads.grad).all() and torch.isfinite(items.grad).all()


def test_distillation_pulls_a_head_towards_its_followers():
    torch.manual_seed(0)
    heads = torch.randn(1, 4)
    items = torch.randn(5, 4)
    items[3] = -0.5 * heads[0]  # the follower starts far from the head
    items.requires_grad_(True)
    strengths = torch.zeros(1, 5)
    strengths[0, 3] = 1.0
    transition_distillation(heads, items, strengths.to_sparse(), 0.5).backward()
    # its teacher share (0.65) exceeds its student share: descent moves it towards the head
    assert float((-items.grad[3]) @ heads[0]) > 0


def test_learns_a_deterministic_next_item_with_distillation():
    events = cycles()
    split = leave_one_out(events, validation=False)
    model = create("mqsa_ted", {**TINY, "distill_weight": 0.1}).fit(split.train, seed=0)
    histories = split.train.histories(split.test.user_idx)
    items, _ = model.recommend(histories, k=1, exclude=False)
    assert (items[:, 0] == split.test.item_idx).mean() >= 0.95


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="query_window"):
        MQSATEDConfig(query_window=0)
    with pytest.raises(ValueError, match="alpha"):
        MQSATEDConfig(alpha=1.5)
    with pytest.raises(ValueError, match="layout"):
        MQSATEDConfig(layout="pre_norm")
