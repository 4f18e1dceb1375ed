"""`userdest replay` and `userdest deadletters replay`: Segment calls back onto a queue.

Each line of an NDJSON file (one call, or one `{"batch": [...]}` body) is checked by the call
contract the receiver uses (shared/calls.py) and within the receiver's size limits; the calls that pass travel in
envelopes of up to REPLAY_BATCH_SIZE calls, as the receiver's would, with source "replay".

Idempotency is the point: every call keeps its `messageId`, and a call without one gets a UUID5 of
its canonical JSON instead of the receiver's random UUID, so replaying one file twice (or an export
and then the file it came from) gives the same ids and the workers apply nothing twice.
"""

from __future__ import annotations

import gzip
import io
import os
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, cast

import orjson
import redis
from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.orm import Session

from ops.deadletters import is_open, metas
from ops.queues import APP_FIELD
from shared.calls import (
    Refusal,
    check_batch,
    check_call,
    check_calls,
    check_depth,
    message_id_of,
    parse_json,
)
from shared.envelope import REPLAY_SOURCE, SIGNATURE_REASONS, Envelope, merge_defaults
from shared.models import DeadLetter
from shared.publish import MEMORY_CHECK_SECONDS, BrokerUnavailable, HighWater, Publisher
from shared.readmodel import NotFound
from shared.settings import Settings
from shared.timeparse import iso, utcnow

CALL_SLACK = 256
"""Bytes a call may exceed MAX_CALL_BYTES by: room for the messageId and receivedAt that
`userdest queue export` adds to a call the receiver took, so an export always replays whole."""
GZIP_MAGIC = b"\x1f\x8b"
PAGE = 1000
"""Dead letters read, replayed and marked per round trip."""


class ReplayError(Exception):
    """The replay cannot go on (unreadable input, Redis gone); one line for the operator."""


# --- reading NDJSON ------------------------------------------------------------------------------


_SKIP_CHUNK = 1 << 20


class Source:
    """The lines of FILE or stdin, gunzipped where the bytes start with gzip's magic number."""

    def __init__(self, path: str, stdin: BinaryIO, max_line: int) -> None:
        self.name = "stdin" if path == "-" else path
        self.max_line = max_line
        """Bytes of a line held at most: a longer one is cut at one byte past this (check_line
        then refuses it as too large) and the rest of it is skipped unread into memory."""
        self._owned = path != "-"
        raw: BinaryIO = stdin if path == "-" else open(path, "rb")  # noqa: SIM115 (closed by close())
        self._raw = raw
        self.total: int | None = None
        if path != "-":
            self.total = os.fstat(raw.fileno()).st_size
        # peek() needs a buffered reader; stdin under a test runner is a plain BytesIO.
        buffered = raw if hasattr(raw, "peek") else io.BufferedReader(cast(Any, raw))
        self._buffered = cast(io.BufferedReader, buffered)
        self.gzipped = self._buffered.peek(2)[:2] == GZIP_MAGIC
        self.stream: BinaryIO = (
            cast(BinaryIO, gzip.GzipFile(fileobj=self._buffered, mode="rb"))
            if self.gzipped
            else cast(BinaryIO, self._buffered)
        )

    def position(self) -> int | None:
        """Bytes of the file read so far (compressed ones for gzip), for the progress bar."""
        if self.total is None:
            return None
        try:
            return self._buffered.tell()
        except OSError:
            return None

    def lines(self) -> Iterator[tuple[int, bytes]]:
        """(line number, bytes) of every line, each at most `max_line` + 1 bytes held; ReplayError
        where the file cannot be read on."""
        number = 0
        while True:
            try:
                raw = self.stream.readline(self.max_line + 1)
                if not raw:
                    return
                if len(raw) > self.max_line and not raw.endswith(b"\n"):
                    self._skip_rest_of_line()
            except (OSError, EOFError, zlib.error) as exc:
                kind = "gzip data" if self.gzipped else "data"
                raise ReplayError(
                    f"{self.name}: unreadable {kind} after line {number} "
                    f"({type(exc).__name__}: {exc})"
                ) from None
            number += 1
            yield number, raw

    def _skip_rest_of_line(self) -> None:
        while True:
            rest = self.stream.readline(_SKIP_CHUNK)
            if not rest or rest.endswith(b"\n"):
                return

    def close(self) -> None:
        if self.gzipped:
            self.stream.close()  # a GzipFile leaves the file it reads open
        if self._owned:
            self._raw.close()


