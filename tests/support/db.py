"""Where the test run's Postgres and Redis are (overridable from the environment)."""

from __future__ import annotations

import os

from shared.erasure import Suppression

ADMIN_URL = os.environ.get(
    "USERDEST_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
"""A database on the test Postgres to create and drop the run's own database from."""
REDIS_BASE = os.environ.get("USERDEST_TEST_REDIS", "redis://127.0.0.1:6379")
"""The test Redis server, without a database number (the run claims one of its own)."""

SECRETS = {
    "envelope_secret": os.environ.get("ENVELOPE_SECRET") or "test-envelope-secret-0123456789",
    "suppression_secret": os.environ.get("SUPPRESSION_SECRET")
    or "test-suppression-secret-0123456789",
}
"""The secrets the tests' settings carry; conftest exports them for the processes tests start."""
SUPPRESSION = Suppression(SECRETS["suppression_secret"])
"""The keyed hashes of erased ids, as the tests' workers and CLI make them."""
