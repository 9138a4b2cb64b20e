"""The experiment config: a TOML file validated by pydantic, paths resolved once.

A config names its data, filters, split, evaluation protocol and models. Every table is a
frozen pydantic model with ``extra="forbid"``, so a misspelled key is an error that names
it. Relative paths are resolved here, against the config file's own folder, and nowhere
else. This module sits above ``models/`` because it validates model names and parameters.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

from userlens.data.readers import FORMATS, ColumnMap
from userlens.data.semantics import EventSemantics
from userlens.llm import LLMConfig
from userlens.models.registry import MODEL_NAMES, config_class

DataFormat = Literal[FORMATS]  # the readers' one list of formats


class ConfigError(ValueError):
    """The config file is invalid; the message names the offending key."""


class DataConfig(BaseModel, frozen=True, extra="forbid",
           use_attribute_docstrings=True):
    path: str | None = None
    """Event log file or folder; relative paths are read from the config file's folder.
    Without path and dataset, the data is a DataFrame given to ``userlens.run``."""
    dataset: str | None = None
    """A registered dataset name instead of a path (see ``userlens datasets list``)."""
    format: DataFormat | None = None
    columns: ColumnMap = ColumnMap()
    separator: str | None = None
    items: str | None = None
    """Optional item catalogue file (CSV/TSV/Parquet/JSONL with an ``item_id`` column)."""
    item_columns: dict[str, str] = {}
    """Catalogue column renames, e.g. ``{ movieId = "item_id", genres = "categories" }``."""
    new_items: Literal["drop", "keep"] = "drop"
    """Items of the catalogue file without any event: dropped, or kept in the item
    vocabulary after the filters (new items: text models score them from their text, and
    the artefact and the service can recommend them)."""
    min_rating: float | None = None
    """Keep events with value >= min_rating (explicit ratings -> implicit positives)."""
    repeats: Literal["all", "first", "last"] = "all"
    event_weights: dict[str, float] = {}
    negative_event_types: list[str] = []
    min_user_interactions: int = Field(default=0, ge=0)
    min_item_interactions: int = Field(default=0, ge=0)
    iterative_k_core: bool = True

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if self.path is not None and self.dataset is not None:
            raise ValueError("give one of data.path or data.dataset, not both")
        if self.new_items == "keep" and self.items is None:
            raise ValueError('data.new_items = "keep" takes the new items from the item '
                             "catalogue: give data.items too")
        return self

    def semantics(self, known_types: tuple[str, ...] | None = None) -> EventSemantics:
        """What each event type means, as training applied it (saved with the artefact)."""
        return EventSemantics(known_types=list(known_types) if known_types else None,
                              weights=dict(self.event_weights),
                              negative_types=list(self.negative_event_types))


class SplitConfig(BaseModel, frozen=True, extra="forbid",
           use_attribute_docstrings=True):
    method: Literal["leave_one_out", "temporal", "user_holdout"] = "leave_one_out"
    validation: bool = True
    cut: int | None = None
    test_fraction: float = Field(default=0.2, gt=0, lt=1)
    valid_fraction: float = Field(default=0.0, ge=0, lt=1)
    cold_users: Literal["drop", "keep"] = "drop"
    cold_items: Literal["drop", "keep"] = "drop"


class Protocol(BaseModel, frozen=True, extra="forbid",
           use_attribute_docstrings=True):
    """How test items are ranked; the label appears in every output."""

    kind: Literal["full", "sampled"] = "full"
    n_negatives: int = Field(default=100, gt=0)
    """Sampled protocol only: negatives ranked against each user's relevant items."""
    sampler: Literal["uniform", "popularity"] = "uniform"
    repeats: Literal["exclude", "include"] = "exclude"
    """``exclude``: the user's history items are removed from the ranking, so a target the
    user already had cannot be found and is dropped (counted in every report).
    ``include``: nothing is removed from the ranking and repeat targets count."""

    def label(self) -> str:
        base = "full" if self.kind == "full" else f"sampled-{self.sampler}-{self.n_negatives}"
        return base if self.repeats == "exclude" else f"{base}+repeats"