# --- checking a line -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rejection:
    """A line, or one call of a batch line, that the receiver would refuse."""

    line: int
    index: int | None
    """The call's index in its batch line; None for a single-call line or a refused body."""
    codes: tuple[str, ...]
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" if self.index is None else f"line {self.line} [{self.index}]"
        return f"{where}: {', '.join(self.codes)}: {self.message}"


@dataclass(slots=True)
class Line:
    """The calls of one line that passed the checks, with their batch's defaults and sentAt."""

    number: int
    calls: list[dict[str, Any]] = field(default_factory=list)
    defaults: dict[str, Any] = field(default_factory=dict)
    sent_at: str | None = None
    rejections: list[Rejection] = field(default_factory=list)


def check_line(number: int, raw: bytes, settings: Settings, app: str | None = None) -> Line:
    """Check one NDJSON line as the receiver checks a request body; where `app` is given, a
    batch line `queue export` wrote for another app (APP_FIELD) is refused whole."""
    line = Line(number)

    def refuse(code: str, message: str) -> Line:
        line.rejections.append(Rejection(number, None, (code,), message))
        return line

    call_limit = settings.max_call_bytes + CALL_SLACK
    if len(raw) > settings.max_batch_bytes:
        return refuse("payload_too_large", f"the line is over {settings.max_batch_bytes} bytes")
    try:
        body = parse_json(raw)
        check_depth(body, raw, settings.max_depth)
        if type(body) is dict and "batch" in body:
            exported_from = body.get(APP_FIELD)
            if app is not None and exported_from is not None and exported_from != app:
                return refuse(
                    "other_app",
                    f"the line holds calls of the app {exported_from!r}, not {app!r} "
                    "(--any-app replays it anyway)",
                )
            calls, line.defaults, line.sent_at = check_batch(body, settings.max_batch_calls)
            indexed: list[tuple[int | None, Any]] = list(enumerate(calls))
        elif len(raw) > call_limit:
            return refuse("payload_too_large", f"a call is at most {settings.max_call_bytes} bytes")
        else:
            indexed = [(None, body)]
    except Refusal as exc:
        return refuse(exc.code, exc.message)

    checked = check_calls(
        [call for _, call in indexed], None, call_limit if len(raw) > call_limit else None
    )
    line.calls = checked.accepted
    for entry in checked.rejected:
        errors = entry["errors"]
        line.rejections.append(
            Rejection(
                number,
                indexed[entry["index"]][0],
                tuple(dict.fromkeys(e["code"] for e in errors)),
                "; ".join(e["message"] for e in errors),
            )
        )
    return line


# --- envelopes, pace and the replay itself -------------------------------------------------------


Send = Callable[[dict[str, Any]], None]


class Batcher:
    """Puts calls into envelopes of up to `size` calls; calls of different batch defaults or
    sentAt never share one, as those belong to the envelope."""

    def __init__(self, app_id: int, size: int, send: Send) -> None:
        self.app_id = app_id
        self.size = size
        self._send = send
        self._calls: list[dict[str, Any]] = []
        self._ids: list[str] = []
        self._key: bytes | None = None
        self._defaults: dict[str, Any] = {}
        self._sent_at: str | None = None
        self.messages = 0

    def add(
        self,
        call: dict[str, Any],
        message_id: str,
        defaults: dict[str, Any] | None = None,
        sent_at: str | None = None,
    ) -> None:
        key = orjson.dumps([defaults or {}, sent_at], option=orjson.OPT_SORT_KEYS)
        if self._calls and key != self._key:
            self.flush()
        self._key, self._defaults, self._sent_at = key, defaults or {}, sent_at
        self._calls.append(call)
        self._ids.append(message_id)
        if len(self._calls) >= self.size:
            self.flush()

    def flush(self) -> None:
        if not self._calls:
            return
        envelope = Envelope(
            app_id=self.app_id,
            received_at=iso(utcnow()),
            request_id=f"replay-{uuid.uuid4()}",
            calls=self._calls,
            message_ids=self._ids,
            key_id=None,
            source=REPLAY_SOURCE,
            sent_at=self._sent_at,
            defaults=self._defaults,
        )
        self._send(envelope.to_dict())
        self.messages += 1
        self._calls, self._ids = [], []


