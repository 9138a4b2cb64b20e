"""One conversation's state and the operations every policy shares.

A conversation holds the user's vector (their trained vector, or one built from an
anonymous history), the attributes confirmed and rejected so far, the items rejected, and the
candidate items: every item carrying all confirmed attributes and not yet rejected (the path
CPR walks on the item-attribute graph). ``Conversations`` owns the graph and the estimator:
it ranks candidates, scores attributes by weighted entropy (SCPR), and applies answers,
including EAR's reflection (a rejected list pushes the user vector away from it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import sparse

from userlens.config import ConversationConfig
from userlens.conversation.data import CRSData
from userlens.conversation.estimator import Estimator

# per-turn outcomes in the conversation history (the state SCPR and EAR give their policies)
ASK_YES, ASK_NO, REC_NO = 1.0, -1.0, -2.0


@dataclass
class Conversation:
    user: int | None
    user_vector: np.ndarray
    candidates: np.ndarray  # bool (n_items,)
    confirmed: list[int] = field(default_factory=list)
    rejected_attributes: list[int] = field(default_factory=list)
    rejected_items: list[int] = field(default_factory=list)
    outcomes: list[float] = field(default_factory=list)
    history: list[int] = field(default_factory=list)

    @property
    def turn(self) -> int:
        return len(self.outcomes)

    @property
    def asked(self) -> set[int]:
        return set(self.confirmed) | set(self.rejected_attributes)


class Conversations:
    """Item-attribute graph + estimator: start conversations, rank, score attributes, update."""

    def __init__(self, item_attributes: sparse.csr_matrix, estimator: Estimator, *,
                 list_size: int = 10, reflection_rate: float = 0.0,
                 prior: np.ndarray | None = None, prior_weight: float = 0.0,
                 drop_rejected_attributes: bool = False, exclude_history: bool = False) -> None:
        self.item_attributes = item_attributes.tocsr()
        self.attribute_items = item_attributes.T.tocsr()
        self.estimator = estimator
        self.list_size = list_size
        self.reflection_rate = reflection_rate
        self.prior = prior  # (n_users, n_items) standardised scores of a userlens model
        self.prior_weight = prior_weight
        self.drop_rejected_attributes = drop_rejected_attributes
        self.exclude_history = exclude_history

    @classmethod
    def from_data(cls, data: CRSData, estimator: Estimator, **options) -> Conversations:
        return cls(data.item_attributes, estimator, **options)

    @classmethod
    def from_config(cls, data: CRSData, estimator: Estimator, config: ConversationConfig,
                    prior: np.ndarray | None = None) -> Conversations:
        """The conversations a ``[conversation]`` section describes."""
        return cls(data.item_attributes, estimator, list_size=config.list_size,
                   reflection_rate=config.reflection_rate, prior=prior,
                   prior_weight=config.prior_weight,
                   drop_rejected_attributes=config.drop_rejected_attributes,
                   exclude_history=config.exclude_history)

    @property
    def n_items(self) -> int:
        return self.item_attributes.shape[0]

    @property
    def n_attributes(self) -> int:
        return self.item_attributes.shape[1]

    def start(self, user: int | None = None, history: list[int] | None = None,
              attribute: int | None = None) -> Conversation:
        """A new conversation; ``history``: the items the user already has (a user the
        estimator does not know is scored from them; with ``exclude_history`` none of them
        is ever listed); ``attribute``: one the user names up front (the simulated user of
        the papers opens with one attribute of the item they want)."""
        history = [int(i) for i in history or [] if 0 <= int(i) < self.n_items]
        conversation = Conversation(user, self.estimator.user_vector(user, history),
                                    np.ones(self.n_items, dtype=bool), history=history)
        if self.exclude_history and history:  # looking for something they do not have yet
            conversation.candidates[history] = False
        if attribute is not None:
            self.confirm(conversation, attribute)
        return conversation

    def items_with(self, attribute: int) -> np.ndarray:
        ptr = self.attribute_items.indptr
        return self.attribute_items.indices[ptr[attribute]:ptr[attribute + 1]]

    def confirm(self, conversation: Conversation, attribute: int) -> None:
        conversation.confirmed.append(int(attribute))
        keep = np.zeros(self.n_items, dtype=bool)
        keep[self.items_with(attribute)] = True
        conversation.candidates &= keep

    def item_scores(self, conversation: Conversation) -> np.ndarray:
        scores = self.estimator.item_scores(conversation.user_vector, conversation.confirmed)
        if self.prior is not None and self.prior_weight and conversation.user is not None \
                and 0 <= conversation.user < len(self.prior):
            scores = scores + self.prior_weight * self.prior[conversation.user]
        return scores

    def candidate_ids(self, conversation: Conversation) -> np.ndarray:
        return np.flatnonzero(conversation.candidates)

    def recommend(self, conversation: Conversation, k: int | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best candidates (default the list size) and their scores."""
        k = k or self.list_size
        candidates = self.candidate_ids(conversation)
        if len(candidates) == 0:
            return candidates, np.zeros(0, dtype=np.float32)
        scores = self.item_scores(conversation)[candidates]
        top = np.argsort(-scores, kind="stable")[:k]
        return candidates[top], scores[top]

    def attribute_entropy(self, conversation: Conversation) -> np.ndarray:
        """SCPR's weighted entropy of each attribute over the candidates (weights: the
        sigmoid of each candidate's score); attributes asked already, and those no candidate
        carries, get -inf."""
        candidates = self.candidate_ids(conversation)
        entropy = np.full(self.n_attributes, -np.inf)
        if len(candidates) == 0:
            return entropy
        scores = self.item_scores(conversation)[candidates].astype(np.float64)
        weights = 1.0 / (1.0 + np.exp(-scores))
        mass = self.item_attributes[candidates].T @ weights  # (n_attributes,)
        prob = np.clip(mass / weights.sum(), 1e-12, 1 - 1e-12)
        values = -(prob * np.log2(prob) + (1 - prob) * np.log2(1 - prob))
        adjacent = mass > 0
        entropy[adjacent] = values[adjacent]
        asked = list(conversation.asked)
        entropy[asked] = -np.inf
        return entropy

    def best_question(self, conversation: Conversation) -> int | None:
        entropy = self.attribute_entropy(conversation)
        best = int(np.argmax(entropy))
        return None if not np.isfinite(entropy[best]) else best

    def answer(self, conversation: Conversation, attribute: int, yes: bool) -> None:
        if yes:
            self.confirm(conversation, attribute)
            conversation.outcomes.append(ASK_YES)
        else:
            conversation.rejected_attributes.append(int(attribute))
            conversation.outcomes.append(ASK_NO)
            if self.drop_rejected_attributes:
                conversation.candidates[self.items_with(attribute)] = False

    def reject(self, conversation: Conversation, items: np.ndarray) -> None:
        """The user turned the list down: drop its items; reflection moves the user vector
        down the gradient of sum_r -log(1 - sigmoid(y_r)) over the rejected items."""
        items = np.asarray(items, dtype=np.int64)
        conversation.candidates[items] = False
        conversation.rejected_items.extend(int(i) for i in items)
        conversation.outcomes.append(REC_NO)
        if self.reflection_rate > 0 and len(items):
            scores = self.estimator.item_scores(conversation.user_vector,
                                                conversation.confirmed)[items]
            grad = (1.0 / (1.0 + np.exp(-scores))) @ self.estimator.item[items]
            conversation.user_vector = conversation.user_vector \
                - self.reflection_rate * grad / len(items)

    def accept(self, conversation: Conversation) -> None:
        conversation.outcomes.append(0.0)
