"""Property-based checks of the whole API against its own OpenAPI spec (schemathesis).

Every operation is called with generated requests, valid and invalid; a 5xx, an undocumented
status code or a body that breaks the declared schema fails the test.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.serving.conftest import make_client

API_KEY = "schemathesis-key"
EXAMPLES = int(os.environ.get("USERLENS_SCHEMATHESIS_EXAMPLES", "40"))
"""Examples per operation; 400 each passed before this was committed."""


@pytest.fixture(scope="module")
def api_schema(ease_artefact, conversation_folder, tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('schemathesis') / 'events.db'}"
    client, storage = make_client(ease_artefact, url, api_key=API_KEY,
                                  conversation=conversation_folder)
    with client:
        client.post("/events", headers={"X-API-Key": API_KEY}, json={"events": [
            {"user_id": "u1", "item_id": f"m{i}"} for i in range(3)]})
        yield schemathesis.openapi.from_asgi("/openapi.json", client.app)
    storage.close()


def test_api_conforms_to_its_openapi_spec(api_schema):
    # schemathesis' pytest fixture integration does not run on pytest 9; drive its
    # strategies with hypothesis directly, one operation after the other.
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 13
    assert {operation.path for operation in operations} >= {
        "/conversations", "/conversations/{conversation_id}/turns"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
        def check(case):
            case.call_and_validate(headers={"X-API-Key": API_KEY})

        check()
