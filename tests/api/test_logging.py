"""Logs are JSON lines with request ids, and never hold an API key or a trait value."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from api.gunicorn_conf import invalid_request_kind
from shared.logs import HANDLER_NAME, configure_logging
from tests.support.receiver import Tenant, basic, gz, jdump

TRAIT = "zofia-secret-trait-7781"
PROPERTY = "property-value-5512"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Every log record of the process, at DEBUG, as the receiver's JSON lines."""
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = configure_logging("DEBUG", stream)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def test_configure_logging_writes_one_json_object_a_line(captured: io.StringIO):
    log = logging.getLogger("api.test")
    log.info("hello %s", "world", extra={"request_id": "r-1", "message_id": "m-1"})
    log.warning("with a key", extra={"api_key": "ud_secret", "traits": {"email": TRAIT}})
    lines = captured.getvalue().splitlines()
    first, second = (json.loads(line) for line in lines)
    assert first["msg"] == "hello world"
    assert first["level"] == "INFO"
    assert first["logger"] == "api.test"
    assert first["request_id"] == "r-1" and first["message_id"] == "m-1"
    assert first["ts"].endswith("Z")
    assert second["api_key"] == "[redacted]" and second["traits"] == "[redacted]"
    assert "ud_secret" not in captured.getvalue() and TRAIT not in captured.getvalue()


def test_configure_logging_twice_keeps_one_handler(captured: io.StringIO):
    handler = configure_logging("INFO", io.StringIO())
    try:
        names = [h.get_name() for h in logging.getLogger().handlers]
        assert names.count(HANDLER_NAME) == 1
    finally:
        logging.getLogger().removeHandler(handler)


def test_the_receiver_never_logs_a_key_or_a_trait_value(
    captured: io.StringIO, client, tenant: Tenant, monkeypatch
):
    tenant.set_secret("webhook-secret-value")
    key = tenant.api_key
    wrong_key = "ud_wrong_key_never_to_be_logged"
    call = {
        "type": "identify",
        "userId": "u1",
        "traits": {"email": TRAIT, "nested": {"deep": TRAIT}},
        "properties": {"p": PROPERTY},
        "messageId": "m-logged-ok",
    }
    bad_call = {**call, "timestamp": "not a time", "event": TRAIT}
    requests = [
        ("/v1/identify", jdump(call), basic(key)),
        ("/v1/identify", jdump({**call, "writeKey": key}), {}),
        ("/v1/batch", jdump({"batch": [call, bad_call, TRAIT], "writeKey": key}), {}),
        ("/v1/batch", gz(jdump({"batch": [call]})), {**basic(key), "Content-Encoding": "gzip"}),
        ("/v1/identify", jdump(bad_call), basic(key)),
        ("/v1/track", jdump(call), basic(key)),  # type mismatch
        ("/v1/identify", jdump(call), basic(wrong_key)),
        ("/v1/identify", jdump({**call, "writeKey": wrong_key}), {}),
        ("/v1/identify", b"{" + TRAIT.encode(), basic(key)),
        ("/webhook", jdump(call), {**basic(key), "X-Signature": "0" * 40}),
        ("/v1/identify", jdump(call), {**basic(key), "Origin": f"https://{TRAIT}.net"}),
    ]
    statuses = []
    for path, data, headers in requests:
        if path == "/v1/identify" and "Origin" in headers:
            tenant.add_domain("shop.example.com")
            client.application.extensions["userdest"].auth.clear()
        statuses.append(client.post(path, data=data, headers=headers).status_code)

    # And a bug whose exception message quotes a trait value.
    def boom(*args, **kwargs):
        raise ValueError(f"cannot handle {TRAIT}")

    monkeypatch.setattr("api.views.check_calls", boom)
    statuses.append(client.post("/v1/identify", data=jdump(call), headers=basic(key)).status_code)

    assert statuses == [200, 200, 200, 200, 400, 400, 403, 403, 400, 401, 403, 500]
    output = captured.getvalue()
    lines = output.splitlines()
    assert len(lines) >= len(statuses)  # something was logged for every request
    records = [json.loads(line) for line in lines]
    assert any(r.get("message_id") == "m-logged-ok" for r in records)
    assert all(r.get("request_id") for r in records if r["logger"].startswith("api."))
    for secret in (key, wrong_key, TRAIT, PROPERTY, "webhook-secret-value"):
        assert secret not in output, secret
    assert key[:12] not in output


@pytest.mark.parametrize("quiet", [True, False])
def test_gunicorn_builds_no_access_line_its_configuration_drops(quiet: bool) -> None:
    """The receiver's gunicorn settings drop access lines; building them cost a share of every
    request, so the logger must not build them at all (gunicorn's own does)."""
    from gunicorn import glogging
    from gunicorn.config import Config

    from api import gunicorn_conf

    cfg = Config()
    cfg.set("logconfig_dict", gunicorn_conf.logconfig_dict)
    logger = gunicorn_conf.Logger(cfg) if quiet else glogging.Logger(cfg)
    assert logger.access_log_enabled is not quiet
    assert gunicorn_conf.logger_class == "api.gunicorn_conf.Logger"


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        ("Invalid HTTP request line: 'GET /?writeKey=k HTTP/1.1 x'", "Invalid HTTP request line"),
        ("Invalid HTTP header name: 'X k'", "Invalid HTTP header name"),
        ("Request Line is too large (9000 > 4094)", "Request Line is too large"),
        ("Proxy request from '203.0.113.7' not allowed", "Proxy request from"),
        ("'", "unparsed"),
    ],
)
def test_gunicorn_parse_errors_keep_their_kind_only(error: str, kind: str):
    assert invalid_request_kind(error) == kind
