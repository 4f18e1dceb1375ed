"""/openapi.json describes exactly the routes the app serves."""

from __future__ import annotations

import re
from pathlib import Path

from flask import Flask

import api
import shared.calls
from api.openapi import CALL_ERROR_CODES, ERROR_CODES
from tests.support.receiver import basic


def served_routes(app: Flask) -> set[tuple[str, str]]:
    out = set()
    for rule in app.url_map.iter_rules():
        for method in rule.methods or ():
            if method in ("HEAD", "OPTIONS"):  # added by Flask to every route
                continue
            path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
            out.add((method.lower(), path))
    return out


def documented_routes(document: dict) -> set[tuple[str, str]]:
    return {
        (method, path)
        for path, operations in document["paths"].items()
        for method in operations
        if method in ("get", "post", "put", "patch", "delete")
    }


def test_openapi_lists_exactly_the_app_routes(client, receiver_app: Flask):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json
    assert document["openapi"].startswith("3.1")
    assert documented_routes(document) == served_routes(receiver_app)
    assert ("post", "/v1/track") in served_routes(receiver_app)
    assert ("get", "/metrics") in served_routes(receiver_app)


def test_every_operation_is_complete(client):
    document = client.get("/openapi.json").json
    ids = []
    for operations in document["paths"].values():
        for operation in operations.values():
            ids.append(operation["operationId"])
            assert operation["responses"]["200"]["description"]
            for response in operation["responses"].values():
                for media in response.get("content", {}).values():
                    ref = media["schema"].get("$ref")
                    if ref:
                        assert ref.split("/")[-1] in document["components"]["schemas"]
    assert len(ids) == len(set(ids))


def test_every_code_the_receiver_raises_is_documented():
    # The receiver's own modules, and the call contract it applies.
    modules = [*Path(api.__file__).parent.glob("*.py"), Path(shared.calls.__file__)]
    source = "\n".join(p.read_text() for p in modules)
    raised = set(re.findall(r'Refusal\(\s*(\d{3}),\s*"([a-z_]+)"', source))
    raised |= {(400, f"invalid_{name}") for name in ("context", "integrations")}  # f-string codes
    assert len(raised) > 15
    for status, code in raised:
        if status == "500":
            continue  # internal_error answers a bug, never an input
        assert code in ERROR_CODES[int(status)], (status, code)
    per_call = set(re.findall(r'\berror\(\s*"([a-z_]+)"', source))
    per_call |= {f"invalid_{name}" for name in ("traits", "properties", "context")}
    assert per_call == set(CALL_ERROR_CODES)


def test_answered_codes_are_documented(client, tenant):
    documented = {code for codes in ERROR_CODES.values() for code in codes}
    seen = {
        client.post("/v1/track", data=b"{", headers=basic(tenant.api_key)).json["code"],
        client.post("/v1/track", data=b"{}").json["code"],
        client.post("/v1/track", data=b"{}", headers=basic("ud_nope")).json["code"],
        client.post("/v1/track", data=b"{}", headers=basic(tenant.api_key)).json["code"],
    }
    assert seen == {"invalid_json", "missing_api_key", "invalid_api_key", "missing_user_id"}
    assert seen <= documented
