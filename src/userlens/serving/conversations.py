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
        n_items = self.bundle.conversations.n_items
        return int(item_id) if item_id.isdigit() and int(item_id) < n_items else None

    def start(self, user_id: str | None, history: list[str] | None) -> dict:
        if history is None and user_id is not None:
            history = self.storage.history_items(user_id, self.max_history)
        known = [i for i in (self._item(x) for x in history or []) if i is not None]
        trained = (int(user_id) if user_id is not None and user_id.isdigit()
                   and int(user_id) < len(self.bundle.conversations.estimator.user) else None)
        conversation = self.bundle.conversations.start(trained, known)
        turn = self.bundle.next_turn(conversation)
        conversation_id = uuid.uuid4().hex
        self.storage.put_conversation(conversation_id, user_id,
                                      {"conversation": to_state(conversation), "turn": turn})
        return {"conversation_id": conversation_id, "turn": turn}

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
