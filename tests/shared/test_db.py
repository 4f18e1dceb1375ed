"""shared/db.py: array parameters written as one literal come back from Postgres as they were."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Connection, Engine, text

from shared.db import array_literal

ODD = ["plain", "with,comma", 'a "quoted" id', "back\\slash", "{braces}", " padded ", "NULL",
       "", "ünïcode", "line\nbreak", "tab\tand'quote"]  # fmt: skip


@pytest.fixture
def conn(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as connection:
        yield connection


def test_text_survives_the_literal(conn: Connection) -> None:
    back = conn.scalar(text("SELECT CAST(:v AS text[])"), {"v": array_literal(ODD)})
    assert back == ODD


def test_uuids_and_numbers_survive_the_literal(conn: Connection) -> None:
    keys = [uuid.uuid4() for _ in range(3)]
    assert conn.scalar(text("SELECT CAST(:v AS uuid[])"), {"v": array_literal(keys)}) == keys
    numbers = [1, 2**62, -7]
    assert (
        conn.scalar(text("SELECT CAST(:v AS bigint[])"), {"v": array_literal(numbers)}) == numbers
    )


def test_an_empty_list_is_an_empty_array(conn: Connection) -> None:
    assert conn.scalar(text("SELECT CAST(:v AS text[])"), {"v": array_literal([])}) == []