class Pacer:
    """Holds a replay to at most `rate` calls a second, counted from its first message."""

    def __init__(
        self,
        rate: float | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self._clock = clock
        self._sleep = sleep
        self._start: float | None = None
        self._sent = 0

    def wait(self, calls: int) -> None:
        """Sleep until `calls` more may go; then count them as sent."""
        if self.rate is None:
            return
        now = self._clock()
        if self._start is None:
            self._start = now
        delay = self._start + self._sent / self.rate - now
        if delay > 0:
            self._sleep(delay)
        self._sent += calls


def message_size(rate: float | None, size: int) -> int:
    """Calls per envelope: `size` (REPLAY_BATCH_SIZE), fewer under a low --rate so the pace stays
    even."""
    if rate is None:
        return size
    return max(1, min(size, int(rate)))


@dataclass(slots=True)
class Summary:
    lines: int = 0
    """Lines read that were not blank."""
    accepted: int = 0
    """Calls enqueued (or, with --dry-run, that would be)."""
    rejected: int = 0
    """Calls, or whole lines, the receiver would refuse."""
    duplicates: int = 0
    """Calls whose messageId came earlier in the same input: skipped, as they would apply once."""
    messages: int = 0
    """Envelopes enqueued."""

    def answer(self) -> dict[str, int]:
        return {
            "accepted": self.accepted,
            "rejected": self.rejected,
            "duplicates": self.duplicates,
            "lines": self.lines,
        }


def replay_lines(
    lines: Iterable[tuple[int, bytes]],
    *,
    app_id: int,
    settings: Settings,
    send: Send | None,
    app: str | None = None,
    rate: float | None = None,
    on_reject: Callable[[Rejection], None] = lambda _: None,
    on_line: Callable[[Summary], None] = lambda _: None,
    pacer: Pacer | None = None,
) -> Summary:
    """Check every line and enqueue its good calls through `send` (None: a dry run), paced by
    `pacer` (by default one holding to `rate` on the real clock). Where `app` (the name of
    `app_id`) is given, lines exported for another app are refused."""
    summary = Summary()
    pacer = pacer if pacer is not None else Pacer(rate)

    def deliver(envelope: dict[str, Any]) -> None:
        if send is None:
            return
        pacer.wait(len(envelope["calls"]))
        try:
            send(envelope)
        except BrokerUnavailable as exc:
            raise ReplayError(
                f"cannot reach Redis ({exc}) after {summary.accepted - len(envelope['calls'])} "
                "calls were enqueued; replaying the same input again is safe"
            ) from None

    size = min(settings.replay_batch_size, settings.max_batch_calls)
    batcher = Batcher(app_id, message_size(rate, size), deliver)
    seen: set[str] = set()
    for number, raw in lines:
        if not raw.strip():
            continue
        summary.lines += 1
        line = check_line(number, raw, settings, app)
        for rejection in line.rejections:
            summary.rejected += 1
            on_reject(rejection)
        for call in line.calls:
            message_id = message_id_of(call)
            if message_id in seen:
                summary.duplicates += 1
                continue
            seen.add(message_id)
            summary.accepted += 1
            batcher.add(call, message_id, line.defaults, line.sent_at)
        on_line(summary)
    batcher.flush()
    summary.messages = batcher.messages
    return summary


def publisher_send(
    publisher: Publisher,
    queue: str,
    high_water: HighWater | None = None,
    on_wait: Callable[[], None] = lambda: None,
    sleep: Callable[[float], None] = time.sleep,
) -> Send:
    """Publish each envelope on `queue`; while Redis is past its high-water mark, wait for the
    workers to make room first (the receivers refuse then; a backfill must not take the room
    the workers need to move what they take)."""

    def send(envelope: dict[str, Any]) -> None:
        if high_water is not None:
            wait_for_room(high_water, on_wait, sleep)
        publisher.publish(envelope, queue)

    return send


def wait_for_room(
    high_water: HighWater, on_wait: Callable[[], None], sleep: Callable[[float], None]
) -> None:
    """Return once Redis is under its high-water mark (or cannot say: the publish will fail)."""
    told = False
    while True:
        try:
            if not high_water.over():
                return
        except redis.RedisError:
            return
        if not told:
            on_wait()
            told = True
        sleep(MEMORY_CHECK_SECONDS)


# --- dead letters --------------------------------------------------------------------------------


def _dead_letter_call(letter: DeadLetter, meta: dict[str, Any]) -> dict[str, Any]:
    """The raw call as it was sent: its batch's defaults and sentAt merged back, and the time it
    was first received where it carries none of its own, so its event time comes out as it would
    have then (the worker honours a replayed call's receivedAt)."""
    defaults = meta.get("defaults")
    call = merge_defaults(
        cast(dict[str, Any], letter.call), defaults if isinstance(defaults, dict) else {}
    )
    if call.get("sentAt") is None and isinstance(meta.get("sent_at"), str):
        call = {**call, "sentAt": meta["sent_at"]}
    if call.get("receivedAt") is not None:
        return call
    received = meta.get("received_at")
    if not isinstance(received, str):
        received = iso(letter.created_at)
    return {**call, "receivedAt": received}


def replay_dead_letters(
    session: Session,
    publisher: Publisher,
    queue: str,
    *,
    app_id: int | None = None,
    ids: Sequence[int] = (),
    reason: str | None = None,
    size: int = 100,
    high_water: HighWater | None = None,
    on_wait: Callable[[], None] = lambda: None,
    vouch: bool = False,
) -> dict[str, Any]:
    """Enqueue dead letters again and mark them replayed, in the caller's transaction.

    With `ids`, exactly those (replayed before or not); else every open one (never replayed, or
    failed again since), of `app_id` and `reason` where given. A letter the receiver's checks
    still refuse, or of an unknown app, is skipped and stays open; so is one whose message no
    ENVELOPE_SECRET signed (SIGNATURE_REASONS) unless the operator vouches for it (`vouch`): its
    calls are then signed anew like any replay's. Messages are published before
    the caller commits the marks: a failure in between leaves letters open that are already on
    the queue, and replaying them again applies nothing twice.
    """
    where: list[ColumnElement[bool]] = []
    if app_id is not None:
        where.append(DeadLetter.app_id == app_id)
    if reason is not None:
        where.append(DeadLetter.reason == reason)
    if ids:
        wanted = sorted(set(ids))
        found = set(session.scalars(select(DeadLetter.id).where(DeadLetter.id.in_(wanted), *where)))
        missing = [i for i in wanted if i not in found]
        if missing:
            scope = (" for this app" if app_id is not None else "") + (
                f" with reason {reason!r}" if reason is not None else ""
            )
            raise NotFound(f"no dead letter {', '.join(map(str, missing))}{scope}")
        where.append(DeadLetter.id.in_(wanted))
    else:
        where.append(is_open())

    batchers: dict[int, Batcher] = {}
    replayed = 0
    skipped: list[dict[str, Any]] = []

    def send(envelope: dict[str, Any]) -> None:
        if high_water is not None:
            wait_for_room(high_water, on_wait, time.sleep)
        try:
            publisher.publish(envelope, queue)
        except BrokerUnavailable as exc:
            raise ReplayError(f"cannot reach Redis ({exc}); no dead letter was marked") from None

    last = 0
    while True:
        page = list(
            session.scalars(
                select(DeadLetter)
                .where(DeadLetter.id > last, *where)
                .order_by(DeadLetter.id)
                .limit(PAGE)
                .with_for_update()
            )
        )
        if not page:
            break
        last = page[-1].id
        page_metas = metas(session, page)
        done: list[int] = []
        for letter in page:
            problem = _unreplayable(letter, page_metas[letter.id], vouch)
            if problem is not None:
                skipped.append({"id": letter.id, "reason": problem[0], "error": problem[1]})
                continue
            call = cast(dict[str, Any], letter.call)
            message_id = letter.message_id or message_id_of(call)
            app = cast(int, letter.app_id)  # _unreplayable refused letters without one
            batcher = batchers.get(app)
            if batcher is None:
                batcher = batchers[app] = Batcher(app, size, send)
            batcher.add(_dead_letter_call(letter, page_metas[letter.id]), message_id)
            done.append(letter.id)
        for batcher in batchers.values():
            batcher.flush()
        if done:
            session.execute(
                update(DeadLetter)
                .where(DeadLetter.id.in_(done))
                .values(replayed_at=func.now())
                .execution_options(synchronize_session=False)
            )
            replayed += len(done)
    return {
        "replayed": replayed,
        "messages": sum(b.messages for b in batchers.values()),
        "queue": queue,
        "skipped": skipped,
    }


def _unreplayable(letter: DeadLetter, meta: dict[str, Any], vouch: bool) -> tuple[str, str] | None:
    if letter.reason in SIGNATURE_REASONS and not vouch:
        return (
            "unvouched",
            "its message was not signed with ENVELOPE_SECRET (it may be forged): replay it with "
            "--vouch once you have checked it",
        )
    if letter.app_id is None:
        return "unknown_app", "the call named no app this deployment knows; nowhere to replay it"
    if not isinstance(letter.call, dict):
        return "not_an_object", "the call is not a JSON object"
    errors = check_call(_dead_letter_call(letter, meta), None)
    if errors:
        return errors[0]["code"], "; ".join(e["message"] for e in errors)
    return None
