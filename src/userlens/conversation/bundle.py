"""A servable conversation: what ``userlens run`` leaves in a ``[conversation]`` run folder
and what the service and ``userlens converse`` load (no training data needed, no pickle).

Files: ``conversation.json`` (attribute names, list size, turn limit, the policy to serve,
the protocol options), ``graph.npz`` (the item-attribute CSR matrix), ``estimator/`` and
``policy-<name>.npz`` for a learned policy. Item and user ids are the dataset's integer ids
written as strings.

A conversation's state is plain JSON (``to_state`` / ``from_state``), so it can live in the
service database between turns and survive a restart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import sparse

from userlens.conversation.estimator import Estimator
from userlens.conversation.policies import LearnedPolicy, make_policy
from userlens.conversation.session import Conversation, Conversations
from userlens.conversation.simulator import Ask

MANIFEST = "conversation.json"


class BundleError(ValueError):
    """A conversation folder is incomplete or inconsistent."""


@dataclass
class ConversationBundle:
    conversations: Conversations
    policy: object
    attribute_names: list[str]
    max_turns: int = 15

    @property
    def policy_name(self) -> str:
        return self.policy.name

    # ------------------------------------------------------------------ disk
    def save(self, folder: str | Path, *, extra: dict | None = None) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        graph = self.conversations.item_attributes.tocsr()
        np.savez(folder / "graph.npz", indptr=graph.indptr, indices=graph.indices,
                 shape=np.asarray(graph.shape))
        self.conversations.estimator.save(folder / "estimator")
        if isinstance(self.policy, LearnedPolicy):
            self.policy.save(folder)
        (folder / MANIFEST).write_text(json.dumps({
            "policy": self.policy_name, "max_turns": self.max_turns,
            "list_size": self.conversations.list_size,
            "reflection_rate": self.conversations.reflection_rate,
            "drop_rejected_attributes": self.conversations.drop_rejected_attributes,
            "exclude_history": self.conversations.exclude_history,
            "attribute_names": self.attribute_names, **(extra or {})}))

    @classmethod
    def load(cls, folder: str | Path) -> ConversationBundle:
        folder = Path(folder)
        if not (folder / MANIFEST).is_file():
            raise BundleError(f"{folder}: no {MANIFEST} (run a config with a [conversation] "
                              "section; its run folder is what is served)")
        meta = json.loads((folder / MANIFEST).read_text())
        with np.load(folder / "graph.npz", allow_pickle=False) as arrays:
            shape = tuple(int(x) for x in arrays["shape"])
            graph = sparse.csr_matrix((np.ones(len(arrays["indices"]), np.float32),
                                       arrays["indices"], arrays["indptr"]), shape=shape)
        estimator = Estimator.load(folder / "estimator")
        if estimator.item.shape[0] != shape[0] or estimator.attribute.shape[0] != shape[1] \
                or len(meta["attribute_names"]) != shape[1]:
            raise BundleError(f"{folder}: graph {shape}, estimator and names disagree")
        conversations = Conversations(
            graph, estimator, list_size=meta["list_size"],
            reflection_rate=meta["reflection_rate"],
            drop_rejected_attributes=meta["drop_rejected_attributes"],
            exclude_history=meta.get("exclude_history", False))  # bundles before it: off
        policy = make_policy(meta["policy"], n_attributes=shape[1], max_turns=meta["max_turns"])
        if isinstance(policy, LearnedPolicy):
            policy.load(folder)
        return cls(conversations, policy, meta["attribute_names"], meta["max_turns"])

    # ------------------------------------------------------------------ turns
    def next_turn(self, conversation: Conversation) -> dict:
        """The policy's next move as the API shows it: a question or a scored list."""
        if conversation.turn >= self.max_turns:
            return {"done": {"accepted": None, "reason": "turn limit"}}
        action = self.policy(self.conversations, conversation, self.max_turns)
        if isinstance(action, Ask):
            return {"ask": {"attribute_id": int(action.attribute),
                            "name": self.attribute_names[action.attribute]}}
        items, scores = self.conversations.recommend(conversation)
        confirmed = set(conversation.confirmed)
        rows = []
        for item, score in zip(items, scores, strict=True):
            shared = [self.attribute_names[a] for a in
                      self.conversations.item_attributes[int(item)].indices if a in confirmed]
            reason = ("has " + ", ".join(shared) + " (you said yes)" if shared
                      else "best match for your history")
            rows.append({"item_id": str(int(item)), "score": float(score), "reason": reason})
        return {"recommend": rows}

    def apply(self, conversation: Conversation, turn: dict, reply: dict) -> None:
        """Apply the user's reply to ``turn``; raises ValueError when they do not match."""
        if "ask" in turn:
            if reply.get("answer") not in ("yes", "no"):
                raise ValueError("the last turn asked a question: reply with "
                                 "{\"answer\": \"yes\"} or {\"answer\": \"no\"}")
            self.conversations.answer(conversation, turn["ask"]["attribute_id"],
                                      reply["answer"] == "yes")
            return
        if "recommend" in turn:
            listed = [row["item_id"] for row in turn["recommend"]]
            if reply.get("reject"):
                self.conversations.reject(conversation, np.asarray(listed, dtype=np.int64))
                return
            if reply.get("accept") is not None:
                if str(reply["accept"]) not in listed:
                    raise ValueError(f"accept: item {reply['accept']!r} is not in the list "
                                     "just recommended")
                self.conversations.accept(conversation)
                return
            raise ValueError("the last turn recommended a list: reply with "
                             "{\"accept\": ITEM_ID} or {\"reject\": true}")
        raise ValueError("this conversation has ended")


def to_state(conversation: Conversation) -> dict:
    return {"user": conversation.user,
            "user_vector": [float(x) for x in conversation.user_vector],
            "confirmed": conversation.confirmed,
            "rejected_attributes": conversation.rejected_attributes,
            "rejected_items": conversation.rejected_items,
            "outcomes": conversation.outcomes, "history": conversation.history}


def from_state(conversations: Conversations, state: dict) -> Conversation:
    """Rebuild a conversation: candidates follow from the answers (deterministically)."""
    conversation = conversations.start(state["user"], state["history"])
    conversation.user_vector = np.asarray(state["user_vector"], dtype=np.float32)
    for attribute in state["confirmed"]:
        conversations.confirm(conversation, attribute)
    conversation.rejected_attributes = list(state["rejected_attributes"])
    if conversations.drop_rejected_attributes:
        for attribute in conversation.rejected_attributes:
            conversation.candidates[conversations.items_with(attribute)] = False
    conversation.rejected_items = list(state["rejected_items"])
    conversation.candidates[np.asarray(conversation.rejected_items, dtype=np.int64)] = False
    conversation.outcomes = list(state["outcomes"])
    return conversation
