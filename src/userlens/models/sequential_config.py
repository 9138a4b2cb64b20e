"""Typed hyper-parameters of the sequential models (kept free of torch so configs validate
without importing it)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator


def valid_key(k: int) -> str:
    """The key of an epoch record's validation NDCG at cutoff ``k``."""
    return f"valid_ndcg@{k}"


def valid_value(record: dict) -> float | None:
    """An epoch record's validation NDCG (at whichever cutoff selected), None if none."""
    return next((value for key, value in record.items() if key.startswith("valid_ndcg@")),
                None)


class TrainingConfig(BaseModel, frozen=True, extra="forbid", use_attribute_docstrings=True):
    """What the trainer needs (one typed object; :meth:`SequentialConfig.training` makes it)."""

    learning_rate: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    batch_size: int = Field(default=128, gt=0)
    """The global batch: under data parallelism each rank takes its share of every batch."""
    batching: Literal["length", "random"] = "length"
    max_epochs: int = Field(default=200, gt=0)
    patience: int = Field(default=10, ge=1)
    eval_every: int = Field(default=1, gt=0)
    valid_k: int = Field(default=10, gt=0)
    """Cutoff of the validation NDCG that selects the epoch (NDCG@10 unless said)."""
    time_limit_seconds: float | None = Field(default=None, gt=0)
    grad_clip: float | None = Field(default=None, gt=0)
    amp: bool = False