class EvaluationConfig(BaseModel, frozen=True, extra="forbid",
           use_attribute_docstrings=True):
    metrics: list[str] = ["hr@10", "ndcg@10"]
    protocol: Protocol = Protocol()
    batch_size: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _known_metrics(self) -> EvaluationConfig:
        # Imported when a config is validated, not at module load: evaluation/ imports this
        # module, and the metric registry is the one list of metric names.
        from userlens.evaluation.metrics import parse_metric

        for metric in self.metrics:
            parse_metric(metric)
        return self


class SearchRange(BaseModel, frozen=True, extra="forbid", use_attribute_docstrings=True):
    """One hyper-parameter's search space for ``userlens tune``: ``{ low, high, log, step }``
    (integers when low and high are both integers) or ``{ choices = [...] }``."""

    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    """Sample on a log scale (learning rates, regularisation)."""
    step: float | int | None = Field(default=None, gt=0)
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _range_or_choices(self) -> SearchRange:
        if self.choices is not None:
            if self.low is not None or self.high is not None or not self.choices:
                raise ValueError("give either choices = [...] (not empty) or low and high")
        elif self.low is None or self.high is None or not self.low < self.high:
            raise ValueError("give low < high (or choices = [...])")
        elif self.log and self.low <= 0:
            raise ValueError("a log-scale range needs low > 0")
        elif self.log and self.step is not None:
            raise ValueError("give log or step, not both")
        return self

    @property
    def integer(self) -> bool:
        return isinstance(self.low, int) and isinstance(self.high, int) and \
            not isinstance(self.step, float)

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is one this space can draw (step grids are not checked)."""
        if self.choices is not None:
            return value in self.choices
        return isinstance(value, int | float) and not isinstance(value, bool) and \
            self.low <= value <= self.high and (not self.integer or float(value).is_integer())

    def edges(self) -> list[Any]:
        """The values a config must accept: the range's ends, or every choice."""
        return list(self.choices) if self.choices is not None else [self.low, self.high]


