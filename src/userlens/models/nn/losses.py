"""Next-item losses as plain functions of hidden states, targets and item weights.

All take ``hidden`` (T, D) for the T positions that have a target, ``targets`` (T,) item
indices in [0, n_items), and ``weights`` (n_items, D) output item embeddings; an optional
``sample_weight`` (T,) multiplies each position's loss before the mean over the T positions
(user-wise reweighting: LoRec's calibrated weights, see :mod:`userlens.audits.manipulation`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class _ChunkedCrossEntropy(torch.autograd.Function):
    """Mean softmax cross-entropy of ``hidden @ weights.T`` computed ``chunk`` rows at a time.

    Never materialises the (T, n_items) logits: the backward pass recomputes each chunk's
    logits and turns them into the gradient in place (softmax - one-hot). On ML-1M-sized
    catalogues this is about 2x faster on CPU than ``F.cross_entropy`` on full logits,
    because each chunk stays in cache, and it needs T x n_items less memory.

    Runs in float32 with autocast off, forward and backward: under bfloat16 autocast the
    forward's logits (and so ``log_norm``) would be bfloat16 while the backward, outside the
    autocast context, recomputes them in float32, and the gradient's softmax would not match
    its normaliser (a quarter of the largest gradient wrong on random inputs, against a
    twentieth for autocast's own cross-entropy). The loss in float32 is the usual rule of
    mixed precision.
    """

    @staticmethod
    def forward(ctx, hidden, weights, targets, chunk, sample_weight):  # noqa: D102
        with torch.autocast(hidden.device.type, enabled=False):
            count = hidden.shape[0]
            log_norm = torch.empty(count, dtype=hidden.dtype, device=hidden.device)
            total = hidden.new_zeros(())
            for start in range(0, count, chunk):
                logits = hidden[start:start + chunk] @ weights.T  # (c, n_items)
                norm = torch.logsumexp(logits, dim=1)
                log_norm[start:start + chunk] = norm
                losses = norm - logits.gather(1, targets[start:start + chunk, None])[:, 0]
                if sample_weight is not None:
                    losses = losses * sample_weight[start:start + chunk]
                total += losses.sum()
            ctx.save_for_backward(hidden, weights, targets, log_norm, sample_weight)
            ctx.chunk = chunk
            return total / max(count, 1)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        with torch.autocast(grad.device.type, enabled=False):
            hidden, weights, targets, log_norm, sample_weight = ctx.saved_tensors
            count, chunk = hidden.shape[0], ctx.chunk
            grad_hidden = torch.empty_like(hidden)
            grad_weights = torch.zeros_like(weights)
            scale = grad / max(count, 1)
            for start in range(0, count, chunk):
                rows = hidden[start:start + chunk]
                probs = rows @ weights.T  # (c, n_items)
                probs.sub_(log_norm[start:start + chunk, None]).exp_()
                rows_at = torch.arange(len(rows), device=rows.device)
                probs[rows_at, targets[start:start + chunk]] -= 1
                probs.mul_(scale)
                if sample_weight is not None:
                    probs.mul_(sample_weight[start:start + chunk, None])
                grad_hidden[start:start + chunk] = probs @ weights
                grad_weights.addmm_(probs.T, rows)
            return grad_hidden, grad_weights, None, None, None


def full_cross_entropy(hidden: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
                       chunk: int = 256, sample_weight: torch.Tensor | None = None
                       ) -> torch.Tensor:
    """Softmax cross-entropy over every item (Klenitskiy & Vasilev, RecSys 2023)."""
    if hidden.dtype != weights.dtype:
        hidden = hidden.to(weights.dtype)
    if sample_weight is not None:
        sample_weight = sample_weight.to(weights.dtype)
    return _ChunkedCrossEntropy.apply(hidden, weights, targets, chunk, sample_weight)


def _weighted_mean(losses: torch.Tensor, sample_weight: torch.Tensor | None) -> torch.Tensor:
    """(T,) per-position losses -> their mean, each multiplied by its weight first."""
    if sample_weight is not None:
        losses = losses * sample_weight.to(losses.dtype)
    return losses.mean()


def sampled_softmax(hidden: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
                    negatives: torch.Tensor, log_q: torch.Tensor | None = None,
                    sample_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax over the target and negatives shared by the batch.

    Args:
        hidden: (T, D) user vectors, or (T, K, D) interest vectors (an item's logit is then
            its largest inner product with one of the K).
        negatives: (N,) sampled item indices; a negative equal to a row's target is masked.
        log_q: (n_items,) log sampling probability of each item; when given, subtracted
            from every logit (the log-Q correction of Yi et al., RecSys 2019), which makes
            popularity sampling an unbiased estimate of the full softmax.
    """
    target_vectors = weights[targets]  # (T, D)
    if hidden.dim() == 3:  # (T, K, D): best interest per item
        positive = (hidden * target_vectors.unsqueeze(1)).sum(dim=2).amax(dim=1, keepdim=True)
        negative = (hidden @ weights[negatives].T).amax(dim=1)  # (T, N)
    else:
        positive = (hidden * target_vectors).sum(dim=1, keepdim=True)  # (T, 1)
        negative = hidden @ weights[negatives].T  # (T, N)
    if log_q is not None:
        positive = positive - log_q[targets].unsqueeze(1)
        negative = negative - log_q[negatives].unsqueeze(0)
    negative = negative.masked_fill(negatives.unsqueeze(0) == targets.unsqueeze(1),
                                    float("-inf"))
    logits = torch.cat([positive, negative], dim=1)  # (T, 1 + N)
    return _weighted_mean(F.cross_entropy(logits, torch.zeros_like(targets), reduction="none"),
                          sample_weight)


def negative_logits(hidden: torch.Tensor, weights: torch.Tensor,
                    negatives: torch.Tensor) -> torch.Tensor:
    """(T, K) scores of per-position negatives (T, K).

    Gathering (T, K, D) negative embeddings costs T·K·D memory; when the catalogue is not
    much larger than K it is cheaper to score every item with one matmul and pick the K
    columns (ML-1M with 256 negatives: 200 MB instead of 1 GB per batch).
    """
    if weights.shape[0] <= 16 * negatives.shape[1]:
        return (hidden @ weights.T).gather(1, negatives)  # (T, K)
    return torch.einsum("td,tkd->tk", hidden, weights[negatives])  # (T, K)


def _weighted_bce(hidden: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
                  negatives: torch.Tensor, beta: float, bias: torch.Tensor | float,
                  sample_weight: torch.Tensor | None = None) -> torch.Tensor:
    """-β log σ(s+ + b) - Σ log(1 - σ(s- + b)), averaged over positions."""
    positive = (hidden * weights[targets]).sum(dim=1) + bias  # (T,)
    negative = F.softplus(negative_logits(hidden, weights, negatives) + bias)  # (T, K)
    # negatives are drawn from all items; drop accidental hits on the target
    negative = negative.masked_fill(negatives == targets.unsqueeze(1), 0.0)
    # -log σ(s)^β = β softplus(-s): exact, and stable for any s.
    return _weighted_mean(beta * F.softplus(-positive) + negative.sum(dim=1), sample_weight)


def binary_cross_entropy(hidden: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
                         negatives: torch.Tensor, bias: torch.Tensor | float = 0.0,
                         sample_weight: torch.Tensor | None = None) -> torch.Tensor:
    """SASRec's original loss: -log σ(s+) - Σ log(1 - σ(s-)) with per-position negatives.

    Args:
        negatives: (T, K) negatives of each position.
        bias: a global offset added to every logit (see :func:`initial_logit_bias`).
    """
    return _weighted_bce(hidden, targets, weights, negatives, 1.0, bias, sample_weight)


def gbce_beta(n_negatives: int, n_items: int, t: float) -> float:
    """β = α (t (1 - 1/α) + 1/α) with sampling rate α = k / (n_items - 1) (gSASRec)."""
    alpha = n_negatives / (n_items - 1)
    return alpha * (t * (1 - 1 / alpha) + 1 / alpha)


def gbce(hidden: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
         negatives: torch.Tensor, t: float, n_items: int,
         bias: torch.Tensor | float = 0.0,
         sample_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Generalised BCE (Petrov & Macdonald, RecSys 2023): -β log σ(s+) - Σ log(1 - σ(s-)).

    The positive's probability is raised to β, which undoes the overconfidence that
    negative sampling induces; t = 0 is plain BCE (β = 1), t = 1 calibrates fully.
    """
    beta = gbce_beta(negatives.shape[1], n_items, t)
    return _weighted_bce(hidden, targets, weights, negatives, beta, bias, sample_weight)


def initial_logit_bias(loss: str, n_negatives: int, n_items: int, t: float) -> float:
    """Where a global logit offset b minimises the loss while every score is still 0.

    β softplus(-b) + K softplus(b) is minimal at σ(b) = β/(β+K), b = log(β/K); BCE is β = 1,
    b = -log K.

    Why it matters: with K in the hundreds and no offset, the first thing the optimiser learns
    is to push every negative down along one shared direction; with small initial item
    embeddings that direction swamps the user-specific part of the hidden state (after the
    final layer norm every user gets the same vector) and the model stays at popularity.
    Measured on ML-100K (SASRec, gBCE, 256 negatives, batch 128): validation NDCG@10 0.036
    without the offset after 40 epochs, 0.112 with it after 25. The offset is the same for
    every item, so it never changes a ranking.
    """
    beta = gbce_beta(n_negatives, n_items, t) if loss == "gbce" else 1.0
    return math.log(beta / n_negatives)


def uniform_log_q(n_items: int, device: torch.device | None = None) -> torch.Tensor:
    return torch.full((n_items,), -math.log(n_items), device=device)


def info_nce(first: torch.Tensor, second: torch.Tensor, temperature: float = 1.0,
             labels: torch.Tensor | None = None, similarity: str = "dot") -> torch.Tensor:
    """In-batch InfoNCE between two views: row k of ``first`` and row k of ``second`` are a
    positive pair; the other 2(N - 1) rows of both views are the negatives (SimCLR's NT-Xent,
    as CL4SRec, ICLRec and ICSRec use it). Averaged over the 2N anchors.

    Args:
        first, second: (N, D) the two views.
        labels: (N,) optional class of each pair (ICSRec's false-negative mask): rows whose
            label equals the anchor's are not used as its negatives.
        similarity: "dot" (the reference code's default) or "cos".
    """
    n = len(first)
    z = torch.cat([first, second]).float()  # (2N, D)
    if similarity == "cos":
        z = F.normalize(z, dim=1)
    sim = (z @ z.T) / temperature  # (2N, 2N)
    index = torch.arange(2 * n, device=z.device)
    partner = (index + n) % (2 * n)
    positive = sim[index, partner].unsqueeze(1)  # (2N, 1)
    if labels is None:
        excluded = (index.unsqueeze(1) == index) | (partner.unsqueeze(1) == index)
    else:
        both = torch.cat([labels, labels])
        excluded = both.unsqueeze(1) == both.unsqueeze(0)  # self, positive, same class
    negatives = sim.masked_fill(excluded, float("-inf"))
    logits = torch.cat([positive, negatives], dim=1)  # (2N, 1 + 2N); the positive is class 0
    return F.cross_entropy(logits, torch.zeros(2 * n, dtype=torch.long, device=z.device))


def random_fourier_features(x: torch.Tensor, projection: torch.Tensor, phase: torch.Tensor
                            ) -> torch.Tensor:
    """(..., D) -> (..., R) random Fourier features sqrt(2 / R) cos(x Ω + b) of a Gaussian
    kernel (Rahimi & Recht, NeurIPS 2007): Ω (D, R) normal / bandwidth, b (R,) uniform in
    [0, 2π)."""
    return math.sqrt(2.0 / projection.shape[1]) * torch.cos(x @ projection + phase)


def weighted_hsic(features: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Sum over pairs i < j of the squared Frobenius norm of the weighted cross-covariance
    of features i and j: (T, K, R) features of K variables at T samples, (T,) weights that
    sum to 1. With random Fourier features this estimates the HSIC between each pair (the
    dependence measure DESMIL and StableNet minimise)."""
    mean = torch.einsum("t,tkr->kr", weights, features)  # (K, R)
    centred = features - mean
    covariance = torch.einsum("t,tir,tjs->ijrs", weights, centred, centred)  # (K, K, R, R)
    upper = torch.triu(torch.ones(features.shape[1], features.shape[1], dtype=torch.bool,
                                  device=features.device), diagonal=1)
    return covariance[upper].pow(2).sum()


def max_interest_cross_entropy(interests: torch.Tensor, targets: torch.Tensor,
                               weights: torch.Tensor, sample_weight: torch.Tensor | None = None,
                               chunk: int = 1024) -> torch.Tensor:
    """Softmax cross-entropy over every item, each item's logit its largest inner product
    with one of the K interests: (T, K, D) interests, (T,) targets, (n_items, D) item
    weights. Chunks of T are checkpointed, so memory holds one chunk's (chunk, K, n_items)."""
    from torch.utils.checkpoint import checkpoint

    def part(vectors: torch.Tensor, wanted: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        logits = (vectors @ items.T).amax(dim=1)  # (t, n_items)
        return F.cross_entropy(logits, wanted, reduction="none")

    values = [checkpoint(part, interests[start:start + chunk], targets[start:start + chunk],
                         weights, use_reentrant=False)
              for start in range(0, len(targets), chunk)]
    return _weighted_mean(torch.cat(values), sample_weight)


def transition_distillation(heads: torch.Tensor, items: torch.Tensor,
                            strengths: torch.Tensor, temperature: float) -> torch.Tensor:
    """MQSA-TED's transition-aware embedding distillation (Zhu et al., WSDM 2024): the
    cross-entropy from the teacher softmax(t_i / τ) of each head item's global transition
    strengths t_i (n_items,) (its counts of being followed by each item, divided by the
    row's largest) to the student softmax(h_i E^T / τ), averaged over the N heads.

    Args:
        heads: (N, D) input vectors h_i of the head items (dropout applied by the caller).
        items: (n_items, D) item embeddings E.
        strengths: (N, n_items) sparse t_i, values in (0, 1]; a row without transitions is
            the uniform teacher.
        temperature: τ of both softmaxes.

    With p = softmax(t / τ), Σ_j p_j z_j = h · (p E) / τ, and since t is sparse,
    p E = (Σ_j E_j + Σ_j (exp(t_j / τ) - 1) E_j) / Z with Z = n_items + Σ_j (exp(t_j / τ) - 1):
    the teacher is never made dense. The log-partition of the student, logsumexp_j z_j, is
    the chunked cross-entropy towards item 0 plus z_0 (no (N, n_items) matrix is kept).
    """
    strengths = strengths.coalesce()
    excess = torch.sparse_coo_tensor(strengths.indices(),  # exp(t / τ) - 1 on the nonzeros
                                     torch.expm1(strengths.values() / temperature),
                                     strengths.shape, check_invariants=False)
    items = items.to(heads.dtype)
    partition = items.shape[0] + torch.sparse.sum(excess, dim=1).to_dense()  # (N,)
    teacher_mean = (items.sum(dim=0) + torch.sparse.mm(excess.to(heads.dtype), items)
                    ) / partition.unsqueeze(1).to(heads.dtype)  # (N, D) = p E
    scaled = heads / temperature  # (N, D): z = scaled @ E^T
    first = torch.zeros(len(heads), dtype=torch.long, device=heads.device)
    log_partition = full_cross_entropy(scaled, first, items)  # mean of lse(z) - z_0
    return log_partition + (scaled * (items[0] - teacher_mean)).sum(dim=1).mean()
