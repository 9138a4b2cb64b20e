"""HTTP conversations: ask / answer / recommend / accept, errors, and a restart in between."""

from __future__ import annotations

import numpy as np

from tests.serving.conftest import make_client
from userlens.conversation.bundle import ConversationBundle


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


def test_answers_in_conversations_become_the_profiles_stated_interests(
        ease_artefact, conversation_folder, tmp_path):
    client, storage = make_client(ease_artefact, f"sqlite:///{tmp_path / 's.db'}",
                                  conversation=conversation_folder)
    with client:
        assert client.get("/users/fan/profile").status_code == 404
        cid = client.post("/conversations", json={"user_id": "fan"}).json()["conversation_id"]
        asked = client.post(f"/conversations/{cid}/turns", json={"answer": "yes"}).json()
        assert asked["turn"]["ask"]["attribute_id"] == 2
        client.post(f"/conversations/{cid}/turns", json={"answer": "no"})
        profile = client.get("/users/fan/profile").json()
        stated = {row["attribute"]: row for row in profile["stated"]}
        assert {name: row["answer"] for name, row in stated.items()} == {
            "genre1": "yes", "genre2": "no"}
        assert stated["genre1"]["times"] == 1 and stated["genre1"]["attribute_id"] == 1
        assert "genre1" in profile["summary"]["text"] and "genre2" not in profile["summary"][
            "text"]
        # a later conversation's answer is the one that counts; both are counted
        again = client.post("/conversations", json={"user_id": "fan"}).json()
        client.post(f"/conversations/{again['conversation_id']}/turns", json={"answer": "no"})
        later = client.get("/users/fan/profile").json()
        genre1 = next(row for row in later["stated"] if row["attribute"] == "genre1")
        assert genre1["answer"] == "no" and genre1["times"] == 2
        assert later["version"] != profile["version"]
        assert client.delete("/users/fan").json()["removed"]["conversations"] == 2
        assert client.get("/users/fan/profile").status_code == 404
    storage.close()