class ModelEntry(BaseModel, frozen=True, extra="forbid",
           use_attribute_docstrings=True):
    name: str
    label: str | None = None
    """Name in the leaderboard and artefact folder (default: the model name)."""
    params: dict[str, Any] = {}
    search: dict[str, SearchRange] = {}
    """``[models.search]``: the space ``userlens tune`` searches, one range per parameter
    (``run`` ignores it and trains ``params`` as given)."""

    @model_validator(mode="after")
    def _known_model(self) -> ModelEntry:
        if self.name not in MODEL_NAMES:
            raise ValueError(f"unknown model '{self.name}'; known models: "
                             f"{', '.join(MODEL_NAMES)}")
        params_class = config_class(self.name)
        try:
            params_class(**self.params)
        except ValidationError as error:
            problems = "; ".join(f"params.{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                 for e in error.errors())
            raise ValueError(f"model '{self.name}': {problems}") from None
        for key, space in self.search.items():
            if key not in params_class.model_fields:
                raise ValueError(f"model '{self.name}': search.{key} is not one of its "
                                 "parameters")
            for value in space.edges():
                try:
                    params_class(**{**self.params, key: value})
                except ValidationError as error:
                    raise ValueError(f"model '{self.name}': search.{key} = {value!r} is not "
                                     f"a valid value ({error.errors()[0]['msg']})") from None
        return self

    @property
    def display(self) -> str:
        return self.label or self.name


class ProfilesConfig(BaseModel, frozen=True, extra="forbid", use_attribute_docstrings=True):
    """``[profiles]``: how ``userlens profiles export`` builds each user's profile."""

    summary: Literal["template", "llm"] = "template"
    """``llm`` writes each summary with the ``[llm]`` endpoint (checked, template fallback)."""
    fields: list[str] | None = None
    """Catalogue columns to report interests in (default: every categorical column)."""
    item_noun: str = "item"
    """What the items are, for LLM prompts ("movie", "product")."""
    max_evidence: int = Field(default=10, gt=0)


class TextAuditConfig(BaseModel, frozen=True, extra="forbid", use_attribute_docstrings=True):
    """``[audit.privacy.text]``: personal attributes inferred from what users wrote."""

    path: str
    """A SynthPAI folder (``user_bot_profiles_300.json`` and ``comments_label_eval.jsonl``)."""
    attributes: list[str] = ["sex", "age", "relationship_status", "income_level",
                             "education", "city_country"]
    llm_users: int = Field(default=0, ge=0)
    """Users the language-model attacker reads (0: no LLM attack; it is slow on a CPU)."""
    llm_attributes: list[str] = ["sex", "age", "relationship_status", "income_level"]
    max_chars: int = Field(default=2000, gt=0)
    """Characters of a user's comments the language model reads (its context is small)."""


class PrivacyAuditConfig(BaseModel, frozen=True, extra="forbid",
                         use_attribute_docstrings=True):
    """``[audit.privacy]``: attackers and mitigations of ``userlens audit privacy``."""

    classifiers: list[Literal["logistic", "boosting"]] = ["logistic", "boosting"]
    profile: bool = True
    """Also attack each user's profile (facets and summary text)."""
    mitigate: str | None = None
    """The attribute mitigations target (default: the first binary one)."""
    retrain: list[str] = ["ease", "itemknn", "als", "bpr", "most_popular"]
    """Models refitted on mitigated training data; the others (slow sequence models) keep
    their weights and score the mitigated histories."""
    obfuscation: list[float] = [0.01, 0.02, 0.05, 0.1]
    """BlurMe: items of the other group added, as a share of each history's length."""
    drop: list[int] = [10, 30, 100, 300]
    """Numbers of most revealing items removed from every history."""
    inlp: list[int] = [1, 4, 16, 32, 64]
    """Rounds of iterative null-space projection of the models' user representations."""
    text: TextAuditConfig | None = None


class FairnessAuditConfig(BaseModel, frozen=True, extra="forbid",
                          use_attribute_docstrings=True):
    """``[audit.fairness]``: the re-rankers ``userlens audit fairness`` measures."""

    rerankers: list[str] = ["calibrated:0.5", "calibrated:0.9", "mmr:0.3", "exposure:0.5"]
    """``NAME:LAMBDA`` with NAME calibrated, mmr or exposure (the serving ``rerank`` syntax)."""
    candidates: int = Field(default=100, gt=0)
    """The model's top-N each re-ranker picks its 10 from."""


class ManipulationAuditConfig(BaseModel, frozen=True, extra="forbid",
                              use_attribute_docstrings=True):
    """``[audit.manipulation]``: the fake-user attacks ``userlens audit manipulation`` runs."""

    attacks: list[Literal["random", "average", "bandwagon", "segment", "sequential",
                          "camouflage"]] = [
        "random", "average", "bandwagon", "segment", "sequential", "camouflage"]
    shares: list[float] = [0.01, 0.03, 0.05]
    """Fake users as a share of the real users."""
    targets: int = Field(default=5, gt=0)
    """Unpopular items every fake user pushes."""
    filler: int | None = Field(default=None, gt=0)
    """Other items per fake user (default: the real users' median history length, <= 100)."""
    models: list[str] = []
    """Labels of the config's models to attack (default: all)."""
    shares_by_model: dict[str, list[float]] = {}
    """Shares for one model instead of ``shares`` (a slow model at the goal's 3 % only)."""
    attacks_by_model: dict[str, list[Literal["random", "average", "bandwagon", "segment",
                                             "sequential", "camouflage"]]] = {}
    """Attacks for one model instead of ``attacks`` (a slow model on the strongest only)."""
    defences: list[Literal["reweight"]] = ["reweight"]
    """Defences each attacked model is also retrained with: ``reweight`` weighs each training
    user by 1 - the detector's fake probability (LoRec); models that cannot weigh users
    (``Capability.USER_WEIGHTS``) are skipped."""


class AuditConfig(BaseModel, frozen=True, extra="forbid", use_attribute_docstrings=True):
    """``[audit]``: what ``userlens audit privacy|fairness|manipulation`` measure."""

    attributes: list[str] = ["gender", "age", "occupation"]
    """User-table columns the audits read (ML-1M: gender, age, occupation)."""
    folds: int = Field(default=5, ge=2)
    privacy: PrivacyAuditConfig = PrivacyAuditConfig()
    fairness: FairnessAuditConfig = FairnessAuditConfig()
    manipulation: ManipulationAuditConfig = ManipulationAuditConfig()


# --------------------------------------------------------------------- conversation

PolicyName = Literal["abs_greedy", "max_entropy", "scpr", "ear"]


class EstimatorConfig(BaseModel, frozen=True, extra="forbid", use_attribute_docstrings=True):
    dim: int = Field(default=64, gt=0)
    learning_rate: float = Field(default=0.01, gt=0)
    l2: float = Field(default=1e-5, ge=0)
    """Adam weight decay on every embedding."""
    batch_size: int = Field(default=1024, gt=0)
    max_epochs: int = Field(default=50, gt=0)
    patience: int = Field(default=5, gt=0)
    """Epochs without a better validation score before training stops."""
    attribute_weight: float = Field(default=1.0, ge=0)
    """Weight of the attribute BPR loss next to the item loss."""
    max_known: int = Field(default=8, gt=0)
    """Most confirmed attributes sampled per training pair."""
    item_content: bool = True
    """Item vector = own embedding + mean content embedding of its attributes (cold items
    get a vector); False is EAR's FM (item embedding alone)."""
    item_identity: Literal["all", "seen"] = "all"
    """With "seen" only items in a training pair have an own embedding, the others are
    scored from their content alone (needs item_content); with "all" every item has one."""
    identity_dropout: float = Field(default=0.0, ge=0, lt=1)
    """Training only: each scored item (positive or negative) loses its own embedding with
    this probability, so the content part alone learns to rank (DropoutNet's input dropout,
    Volkovs et al., NeurIPS 2017); with item_identity = "seen" that is how never-seen items
    are scored. Needs item_content."""
    aware_negative: Literal["one", "all"] = "one"
    """The attribute-aware negative item: "one" (EAR) an item sharing one attribute with
    the positive; "all" an item carrying every attribute sampled as confirmed (the
    candidates a conversation in that state ranks the target among)."""
    threads: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _identity_needs_content(self) -> EstimatorConfig:
        if self.item_identity == "seen" and not self.item_content:
            raise ValueError('item_identity = "seen" scores unseen items from their content: '
                             "it needs item_content = true")
        if self.identity_dropout > 0 and not self.item_content:
            raise ValueError("identity_dropout trains items to be scored from their content: "
                             "it needs item_content = true")
        return self


class PolicyTraining(BaseModel, frozen=True, extra="forbid", use_attribute_docstrings=True):
    episodes: int = Field(default=3000, gt=0)
    """Simulated training conversations (training pairs drawn at random)."""
    eval_every: int = Field(default=500, gt=0)
    valid_pairs: int = Field(default=500, gt=0)
    """Validation pairs played at each check (a fixed sample)."""
    hidden: int = Field(default=64, gt=0)
    learning_rate: float = Field(default=1e-3, gt=0)
    epsilon: float = Field(default=0.1, ge=0, le=1)
    """DQN exploration rate while training (SCPR)."""
    gamma: float = Field(default=0.999, gt=0, le=1)
    pretrain_episodes: int = Field(default=0, ge=0)
    """EAR: conversations played by max-entropy whose moves the policy imitates before
    policy gradient (EAR pre-trains so); 0: policy gradient from scratch."""
    pretrain_epochs: int = Field(default=5, gt=0)


class ConversationConfig(BaseModel, frozen=True, extra="forbid", use_attribute_docstrings=True):
    policies: list[PolicyName] = ["abs_greedy", "max_entropy", "scpr", "ear"]
    max_turns: int = Field(default=15, gt=0)
    list_size: int = Field(default=10, gt=0)
    estimator: EstimatorConfig = EstimatorConfig()
    training: PolicyTraining = PolicyTraining()
    reflection_rate: float = Field(default=0.0, ge=0)
    """EAR's reflection: step size moving the user vector away from a rejected list
    (0: rejected items only leave the candidates)."""
    drop_rejected_attributes: bool = False
    """Also drop the candidates carrying an attribute the user said no to. The papers do
    not; with a simulator that answers exactly it is a different (easier) protocol."""
    exclude_history: bool = False
    """Never list an item the user already has (their stored events; in ``userlens run``
    their training pairs, and at test time their validation pairs too): a conversation
    looks for something new. The published splits hold every (user, item) pair in one
    split only, so a target is never among them; the papers do not say whether they
    excluded them."""
    prior: ModelEntry | None = None
    """``[conversation.prior]``: a userlens model (name, params) fitted on the training
    pairs whose scores of the user's whole history are added to the estimator's item scores
    (standardised per user, times ``prior_weight``); the papers do not do this."""
    prior_weight: float = Field(default=0.0, ge=0)
    test_pairs: int | None = Field(default=None, gt=0)
    """Play a seeded sample of this many test pairs (default: all of them)."""
    tag_names: str | None = None
    """hetrec2011 ``tags.dat`` naming the attributes (default: looked for beside the data)."""


class ExperimentConfig(BaseModel, frozen=True, extra="forbid",
           use_attribute_docstrings=True):
    name: str
    seed: int = 0
    data: DataConfig
    split: SplitConfig = SplitConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    models: list[ModelEntry] = []
    """``[[models]]``: at least one, unless the config is a ``[conversation]`` experiment."""
    profiles: ProfilesConfig = ProfilesConfig()
    audit: AuditConfig = AuditConfig()
    llm: LLMConfig = LLMConfig()
    """``[llm] base_url, model, api_key_env``: an OpenAI-compatible endpoint (default: the
    embedded SmolLM2 model)."""
    conversation: ConversationConfig | None = None
    """``[conversation]``: train and evaluate conversational recommendation (EAR / SCPR) with
    the user simulator on a conversational dataset instead of fitting ``[[models]]``."""

    @model_validator(mode="after")
    def _unique_labels(self) -> ExperimentConfig:
        if not self.models and self.conversation is None:
            raise ValueError("models: give at least one [[models]] entry (or a "
                             "[conversation] section)")
        labels = [m.display for m in self.models]
        duplicated = sorted({x for x in labels if labels.count(x) > 1})
        if duplicated:
            raise ValueError(f"models {duplicated} appear twice; give each a distinct 'label'")
        if self.evaluation.protocol.repeats == "include":
            for entry in self.models:
                fields = config_class(entry.name).model_fields
                if "valid_repeats" in fields and entry.params.get(
                        "valid_repeats", fields["valid_repeats"].default) != "include":
                    raise ValueError(
                        f"model '{entry.display}' would validate with the user's own items "
                        "excluded while the protocol includes repeats; set its "
                        "params.valid_repeats = \"include\"")
        manipulation = self.audit.manipulation
        unknown = sorted((set(manipulation.models) | set(manipulation.shares_by_model)
                          | set(manipulation.attacks_by_model)) - set(labels))
        if unknown:
            raise ValueError(f"audit.manipulation names models {unknown} the config does not "
                             f"have; its models are {labels}")
        return self


def _resolve(value: str | None, folder: Path) -> str | None:
    if value is None:
        return None
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (folder / path).resolve())


