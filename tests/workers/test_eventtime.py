"""Event time, rule by rule (docs/contract.md, event time)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from shared.eventtime import event_time
from tests.support.fixtures import fixture

RECEIVED = datetime(2026, 11, 28, 9, 0, 6, tzinfo=UTC)


def t(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# (call, batch sentAt, expected); the receiver received everything at RECEIVED (09:00:06).
CASES: list[Any] = [
    pytest.param(
        {
            "timestamp": "2026-11-28T08:59:00Z",
            "originalTimestamp": "2026-11-28T07:00:00Z",
            "sentAt": "2026-11-28T07:00:05Z",
        },
        None,
        t("2026-11-28T08:59:00Z"),
        id="rule1-both-times-take-timestamp-never-correct-twice",
    ),
    pytest.param(
        {"timestamp": "2026-11-28T08:59:00Z", "originalTimestamp": "2026-11-28T07:00:00Z"},
        t("2026-11-28T07:00:05Z"),
        t("2026-11-28T08:59:00Z"),
        id="rule1-ignores-batch-sentAt",
    ),
    pytest.param(
        # The client clock is an hour behind: sent 5 s after the event, received 1 s after sending.
        {"timestamp": "2026-11-28T08:00:00Z", "sentAt": "2026-11-28T08:00:05Z"},
        None,
        t("2026-11-28T09:00:01Z"),
        id="rule2-timestamp-corrected-by-skew",
    ),
    pytest.param(
        {"originalTimestamp": "2026-11-28T08:00:00Z", "sentAt": "2026-11-28T08:00:05Z"},
        None,
        t("2026-11-28T09:00:01Z"),
        id="rule2-originalTimestamp-when-no-timestamp",
    ),
    pytest.param(
        {"timestamp": "2026-11-28T10:00:00.250Z", "sentAt": "2026-11-28T10:00:01Z"},
        None,
        t("2026-11-28T09:00:05.250Z"),
        id="rule2-clock-ahead-milliseconds",
    ),
    pytest.param(
        {"timestamp": "2026-11-28T08:00:00Z"},
        t("2026-11-28T08:00:05Z"),
        t("2026-11-28T09:00:01Z"),
        id="rule2-batch-sentAt",
    ),
    pytest.param(
        {"timestamp": "2026-11-28T08:00:00Z", "sentAt": "2026-11-28T08:00:02Z"},
        t("2026-11-28T08:00:05Z"),
        t("2026-11-28T09:00:04Z"),
        id="rule2-call-sentAt-beats-batch",
    ),
    pytest.param(
        {"timestamp": "2026-11-28T08:00:00Z", "sentAt": "not a time"},
        t("2026-11-28T08:00:05Z"),
        t("2026-11-28T09:00:01Z"),
        id="rule2-unparseable-call-sentAt-falls-back-to-batch",
    ),
    pytest.param(
        # A replay keeps Segment's receivedAt: correct against it, not against today.
        {
            "timestamp": "2026-11-01T11:59:00Z",
            "sentAt": "2026-11-01T11:59:10Z",
            "receivedAt": "2026-11-01T12:00:00Z",
        },
        None,
        t("2026-11-01T11:59:50Z"),
        id="rule2-own-receivedAt-of-a-replay",
    ),
    pytest.param(
        {"timestamp": "2026-11-28T10:00:00+01:00", "sentAt": "2026-11-28T09:00:05Z"},
        None,
        t("2026-11-28T09:00:01Z"),
        id="rule2-offsets-compared-in-utc",
    ),
    pytest.param(
        {"timestamp": "2026-11-20T08:00:00Z"},
        None,
        t("2026-11-20T08:00:00Z"),
        id="rule3-no-sentAt-own-time-as-given",
    ),
    pytest.param(
        {"originalTimestamp": "2026-11-20T08:00:00Z"},
        None,
        t("2026-11-20T08:00:00Z"),
        id="rule3-originalTimestamp-as-given",
    ),
    pytest.param({}, None, RECEIVED, id="rule3-no-own-time-receivedAt"),
    pytest.param(
        {"sentAt": "2026-11-28T08:00:05Z"}, None, RECEIVED, id="rule3-sentAt-but-no-own-time"
    ),
    pytest.param(
        {"receivedAt": "2026-11-01T12:00:00Z"},
        None,
        t("2026-11-01T12:00:00Z"),
        id="rule3-no-own-time-own-receivedAt",
    ),
    pytest.param(
        {"timestamp": "2026-11-29T09:00:07Z"},
        None,
        RECEIVED,
        id="rule4-more-than-24h-ahead-clamped",
    ),
    pytest.param(
        {"timestamp": "2026-11-29T09:00:06Z"},
        None,
        t("2026-11-29T09:00:06Z"),
        id="rule4-exactly-24h-ahead-kept",
    ),
    pytest.param(
        {"timestamp": "2027-01-01T00:00:00Z", "originalTimestamp": "2027-01-01T00:00:00Z"},
        None,
        RECEIVED,
        id="rule4-applies-after-rule1",
    ),
    pytest.param(
        # Sent before it happened: the correction itself lands two days ahead.
        {"timestamp": "2026-11-30T08:00:00Z", "sentAt": "2026-11-28T08:00:00Z"},
        None,
        RECEIVED,
        id="rule4-applies-after-correction",
    ),
    pytest.param(
        {"timestamp": "2026-11-02T13:00:00Z", "receivedAt": "2026-11-01T12:00:00Z"},
        None,
        t("2026-11-01T12:00:00Z"),
        id="rule4-against-own-receivedAt",
    ),
    pytest.param(
        {"timestamp": "2030-01-01T00:00:00Z", "receivedAt": "2030-01-01T00:00:00Z"},
        None,
        RECEIVED,
        id="own-receivedAt-far-after-ours-not-believed",
    ),
    pytest.param(
        {"timestamp": "yesterday", "originalTimestamp": "2026-11-28T08:00:00Z"},
        None,
        t("2026-11-28T08:00:00Z"),
        id="unparseable-timestamp-is-absent",
    ),
    pytest.param(
        {"timestamp": "2026-11-28T08:00:00Z", "originalTimestamp": None},
        None,
        t("2026-11-28T08:00:00Z"),
        id="null-originalTimestamp-is-absent",
    ),
    pytest.param(
        {"timestamp": 1764320400, "sentAt": "2026-11-28T08:00:05Z"},
        None,
        RECEIVED,
        id="numeric-timestamp-is-absent",
    ),
    pytest.param(
        {"timestamp": "2026-11-28T08:00:00Z", "receivedAt": "garbage"},
        None,
        t("2026-11-28T08:00:00Z"),
        id="unparseable-receivedAt-uses-ours",
    ),
    pytest.param(
        {"timestamp": "9999-12-31T23:59:59-05:00"},
        None,
        RECEIVED,
        id="timestamp-past-year-9999-in-utc-is-absent",
    ),
    pytest.param(
        {"timestamp": "0001-01-01T00:00:00Z", "sentAt": "9999-12-31T00:00:00Z"},
        None,
        RECEIVED,
        id="correction-leaving-the-calendar-gives-receivedAt",
    ),
]


@pytest.mark.parametrize(("call", "batch_sent_at", "expected"), CASES)
def test_event_time(
    call: dict[str, Any], batch_sent_at: datetime | None, expected: datetime
) -> None:
    # The cases with an own receivedAt are replays: only those may carry one.
    result = event_time(call, RECEIVED, batch_sent_at, replayed=True)
    assert result == expected
    assert result.utcoffset() == timedelta(0)


def test_a_live_calls_own_receivedAt_is_ignored() -> None:
    # A sender's receivedAt 23h59 ahead pushed its event time (and its fields' write times) a day
    # into the future; only a replay keeps the receivedAt it was first received with.
    call = {
        "timestamp": "2026-11-28T08:59:00Z",
        "sentAt": "2026-11-28T09:00:00Z",
        "receivedAt": "2026-11-29T08:59:00Z",
    }
    assert event_time(call, RECEIVED) == t("2026-11-28T08:59:06Z")
    assert event_time(call, RECEIVED, replayed=True) == t("2026-11-29T08:58:00Z")


def test_webhook_fixture_takes_segment_corrected_timestamp() -> None:
    call = fixture("webhook-forwarded.json")
    # It reached us four hours after Segment received it; its own receivedAt still rules.
    late = t("2026-11-28T13:16:00Z")
    assert event_time(call, late) == t("2026-11-28T09:15:59.500Z")


def test_browser_fixture_corrects_by_its_sentAt() -> None:
    call = fixture("browser-identify.json")
    received = t("2026-11-28T09:15:01.400Z")
    # 09:15:01.400 - (09:15:01.020 - 09:15:01.003) = 09:15:01.383
    assert event_time(call, received) == t("2026-11-28T09:15:01.383Z")


def test_ios_fixture_with_null_originalTimestamp() -> None:
    call = fixture("ios-track.json")
    assert event_time(call, t("2026-11-28T18:02:12Z")) == t("2026-11-28T18:02:11.120Z")


def test_naive_received_at_is_utc_and_result_is_aware() -> None:
    result = event_time({}, datetime(2026, 11, 28, 9, 0, 6))
    assert result == RECEIVED
    assert result.tzinfo is not None


def test_received_at_in_another_zone_comes_back_in_utc() -> None:
    received = RECEIVED.astimezone(timezone(timedelta(hours=2)))
    result = event_time({}, received)
    assert result == RECEIVED
    assert result.tzinfo == UTC
