"""Torch modules for sequential user models: math only, no training, ids or devices.

Sequences are right-padded with 0; item ``i`` of the catalogue is token ``i + 1``. Learned
positions count from the end of each sequence (the latest event is position 0; what left
padding gives the original SASRec) or from its start (what right padding gives the PyTorch
port Klenitskiy & Vasilev trained); both stay consistent when batches of similar length are
padded to different widths.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PAD = 0


def positions_from_end(tokens: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B, L) position of each token counted from its sequence's last real token."""
    lengths = (tokens != PAD).sum(dim=1, keepdim=True)  # (B, 1)
    index = torch.arange(tokens.shape[1], device=tokens.device).unsqueeze(0)  # (1, L)
    return (lengths - 1 - index).clamp(min=0, max=max_len - 1)  # (B, L)


def positions_from_start(tokens: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B, L) position of each token counted from its sequence's first token."""
    index = torch.arange(tokens.shape[1], device=tokens.device).clamp(max=max_len - 1)
    return index.unsqueeze(0).expand(tokens.shape[0], -1)  # (B, L)


def fast_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout with a uniform-draw mask.

    Same distribution as ``F.dropout``; about twice as fast on CPU, where torch's Bernoulli
    sampler dominated our SASRec step time (measured in benchmarks/).
    """
    if not training or p == 0.0:
        return x
    keep = torch.rand_like(x) >= p
    return x * keep * (1.0 / (1.0 - p))


class TransformerBlock(nn.Module):
    """Self-attention + feed-forward block, in one of three layouts.

    ``"pre_norm"``: x + Attn(LN(x)), then x + FF(LN(x)) (the GPT-2 layout).
    ``"post_norm"``: LN(x + Attn(x)), then LN(x + FF(x)) (the Transformer and BERT layout,
    which BERT4Rec's paper and code use).
    ``"sasrec"``: the layout of SASRec's reference code: q = LN(x); x = q + Attn(q, x, x) with
    keys and values un-normalised and no dropout on the attention output (only on its
    weights); y = LN(x); x = y + FF(y).
    """

    def __init__(self, dim: int, n_heads: int, ff_dim: int, dropout: float,
                 activation: str, layout: str = "pre_norm", norm_eps: float = 1e-5) -> None:
        super().__init__()
        self.n_heads, self.dropout, self.layout = n_heads, dropout, layout
        self.attention_norm = nn.LayerNorm(dim, eps=norm_eps)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attention_out = nn.Linear(dim, dim)
        self.ff_norm = nn.LayerNorm(dim, eps=norm_eps)
        self.ff_in = nn.Linear(dim, ff_dim)
        self.ff_out = nn.Linear(ff_dim, dim)
        self.activation = nn.GELU() if activation == "gelu" else nn.ReLU()

    def forward(self, x: torch.Tensor, attention_bias: torch.Tensor,
                query: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, D) -> (B, L, D); ``attention_bias`` is (B or 1, 1, L, L) with -inf = masked.

        ``query`` (B, L, D), "sasrec" layout only: the queries (and the residual) come from
        LN(query) instead of LN(x), keys and values from x (MQSA's long-query attention)."""
        batch, length, dim = x.shape
        heads, head_dim = self.n_heads, dim // self.n_heads
        post_norm = self.layout == "post_norm"
        if query is not None and self.layout != "sasrec":
            raise ValueError(f"separate queries need the 'sasrec' layout, not {self.layout!r}")
        normed = x if post_norm else self.attention_norm(x if query is None else query)
        if self.layout == "sasrec":
            w_q, w_kv = self.qkv.weight.split([dim, 2 * dim])
            b_q, b_kv = self.qkv.bias.split([dim, 2 * dim])
            q = F.linear(normed, w_q, b_q)  # (B, L, D)
            k, v = F.linear(x, w_kv, b_kv).split(dim, dim=2)  # 2 x (B, L, D)
            residual = normed
        else:
            q, k, v = self.qkv(normed).split(dim, dim=2)  # 3 x (B, L, D)
            residual = x
        q, k, v = (t.view(batch, length, heads, head_dim).transpose(1, 2)
                   for t in (q, k, v))  # (B, H, L, Dh)
        scores = (q @ k.transpose(-2, -1)) * head_dim ** -0.5 + attention_bias  # (B, H, L, L)
        weights = fast_dropout(torch.softmax(scores, dim=-1), self.dropout, self.training)
        attended = (weights @ v).transpose(1, 2).reshape(batch, length, dim)  # (B, L, D)
        attended = self.attention_out(attended)
        if self.layout != "sasrec":  # SASRec's reference code adds attention output undropped
            attended = fast_dropout(attended, self.dropout, self.training)
        x = residual + attended
        if post_norm:
            x = self.attention_norm(x)
        normed = x if post_norm else self.ff_norm(x)
        hidden = fast_dropout(self.activation(self.ff_in(normed)), self.dropout,
                              self.training)  # (B, L, ff)
        residual = normed if self.layout == "sasrec" else x
        x = residual + fast_dropout(self.ff_out(hidden), self.dropout, self.training)
        return self.ff_norm(x) if post_norm else x


class TransformerSequenceEncoder(nn.Module):
    """Item + position embeddings, a stack of transformer blocks, a final norm.

    With ``layout="post_norm"`` every block ends normalised, so the norm moves to the
    embeddings instead (BERT's embedding LayerNorm) and the output is the last block's.

    ``causal=True`` is SASRec (Kang & McAuley, ICDM 2018): each position sees only the past.
    ``causal=False`` is BERT4Rec (Sun et al., CIKM 2019): every position sees the whole
    sequence, pads excluded. ``n_special`` extra tokens follow the items (BERT4Rec's mask).
    """

    def __init__(self, n_items: int, dim: int, n_blocks: int, n_heads: int, max_len: int,
                 dropout: float, causal: bool, ff_mult: int = 4, n_special: int = 0,
                 activation: str = "gelu", layout: str = "pre_norm",
                 init_std: float = 0.02, scale_embeddings: bool = False,
                 positions: str = "from_end", attention_init: str = "normal",
                 norm_eps: float = 1e-5) -> None:
        super().__init__()
        self.n_items, self.max_len, self.causal, self.dropout = n_items, max_len, causal, dropout
        self.positions = positions_from_start if positions == "from_start" else positions_from_end
        self.embedding_scale = dim ** 0.5 if scale_embeddings else 1.0
        self.item_embedding = nn.Embedding(n_items + 1 + n_special, dim, padding_idx=PAD)
        self.position_embedding = nn.Embedding(max_len, dim)
        self.blocks = nn.ModuleList([
            TransformerBlock(dim, n_heads, dim * ff_mult, dropout, activation, layout, norm_eps)
            for _ in range(n_blocks)])
        post_norm = layout == "post_norm"  # blocks end normalised: norm the embeddings instead
        self.embedding_norm = nn.LayerNorm(dim, eps=norm_eps) if post_norm else nn.Identity()
        self.final_norm = nn.Identity() if post_norm else nn.LayerNorm(dim, eps=norm_eps)
        for module in self.modules():  # small normal init, as in BERT/GPT-2 and SASRec's ports
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, std=init_std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        if attention_init == "xavier":  # torch MultiheadAttention's in_proj_weight default
            for block in self.blocks:
                nn.init.xavier_uniform_(block.qkv.weight)  # the (3D, D) matrix, as torch does
        with torch.no_grad():
            self.item_embedding.weight[PAD].zero_()

    def attention_bias(self, tokens: torch.Tensor) -> torch.Tensor:
        """Additive mask: causal (right padding means real tokens never see pads, and every
        query row keeps itself), or bidirectional with pad keys hidden."""
        length = tokens.shape[1]
        if self.causal:
            future = torch.ones(length, length, dtype=torch.bool, device=tokens.device).triu(1)
            return torch.zeros(length, length, device=tokens.device).masked_fill(
                future, float("-inf")).view(1, 1, length, length)
        pad_keys = (tokens == PAD).view(tokens.shape[0], 1, 1, length)
        return torch.zeros(pad_keys.shape, device=tokens.device).masked_fill(
            pad_keys, float("-inf"))  # (B, 1, 1, L)

    def embed_items(self, tokens: torch.Tensor) -> torch.Tensor:
        """(..., L) tokens -> (..., L, D) item inputs, before positions are added."""
        return self.item_embedding(tokens) * self.embedding_scale

    def forward(self, tokens: torch.Tensor,
                item_inputs: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L) tokens -> (B, L, D) hidden states. ``item_inputs`` (B, L, D) replaces
        :meth:`embed_items` of the tokens (Ada-Retrieval's adapted item inputs)."""
        pad = tokens == PAD  # (B, L)
        items = self.embed_items(tokens) if item_inputs is None else item_inputs
        x = items + self.position_embedding(self.positions(tokens, self.max_len))  # (B, L, D)
        keep = (~pad).unsqueeze(-1)  # (B, L, 1)
        x = fast_dropout(self.embedding_norm(x), self.dropout, self.training) * keep
        bias = self.attention_bias(tokens)
        for block in self.blocks:
            x = block(x, bias) * keep  # (B, L, D); pads stay zero
        return self.final_norm(x)

    def item_weights(self) -> torch.Tensor:
        """(n_items, D) output embeddings, tied with the input item embeddings."""
        return self.item_embedding.weight[1:self.n_items + 1]


class GRUSequenceEncoder(nn.Module):
    """GRU4Rec (Hidasi et al., ICLR 2016) over item embeddings, tied output embeddings.

    Trained here with the cross-entropy-style losses of the transformer models (Hidasi &
    Czapp 2023 show CE/BPR-max with negative sampling is what makes GRU4Rec competitive).
    """

    def __init__(self, n_items: int, dim: int, n_layers: int, dropout: float,
                 max_len: int) -> None:
        super().__init__()
        self.n_items, self.max_len, self.causal = n_items, max_len, True
        self.item_embedding = nn.Embedding(n_items + 1, dim, padding_idx=PAD)
        self.dropout = nn.Dropout(dropout)
        self.gru = nn.GRU(dim, dim, n_layers, batch_first=True,
                          dropout=dropout if n_layers > 1 else 0.0)
        self.final_norm = nn.LayerNorm(dim)
        nn.init.normal_(self.item_embedding.weight, std=dim ** -0.5)
        with torch.no_grad():
            self.item_embedding.weight[PAD].zero_()

    def embed_items(self, tokens: torch.Tensor) -> torch.Tensor:
        """(..., L) tokens -> (..., L, D) item inputs."""
        return self.item_embedding(tokens)

    def forward(self, tokens: torch.Tensor,
                item_inputs: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L) right-padded tokens -> (B, L, D); pads come after, so they never leak back.
        ``item_inputs`` (B, L, D) replaces the item embeddings of the tokens."""
        x = self.dropout(self.embed_items(tokens) if item_inputs is None
                         else item_inputs)  # (B, L, D)
        output, _ = self.gru(x)  # (B, L, D)
        return self.final_norm(output)

    def item_weights(self) -> torch.Tensor:
        return self.item_embedding.weight[1:self.n_items + 1]


def causal_window_mean(x: torch.Tensor, real: torch.Tensor, window: int) -> torch.Tensor:
    """(B, L, D) -> (B, L, D): at each position the mean of the real rows among it and the
    ``window - 1`` before it (``real`` (B, L, 1) is 1 on real tokens, 0 on pads; a pad row
    is 0). Window 1 is x itself on real rows."""
    total = torch.cumsum(x * real, dim=1)  # (B, L, D)
    count = torch.cumsum(real, dim=1)  # (B, L, 1)
    if window < x.shape[1]:
        total = total - F.pad(total, (0, 0, window, 0))[:, :x.shape[1]]
        count = count - F.pad(count, (0, 0, window, 0))[:, :x.shape[1]]
    return total / count.clamp(min=1.0) * real


class MultiQueryEncoder(TransformerSequenceEncoder):
    """MQSA (Zhu et al., WSDM 2024): two causal self-attention stacks over the same item and
    position embeddings. The short-query stack is SASRec's (each position queries with its
    own item); in the long-query stack every block's query at a position is the mean of its
    input at that position and the ``query_window - 1`` before it, which mixes in the
    collaborative signal of the latest few items. The output is
    ``alpha * short + (1 - alpha) * long``: scores stay one dot product with the tied item
    embeddings (which is the paper's weighted sum of the two stacks' logits)."""

    def __init__(self, n_items: int, dim: int, n_blocks: int, n_heads: int, max_len: int,
                 dropout: float, query_window: int, alpha: float, ff_mult: int = 1,
                 activation: str = "relu", init_std: float = 0.02,
                 scale_embeddings: bool = True, positions: str = "from_end",
                 attention_init: str = "normal", norm_eps: float = 1e-5) -> None:
        super().__init__(n_items, dim, n_blocks, n_heads, max_len, dropout, causal=True,
                         ff_mult=ff_mult, activation=activation, layout="sasrec",
                         init_std=init_std, scale_embeddings=scale_embeddings,
                         positions=positions, attention_init=attention_init,
                         norm_eps=norm_eps)
        self.query_window, self.alpha = query_window, alpha
        self.long_blocks = nn.ModuleList([
            TransformerBlock(dim, n_heads, dim * ff_mult, dropout, activation, "sasrec",
                             norm_eps)
            for _ in range(n_blocks)])
        self.long_norm = nn.LayerNorm(dim, eps=norm_eps)
        for module in self.long_blocks.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=init_std)
                nn.init.zeros_(module.bias)
        if attention_init == "xavier":
            for block in self.long_blocks:
                nn.init.xavier_uniform_(block.qkv.weight)

    def streams(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) tokens -> the (B, L, D) short- and long-query outputs."""
        pad = tokens == PAD
        x = self.embed_items(tokens) + self.position_embedding(
            self.positions(tokens, self.max_len))
        keep = (~pad).unsqueeze(-1).to(x.dtype)  # (B, L, 1)
        x = fast_dropout(x, self.dropout, self.training) * keep  # shared by both stacks
        bias = self.attention_bias(tokens)
        short, long = x, x
        for block in self.blocks:
            short = block(short, bias) * keep
        for block in self.long_blocks:
            long = block(long, bias, causal_window_mean(long, keep, self.query_window)) * keep
        return self.final_norm(short), self.long_norm(long)

    def forward(self, tokens: torch.Tensor,
                item_inputs: torch.Tensor | None = None) -> torch.Tensor:
        if item_inputs is not None:
            raise ValueError("MultiQueryEncoder takes tokens only")
        short, long = self.streams(tokens)
        return self.alpha * short + (1.0 - self.alpha) * long