def validate_config(raw: dict[str, Any], *, source: str = "config",
                    folder: Path | None = None) -> ExperimentConfig:
    """Validate a config given as a dict (``folder`` resolves relative paths)."""
    try:
        config = ExperimentConfig.model_validate(raw)
    except ValidationError as error:
        problems = []
        for e in error.errors():
            key = ".".join(str(p) for p in e["loc"]) or "(top level)"
            message = e["msg"].removeprefix("Value error, ")
            if e["type"] == "extra_forbidden":
                message = "unknown key (typo?)"
            problems.append(f"{key}: {message}")
        raise ConfigError(f"{source}: invalid config\n  " + "\n  ".join(problems)) from None
    if folder is not None:
        data = config.data.model_copy(update={"path": _resolve(config.data.path, folder),
                                              "items": _resolve(config.data.items, folder)})
        config = config.model_copy(update={"data": data})
        if config.conversation is not None and config.conversation.tag_names is not None:
            config = config.model_copy(update={"conversation": config.conversation.model_copy(
                update={"tag_names": _resolve(config.conversation.tag_names, folder)})})
        text = config.audit.privacy.text
        if text is not None:
            privacy = config.audit.privacy.model_copy(update={
                "text": text.model_copy(update={"path": _resolve(text.path, folder)})})
            config = config.model_copy(update={"audit": config.audit.model_copy(
                update={"privacy": privacy})})
    return config


def load_config(path: str | Path) -> ExperimentConfig:
    """Parse and validate a TOML experiment config; errors name the bad key.

    Relative ``data.path`` and ``data.items`` are resolved against the config file's
    folder, so a config means the same thing from any working directory.
    """
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML ({error})") from None
    return validate_config(raw, source=str(path), folder=path.resolve().parent)
