"""Conversations over HTTP: a served :class:`~userlens.conversation.bundle.ConversationBundle`
plus the database that keeps each conversation's state between turns.

Each turn is one primary-key read, the policy's move, and one upsert: any worker can answer
any turn, and a restart loses nothing. A conversation starts from the user's stored
history (their events in the service database) or from an anonymous history; a user the
conversation model was trained on also brings their trained vector.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from userlens.conversation.bundle import ConversationBundle, from_state, to_state
from userlens.profiles.types import Stated
from userlens.serving.storage import Storage


class UnknownConversation(KeyError):
    pass


class ConversationEnded(ValueError):
    pass


class ConversationService:
    def __init__(self, bundle: ConversationBundle, storage: Storage, *,
                 max_history: int = 1000) -> None:
        self.bundle = bundle
        self.storage = storage
        self.max_history = max_history

    @classmethod
    def load(cls, folder: str | Path, storage: Storage, **options) -> ConversationService:
        return cls(ConversationBundle.load(folder), storage, **options)

    def _item(self, item_id: str) -> int | None:
        index = _index(item_id)
        return index if index is not None and index < self.bundle.conversations.n_items \
            else None

    def start(self, user_id: str | None, history: list[str] | None) -> dict:
        if history is None and user_id is not None:
            history = self.storage.history_items(user_id, self.max_history)
        known = [i for i in (self._item(x) for x in history or []) if i is not None]
        trained = _index(user_id) if user_id is not None else None
        if trained is not None and trained >= len(self.bundle.conversations.estimator.user):
            trained = None
        conversation = self.bundle.conversations.start(trained, known)
        turn = self.bundle.next_turn(conversation)
        conversation_id = uuid.uuid4().hex
        self.storage.put_conversation(conversation_id, user_id,
                                      {"conversation": to_state(conversation), "turn": turn})
        return {"conversation_id": conversation_id, "turn": turn}

    def stated(self, user_id: str, limit: int = 100) -> list[Stated]:
        """The attributes the user answered about in their newest ``limit`` conversations,
        each with its latest answer (a conversation's answers carry its last update time),
        newest first: the profile's ``stated``."""
        found: dict[int, dict] = {}
        names = self.bundle.attribute_names
        for state, updated_ms in self.storage.conversations_of(user_id, limit):
            answers = state["conversation"]
            for answer, key in (("yes", "confirmed"), ("no", "rejected_attributes")):
                for attribute in answers.get(key, []):
                    entry = found.setdefault(int(attribute), {
                        "answer": answer, "times": 0, "last_stated": updated_ms / 1000})
                    entry["times"] += 1
        out = []
        for attribute, entry in found.items():
            name = names[attribute] if 0 <= attribute < len(names) else f"attribute {attribute}"
            when = "liked" if entry["answer"] == "yes" else "did not want"
            out.append(Stated(
                attribute=name, attribute_id=attribute, **entry,
                explanation=f"Asked about {name!r} {entry['times']} time(s) in conversations; "
                            f"last said they {when} it."))
        return sorted(out, key=lambda s: -s.last_stated)

    def reply(self, conversation_id: str, reply: dict) -> dict:
        stored = self.storage.conversation(conversation_id)
        if stored is None:
            raise UnknownConversation(conversation_id)
        turn = stored["turn"]
        if "done" in turn:
            raise ConversationEnded("this conversation has ended")
        conversation = from_state(self.bundle.conversations, stored["conversation"])
        self.bundle.apply(conversation, turn, reply)  # ValueError: reply does not fit the turn
        if reply.get("accept") is not None:
            turn = {"done": {"accepted": str(reply["accept"]), "reason": "accepted"}}
        else:
            turn = self.bundle.next_turn(conversation)
        self.storage.put_conversation(conversation_id, None,
                                      {"conversation": to_state(conversation), "turn": turn})
        return {"conversation_id": conversation_id, "turn": turn}


def _index(text: str) -> int | None:
    """The conversation data's integer id written as ``text`` (ASCII digits only: "²" is a
    digit to ``str.isdigit`` but not to ``int``), else None."""
    return int(text) if text.isascii() and text.isdigit() else None
