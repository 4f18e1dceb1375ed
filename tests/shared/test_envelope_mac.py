"""Envelopes are signed with ENVELOPE_SECRET over everything they hold, and verified against the
very object a worker will act on."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from shared.envelope import (
    MAC_FIELD,
    Envelope,
    EnvelopeKeys,
    SignatureError,
    UnsignedEnvelope,
)

NEW = "n" * 32
OLD = "o" * 32

ENVELOPE = Envelope(
    app_id=3,
    received_at="2026-11-28T09:15:01.031Z",
    request_id="req-1",
    calls=[{"type": "identify", "userId": "u1", "traits": {"plan": "pro", "logins": 2.5}}],
    message_ids=["m-1"],
    key_id="key_1",
    remote_addr="198.51.100.23",
    source="http",
    sent_at="2026-11-28T09:15:01.020Z",
    defaults={"context": {"ip": "192.0.2.1"}},
    rejected=[{"index": 1, "call": {"type": "x"}, "errors": [{"code": "c", "message": "m"}]}],
).to_dict()


def signed(keys: EnvelopeKeys, envelope: dict[str, Any] = ENVELOPE) -> dict[str, Any]:
    """The envelope as a worker parses it from a message."""
    return dict(orjson.loads(keys.seal(envelope)))


def test_a_sealed_envelope_is_its_json_with_the_mac_last_and_verifies() -> None:
    keys = EnvelopeKeys([NEW])
    sealed = keys.seal(ENVELOPE)
    data = orjson.loads(sealed)
    assert list(data) == [*ENVELOPE, MAC_FIELD]
    assert {k: v for k, v in data.items() if k != MAC_FIELD} == ENVELOPE
    assert sealed.startswith(orjson.dumps(ENVELOPE)[:-1])
    keys.verify(data)
    assert Envelope.from_dict(data).to_dict() == ENVELOPE


def test_sealing_again_replaces_the_mac() -> None:
    keys = EnvelopeKeys([NEW])
    once = signed(keys)
    assert signed(keys, once) == once


ALTERATIONS = {
    "app_id": 4,
    "source": "webhook",
    "key_id": "key_2",
    "received_at": "2020-01-01T00:00:00.000Z",
    "request_id": "req-2",
    "remote_addr": "203.0.113.1",
    "sent_at": None,
    "defaults": {"context": {"ip": "192.0.2.2"}},
    "calls": [{"type": "delete", "userId": "u1"}],
    "message_ids": ["m-2"],
    "rejected": [],
    "v": 2,
}


@pytest.mark.parametrize("field", sorted(ALTERATIONS))
def test_any_field_altered_fails_verification(field: str) -> None:
    keys = EnvelopeKeys([NEW])
    data = signed(keys)
    data[field] = ALTERATIONS[field]
    with pytest.raises(SignatureError) as err:
        keys.verify(data)
    assert err.value.code == "bad_envelope_mac"


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["calls"][0]["traits"].__setitem__("plan", "free"),
        lambda d: d["calls"][0]["traits"].__setitem__("logins", 2.5000001),
        lambda d: d["calls"][0].__setitem__("extra", None),
        lambda d: d["calls"].append({"type": "page"}),
        lambda d: d.__setitem__("added", 1),
        lambda d: d.pop("rejected"),
    ],
)
def test_a_change_deep_inside_or_an_added_or_dropped_field_fails(change: Any) -> None:
    keys = EnvelopeKeys([NEW])
    data = signed(keys)
    change(data)
    with pytest.raises(SignatureError):
        keys.verify(data)


def test_fields_in_another_order_fail_even_with_the_same_values() -> None:
    keys = EnvelopeKeys([NEW])
    data = signed(keys)
    with pytest.raises(SignatureError):
        keys.verify(dict(reversed(list(data.items()))))


@pytest.mark.parametrize("mac", [None, ...])
def test_an_envelope_without_a_mac_is_unsigned(mac: Any) -> None:
    data = copy.deepcopy(ENVELOPE)
    if mac is None:
        data[MAC_FIELD] = None
    with pytest.raises(UnsignedEnvelope) as err:
        EnvelopeKeys([NEW]).verify(data)
    assert err.value.code == "unsigned_envelope"


@pytest.mark.parametrize("mac", ["", "hs256:", "hs256:é", 42, ["x"], "hs256:" + "A" * 43])
def test_a_malformed_or_made_up_mac_is_a_bad_envelope_mac(mac: Any) -> None:
    data = {**ENVELOPE, MAC_FIELD: mac}
    with pytest.raises(SignatureError) as err:
        EnvelopeKeys([NEW]).verify(data)
    assert err.value.code == "bad_envelope_mac"


def test_a_mac_made_with_another_secret_is_a_bad_envelope_mac() -> None:
    with pytest.raises(SignatureError):
        EnvelopeKeys([NEW]).verify(signed(EnvelopeKeys([OLD])))


def test_a_value_that_reserializes_differently_never_verifies() -> None:
    """What kombu's JSON decoder would make of a signed string (a datetime) or of `null` (NaN)
    is not what was signed: the comparison is with the object, serialized again."""
    keys = EnvelopeKeys([NEW])
    data = signed(keys, {**ENVELOPE, "sent_at": {"__type__": "datetime", "__value__": "x"}})
    data["sent_at"] = "x"
    with pytest.raises(SignatureError):
        keys.verify(data)


def test_rotation_signs_with_the_first_secret_and_verifies_with_any() -> None:
    rotating = EnvelopeKeys([NEW, OLD])
    rotating.verify(signed(EnvelopeKeys([OLD])))  # queued before the rotation
    rotating.verify(signed(EnvelopeKeys([NEW])))
    made = signed(rotating)
    EnvelopeKeys([NEW]).verify(made)
    with pytest.raises(SignatureError):
        EnvelopeKeys([OLD]).verify(made)
    with pytest.raises(SignatureError):  # the old secret dropped: its envelopes no longer pass
        EnvelopeKeys([NEW]).verify(signed(EnvelopeKeys([OLD])))


def test_no_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="ENVELOPE_SECRET"):
        EnvelopeKeys([])
