"""HTTP conversations: ask / answer / recommend / accept, errors, and a restart in between."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conversation.test_conversation import flat_estimator, write_crs
from tests.serving.conftest import make_client
from userlens.conversation.bundle import ConversationBundle
from userlens.conversation.data import load_crs
from userlens.conversation.policies import MaxEntropy
from userlens.conversation.session import Conversations


@pytest.fixture(scope="module")
def conversation_folder(tmp_path_factory):
    """16 items; attribute 1 on items 0-7, 2 on 0-1, 3 on 8-9; max-entropy with lists of 2
    over flat scores: the first question is attribute 1 (it halves the catalogue)."""
    root = tmp_path_factory.mktemp("crs")
    attrs = {i: [0] + ([1] if i < 8 else []) + ([2] if i < 2 else [])
             + ([3] if 8 <= i < 10 else []) for i in range(16)}
    folder = write_crs(root / "data", attrs, 4, {s: {0: [1, 2], 1: [3]} for s in
                                                 ("train", "valid", "test")})
    data = load_crs(folder)
    conversations = Conversations.from_data(data, flat_estimator(2, 16, 4), list_size=2)
    bundle = ConversationBundle(conversations, MaxEntropy(), data.attribute_names, max_turns=15)
    bundle.save(root / "served")
    return root / "served"


def test_a_conversation_asks_narrows_recommends_and_survives_a_restart(
        ease_artefact, conversation_folder, tmp_path):
    url = f"sqlite:///{tmp_path / 'events.db'}"
    client, storage = make_client(ease_artefact, url, conversation=conversation_folder)
    with client:
        started = client.post("/conversations", json={"history": ["3"]})
        assert started.status_code == 200, started.text
        body = started.json()
        assert body["turn"] == {"ask": {"attribute_id": 1, "name": "genre1"}}
        cid = body["conversation_id"]
        yes = client.post(f"/conversations/{cid}/turns", json={"answer": "yes"}).json()
        assert yes["turn"]["ask"]["attribute_id"] == 2  # splits items 0-7 into 2 / 6
    storage.close()
    # a new process on the same database continues the conversation
    client, storage = make_client(ease_artefact, url, conversation=conversation_folder)
    with client:
        listed = client.post(f"/conversations/{cid}/turns", json={"answer": "yes"}).json()
        items = [row["item_id"] for row in listed["turn"]["recommend"]]
        assert sorted(items) == ["0", "1"]
        assert all("genre2" in row["reason"] for row in listed["turn"]["recommend"])
        wrong = client.post(f"/conversations/{cid}/turns", json={"answer": "yes"})
        assert wrong.status_code == 422 and "recommended a list" in wrong.text
        outside = client.post(f"/conversations/{cid}/turns", json={"accept": "9"})
        assert outside.status_code == 422
        done = client.post(f"/conversations/{cid}/turns", json={"accept": "1"}).json()
        assert done["turn"] == {"done": {"accepted": "1", "reason": "accepted"}}
        ended = client.post(f"/conversations/{cid}/turns", json={"reject": True})
        assert ended.status_code == 409
        assert client.post("/conversations/nope/turns",
                           json={"answer": "no"}).status_code == 404
        both = client.post(f"/conversations/{cid}/turns", json={"answer": "no", "reject": True})
        assert both.status_code == 422
    storage.close()


def test_a_rejected_list_leaves_the_candidates_and_a_user_id_reads_stored_history(
        ease_artefact, conversation_folder, tmp_path):
    client, storage = make_client(ease_artefact, f"sqlite:///{tmp_path / 'e.db'}",
                                  conversation=conversation_folder)
    with client:
        cid = client.post("/conversations", json={"user_id": "someone"}).json()[
            "conversation_id"]
        for answer in ("yes", "yes"):
            turn = client.post(f"/conversations/{cid}/turns", json={"answer": answer}).json()
        first = {row["item_id"] for row in turn["turn"]["recommend"]}
        after = client.post(f"/conversations/{cid}/turns", json={"reject": True}).json()
        assert "recommend" not in after["turn"] or \
            not first & {row["item_id"] for row in after["turn"]["recommend"]}
        erased = client.delete("/users/someone")
        assert erased.status_code == 200 and erased.json()["removed"]["conversations"] == 1
    storage.close()


def test_bundle_round_trip_keeps_the_graph_and_scores(conversation_folder):
    bundle = ConversationBundle.load(conversation_folder)
    assert bundle.policy_name == "max_entropy"
    assert bundle.conversations.item_attributes.shape == (16, 4)
    conversation = bundle.conversations.start(None, [1])
    assert np.isfinite(bundle.conversations.attribute_entropy(conversation)[1])