class SequentialConfig(BaseModel, frozen=True, extra="forbid",
           use_attribute_docstrings=True):
    """What every sequential model shares: sizes, optimisation, early stopping, hardware."""

    dim: int = Field(default=64, gt=0)
    """Embedding and hidden size."""
    max_len: int = Field(default=200, gt=1)
    """The last max_len events of each history are used, in training and in scoring."""
    dropout: float = Field(default=0.2, ge=0, lt=1)
    loss: Literal["ce", "sampled_softmax", "bce", "gbce"] = "ce"
    """ce: full softmax over all items; sampled_softmax: n_negatives shared per batch;
    bce: SASRec's original binary loss with n_negatives per position; gbce: gSASRec."""
    n_negatives: int = Field(default=256, gt=0)
    negative_sampler: Literal["uniform", "popularity"] = "uniform"
    """sampled_softmax only; popularity sampling is corrected with log-Q."""
    pad_logit: bool = False
    """ce only: one more class in the softmax whose logit is always 0, the padding token's
    (K&V's SASRec port scores the whole embedding table, padding row included; that row
    stays zero and untrained, so it adds exp(0) to every softmax denominator). Honoured by
    every model whose loss is the configured one, and by the multi-interest max readout;
    ada_retrieval refuses it."""
    gbce_t: float = Field(default=0.75, ge=0, le=1)
    """gSASRec calibration parameter t (gbce only)."""
    logit_bias: bool = True
    """bce/gbce only: learn one global offset added to every training logit, initialised
    where the loss is minimal for zero scores (-log K for BCE, log(β/K) for gBCE). It never
    changes a ranking; without it, hundreds of negatives collapse the model to popularity."""
    learning_rate: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    batch_size: int = Field(default=128, gt=0)
    batching: Literal["length", "random"] = "length"
    """length: batches of similar-length sequences (little padding, faster); random: users in
    random order, as most reference code trains (every batch mixes short and long histories)."""
    loss_mean: Literal["batch", "global"] = "global"
    """global: the batch's sum divided by the average number of targets per batch, so every
    position weighs the same whichever batch it lands in; batch: the mean over a batch's
    target positions (as reference code trains). With length-bucketed batches, "batch" weighs
    a position of a batch of short histories several times more than one of a batch of long
    histories; "global" removes that and keeps bucketing's speed. "global" validated higher in
    every pairing measured (SASRec + CE on ML-1M, Beauty and S3-Rec Beauty, gSASRec, BERT4Rec
    and GRU4Rec on ML-1M, BERT4Rec on Beauty), hence the default."""
    max_epochs: int = Field(default=200, gt=0)
    patience: int = Field(default=10, ge=1)
    """Stop after this many validations without a better validation NDCG@10."""
    eval_every: int = Field(default=1, gt=0)
    """Validate every this many epochs (the best epoch's weights are restored)."""
    valid_k: int = Field(default=10, gt=0)
    """Model selection and early stopping rank by validation NDCG at this cutoff."""
    valid_repeats: Literal["exclude", "include"] = "exclude"
    """Whether validation ranks the user's own items too: set "include" with the
    repeats-included evaluation protocol (an experiment config insists on it)."""
    max_valid_users: int | None = Field(default=None, gt=0)
    """Validate on a fixed random subset of users (None = all) to save time."""
    time_limit_seconds: float | None = Field(default=None, gt=0)
    """Stop training after this wall time (the best weights so far are kept)."""
    grad_clip: float | None = Field(default=None, gt=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = False
    """bfloat16 autocast for the forward pass (useful on GPUs and AMX CPUs)."""
    threads: int | None = Field(default=None, gt=0)
    """torch CPU threads; None = all cores of the machine."""
    inference_batch_size: int = Field(default=512, gt=0)

    @model_validator(mode="after")
    def _pad_logit_needs_ce(self) -> SequentialConfig:
        if self.pad_logit and self.loss != "ce":
            raise ValueError(f"pad_logit applies to loss = \"ce\" only; loss is "
                             f"\"{self.loss}\"")
        return self

    def training(self) -> TrainingConfig:
        """The trainer's settings, taken from this config's fields of the same names."""
        return TrainingConfig(**{name: getattr(self, name)
                                 for name in TrainingConfig.model_fields})


class SASRecConfig(SequentialConfig, frozen=True, extra="forbid"):
    n_blocks: int = Field(default=2, gt=0)
    n_heads: int = Field(default=1, gt=0)
    ff_mult: int = Field(default=1, gt=0)
    """Feed-forward width as a multiple of dim (SASRec uses 1)."""
    layout: Literal["sasrec", "pre_norm", "post_norm"] = "sasrec"
    """Block layout: SASRec's reference code (normalised queries, un-normalised keys and
    values, residuals from the normalised input), standard pre-norm, or post-norm (the
    Transformer/BERT layout, with BERT's LayerNorm on the embeddings)."""
    activation: Literal["relu", "gelu"] = "relu"
    init_std: float = Field(default=0.02, gt=0)
    scale_embeddings: bool = True
    """Multiply input item embeddings by sqrt(dim), as SASRec does."""
    positions: Literal["from_end", "from_start"] = "from_end"
    """Count learned positions from the latest event (left-padded SASRec) or from the first
    of the last max_len events (the right-padded port Klenitskiy & Vasilev trained)."""
    attention_init: Literal["normal", "xavier"] = "normal"
    """q/k/v weights: normal(init_std) like the rest, or Xavier-uniform as torch's
    MultiheadAttention (used by the SASRec PyTorch ports) initialises them."""
    norm_eps: float = Field(default=1e-5, gt=0)
    """Epsilon of every LayerNorm (torch's default; the SASRec PyTorch ports use 1e-8)."""

    @model_validator(mode="after")
    def _heads_divide_dim(self) -> SASRecConfig:
        if self.dim % self.n_heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by n_heads ({self.n_heads})")
        return self


class BERT4RecConfig(SASRecConfig, frozen=True, extra="forbid"):
    n_heads: int = Field(default=2, gt=0)
    ff_mult: int = Field(default=4, gt=0)
    layout: Literal["sasrec", "pre_norm", "post_norm"] = "pre_norm"
    """Pre-norm by default (what our ML-1M numbers were measured with); "post_norm" is the
    layout of BERT4Rec's paper and code and of the HuggingFace BERT that K&V trained."""
    activation: Literal["relu", "gelu"] = "gelu"
    scale_embeddings: bool = False
    dropout: float = Field(default=0.1, ge=0, lt=1)
    mask_prob: float = Field(default=0.2, gt=0, lt=1)
    """Share of positions masked in the cloze task (0.2 for ML-1M in the paper)."""
    last_item_mask_share: float = Field(default=0.0, ge=0, le=1)
    """Share of training sequences that mask only their last item (mimics inference)."""


class GRU4RecConfig(SequentialConfig, frozen=True, extra="forbid"):
    n_layers: int = Field(default=1, gt=0)


class ContrastiveConfig(SASRecConfig, frozen=True, extra="forbid"):
    """What the intent-contrastive models share: the next-item loss's weight, the k-means
    intents and the InfoNCE similarity."""

    rec_weight: float = Field(default=1.0, ge=0)
    """Weight of the next-item loss (the reference code's rec_weight)."""
    n_intents: int = Field(default=256, gt=1)
    """k of the k-means over the training representations, re-run before every epoch."""
    temperature: float = Field(default=1.0, gt=0)
    similarity: Literal["dot", "cos"] = "dot"


class ICSRecConfig(ContrastiveConfig, frozen=True, extra="forbid"):
    """ICSRec (Qin et al., WSDM 2024): SASRec + CE plus two intent-contrastive losses over
    the training prefixes (the paper's subsequences). Defaults: the authors' Beauty script
    (λ 0.3, β 0.1, 256 intents, temperature 1, dot similarity, false-negative mask)."""

    positions: Literal["from_end", "from_start"] = "from_start"
    """Must be "from_start": a prefix's representation is then the full sequence's hidden
    state at the prefix's last position (causal attention), so one pass serves all prefixes."""
    coarse_weight: float = Field(default=0.3, ge=0)
    """λ: coarse-grain intent contrast, two prefixes followed by the same item as positives."""
    fine_weight: float = Field(default=0.1, ge=0)
    """β: fine-grain intent contrast, each prefix against its k-means intent."""
    false_negative_mask: bool = True
    """Leave pairs with the same target item (coarse) or intent (fine) out of the negatives."""
    cl_positions: int | None = Field(default=None, gt=0)
    """Contrast at most this many random prefixes per sequence and batch (None = all)."""

    @model_validator(mode="after")
    def _prefixes_need_positions_from_start(self) -> ICSRecConfig:
        if self.positions != "from_start":
            raise ValueError("icsrec needs positions = \"from_start\" (prefix representations "
                             "are read off the full sequence's pass)")
        return self


class ICLRecConfig(ContrastiveConfig, frozen=True, extra="forbid"):
    """ICLRec (Chen et al., WWW 2022): SASRec + CE plus CL4SRec's sequence contrast between
    two augmented views and intent contrast of each view against the sequence's k-means
    intent. Defaults: the authors' Yelp script (both weights 0.1, 256 intents, temperature
    1, dot similarity, crop 0.2, mask 0.7, reorder 0.2)."""

    instance_weight: float = Field(default=0.1, ge=0)
    """Sequence-level contrast between two random views of the same history (cf_weight)."""
    intent_weight: float = Field(default=0.1, ge=0)
    """Each view against the intent of its history (intent_cf_weight)."""
    crop_ratio: float = Field(default=0.2, gt=0, le=1)
    mask_ratio: float = Field(default=0.7, ge=0, lt=1)
    reorder_ratio: float = Field(default=0.2, ge=0, le=1)


class RepeatACTRConfig(SASRecConfig, frozen=True, extra="forbid"):
    """SASRec + CE whose scores add an ACT-R repeat term on the user's own items:
    b + w · ln Σ_j Δ_j^(-d), with b, w and d learned with the rest of the model."""

    initial_decay: float = Field(default=0.5, gt=0)
    """Start of the learned decay d (ACT-R's usual 0.5)."""
    max_items: int = Field(default=50_000, gt=0)
    """The repeat term is added to dense (target positions x items) logits; larger
    catalogues are refused rather than run out of memory."""


class TextSASRecConfig(SASRecConfig, frozen=True, extra="forbid"):
    """SASRec whose item vectors come from sentence embeddings of the items' texts through
    UniSRec's mixture of whitening experts (+ an ID embedding on trained items)."""

    text_model: str = "all-minilm-l6-v2"
    """Sentence model: the packaged all-MiniLM-L6-v2, or a sentence-transformers folder."""
    n_experts: int = Field(default=8, gt=0)
    """Whitening experts in the adaptor (UniSRec: 8)."""
    adaptor_dropout: float = Field(default=0.2, ge=0, lt=1)
    """Dropout on the text vectors before the adaptor (UniSRec: 0.2)."""
    item_ids: bool = True
    """Add a learned ID embedding on the items seen in training (UniSRec's transductive
    setting); False scores every item from its text alone (inductive)."""
    unseen_negatives: bool = False
    """Keep items without training events in the training loss as negatives. By default
    they are left out: they stand for items added after training, and as negatives the
    loss would only push their text vectors away from every user (with the popularity
    sampler of sampled_softmax every item stays)."""
    text_dim: int | None = Field(default=None, gt=0)
    """Width of the text vectors: filled in by fit (saved models need it to load)."""


class ComiRecConfig(SASRecConfig, frozen=True, extra="forbid"):
    """ComiRec-SA (Cen et al., KDD 2020): K interest vectors, each an attention-weighted sum
    of the history's item representations. Training scores each target with the interest
    nearest to it; serving scores an item with its best interest. Defaults: the paper's
    (4 interests, an extractor 4 x dim wide, item + position embeddings)."""

    n_interests: int = Field(default=4, gt=0)
    """K: how many interest vectors each user gets."""
    encoder: Literal["embeddings", "transformer"] = "embeddings"
    """What the extractor attends over: ComiRec-SA's item + position embeddings, or the
    hidden states of SASRec's causal transformer (n_blocks, n_heads, layout, ... apply)."""
    attention_mult: int = Field(default=4, gt=0)
    """Width of the extractor's tanh layer as a multiple of dim (ComiRec-SA: 4)."""
    short_term: bool = False
    """Add the encoder's state after the last event (SASRec's user vector, with the
    transformer encoder) as one more interest: K + 1 vectors, the newest event's view beside
    the K pooled ones (not in ComiRec-SA)."""
    readout: Literal["hard", "max"] = "hard"
    """Training readout. hard: the paper's, each target scored by the interest nearest to
    its embedding, with the configured loss; max: every item scored by its best interest,
    as serving scores it (loss "ce" over all items, or "sampled_softmax" over the shared
    negatives); an interest that hard selection never picks is then still penalised for
    the items it over-scores. "ce" with max costs K full softmaxes per target."""
    positions: Literal["from_end", "from_start"] = "from_start"
    """Must be "from_start": every training prefix is read off one pass of the sequence."""

    @model_validator(mode="after")
    def _prefixes_need_positions_from_start(self) -> ComiRecConfig:
        if self.positions != "from_start":
            raise ValueError("comirec needs positions = \"from_start\" (prefix interests are "
                             "read off the full sequence's pass)")
        if self.readout == "max" and self.loss not in ("ce", "sampled_softmax"):
            raise ValueError(f"readout = \"max\" needs a softmax loss (\"ce\" or "
                             f"\"sampled_softmax\"); loss is \"{self.loss}\"")
        return self


class DESMILConfig(ComiRecConfig, frozen=True, extra="forbid"):
    """DESMIL (Zhang et al.): ComiRec-SA whose training samples are reweighted, per batch, so
    that the captured interests are independent under the weights (HSIC on random Fourier
    features)."""

    rff_features: int = Field(default=16, gt=0)
    """Random Fourier features per interest for the HSIC."""
    rff_bandwidth: float = Field(default=1.0, gt=0)
    """Scale of the Gaussian kernel the random features approximate."""
    reweight_steps: int = Field(default=10, ge=0)
    """Adam steps on the sample weights per batch (0 = plain ComiRec-SA)."""
    reweight_learning_rate: float = Field(default=0.1, gt=0)
    max_sample_weight: float = Field(default=10.0, gt=1)
    """Cap on one sample's weight (the weights average 1)."""


class HCNConfig(ComiRecConfig, frozen=True, extra="forbid"):
    """HCN (Yuan et al., "Hierarchical Multi-Interest Co-Network For Coarse-Grained
    Ranking", 2022), as its abstract describes it (the paper's text and code are not
    reachable here): K long-term interest centers updated level by level from the events
    assigned to them, short-term interests extracted the same way from the newest events,
    and a co-interest network that lets each side attend to the other. ``attention_mult``
    sizes the feed-forward layer of every center update."""

    n_levels: int = Field(default=2, gt=0)
    """Levels of the hierarchy: each reassigns the events to the centers the level below
    produced and moves every center to what was assigned to it."""
    short_window: int = Field(default=5, gt=0)
    """The newest events the short-term interests are extracted from."""
    n_short_interests: int = Field(default=1, gt=0)
    """Short-term interest vectors (each user gets n_interests + n_short_interests)."""
    center_dropout: float = Field(default=0.0, ge=0, lt=1)
    """Dropout on what each center update adds (the pooled events and the feed-forward
    step), training only."""
    center_update: Literal["mean", "mass"] = "mean"
    """What a level adds to a center: ``"mean"``, the share-weighted mean of its events
    (a center holding a sliver of one event gets as large a step as one holding fifty);
    ``"mass"``, that mean scaled by m / (1 + m) for the mass m assigned to it (the
    weighted sum over 1 + m), so a center few events chose barely moves."""

    @model_validator(mode="after")
    def _own_short_term(self) -> HCNConfig:
        if self.short_term:
            raise ValueError("hcn extracts its own short-term interests (n_short_interests, "
                             "short_window): short_term = true is ComiRec's and does not apply")
        return self


class AdaRetrievalConfig(SASRecConfig, frozen=True, extra="forbid"):
    """Ada-Retrieval (Li et al., AAAI 2024): the backbone recommends in ``rounds`` rounds of
    ``round_size`` items; each round's user vector is recomputed with what the earlier
    rounds selected (item and user representation adapters). Defaults: the authors' script
    (5 rounds of 20 items, loss weight 0.3 per further round, selection on the whole list)."""

    backbone: Literal["sasrec", "gru4rec"] = "sasrec"
    """The sequential model the rounds run: SASRec (n_blocks, n_heads, layout, ... apply)
    or GRU4Rec (n_layers applies)."""
    n_layers: int = Field(default=1, gt=0)
    """GRU layers (gru4rec backbone only)."""
    rounds: int = Field(default=5, gt=1)
    round_size: int = Field(default=20, gt=1)
    """Items each round adds to the list (the list holds rounds x round_size)."""
    round_weight: float = Field(default=0.3, ge=0)
    """λ: round t's loss is weighted λ^t (the authors' "lambda")."""
    mask_selected: bool = False
    """Round t's softmax leaves out the items earlier rounds selected (a prefix whose target
    is already listed adds nothing to it): the round is trained for what it adds to the
    list. False: every round's softmax is over all items (the authors' loss)."""
    adapt_max_epochs: int = Field(default=50, gt=0)
    """Second stage: epochs of training with the adapters, from the trained backbone."""
    adapt_learning_rate: float | None = Field(default=None, gt=0)
    """Second-stage learning rate (None = learning_rate)."""
    adapt_samples: int = Field(default=1, gt=0)
    """Second stage: training prefixes drawn per user and epoch (a random target position
    each; every round needs its own forward pass, so a pass per prefix)."""
    backbone_from: str | None = None
    """A saved backbone (a ``sasrec`` or ``gru4rec`` model directory, e.g. an artefact's
    ``runs/NAME/sasrec``) trained on the same training split with the same architecture: the
    first stage is then loaded instead of trained (the authors' two-step workflow)."""
    adapt_valid_k: int = Field(default=50, gt=0)
    """Second stage: the epoch is selected on validation NDCG at this cutoff (the list's
    first round_size items are the first round's, so NDCG@10 cannot see the later rounds;
    the authors select on HR@50)."""

    @model_validator(mode="after")
    def _full_softmax(self) -> AdaRetrievalConfig:
        if self.loss != "ce":
            raise ValueError(f"ada_retrieval trains each round with the full softmax: loss "
                             f"must be \"ce\", not \"{self.loss}\"")
        if self.pad_logit:
            raise ValueError("ada_retrieval's round losses have no padding class: pad_logit "
                             "must be false")
        return self


class MQSATEDConfig(SASRecConfig, frozen=True, extra="forbid"):
    """MQSA-TED (Zhu et al., WSDM 2024): SASRec with a second, long-query self-attention
    stack (queries = the mean of the last ``query_window`` inputs) mixed in by ``alpha``, and
    the item embeddings distilled towards the training sequences' global item-to-item
    transitions. Defaults: the authors' Beauty settings (L = 3, α = 0.5, λ = 0.1, τ = 0.1)."""

    layout: Literal["sasrec"] = "sasrec"
    """Both stacks use SASRec's block layout (the long queries replace its normed input)."""
    query_window: int = Field(default=3, ge=1)
    """L: each long query averages its position and the L - 1 before it (1 = SASRec's)."""
    alpha: float = Field(default=0.5, ge=0, le=1)
    """Weight of the short-query stack; 1 - alpha goes to the long-query stack."""
    distill_weight: float = Field(default=0.1, ge=0)
    """λ of the transition distillation loss (0 = MQSA alone)."""
    distill_temperature: float = Field(default=0.1, gt=0)
    """τ of the teacher and student softmaxes."""
    transition_span: int = Field(default=1, ge=1)
    """Transitions counted: item n followed by item n + s for s = 1..span (the authors'
    time_span, 1 by default)."""


class PISAConfig(SASRecConfig, frozen=True, extra="forbid"):
    """PISA (Tran et al., RecSys 2024) at the level of single events: SASRec's state fused
    with a long-term vector that attends over the user's own items with ACT-R activations
    (base-level learning + partial matching) as attention weights."""

    initial_decay: float = Field(default=0.5, gt=0)
    """Start of the learned base-level decay d (ACT-R's usual 0.5)."""
    partial_matching: bool = True
    """Add ACT-R's partial matching (similarity of each remembered item to the current
    one) to the activation; False: base-level learning alone."""
    long_weight: float = Field(default=0.5, ge=0)
    """Start of the long-term vector's learned extra share of the user vector (the
    authors' fixed lbda_ls)."""
    skip: bool = True
    """Add the current item's embedding to the user vector (PISA's skip connection), with a
    learned share starting at 1; False: none."""
