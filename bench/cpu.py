"""Where the CPU went during a phase: receiver, worker, the bench itself, Postgres, the rest.

Read from /proc at phase boundaries only (Linux; elsewhere `available` is false). "postgres" is the
server processes serving connections to the bench's database; "rest" is the machine's busy time less
all of those: Redis, Postgres's WAL writer and checkpointer, the kernel, and anything else running
on the machine at the time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True, slots=True)
class Sample:
    busy: float
    """Seconds of CPU the whole machine spent busy (all cores) since boot."""
    total: float
    """Seconds of CPU available (all cores) since boot."""
    groups: dict[str, float]
    """CPU seconds of each named process group, children included."""
    own: float
    """CPU seconds of this process, every thread."""


def sample(groups: Mapping[str, int], database: str) -> Sample | None:
    """CPU counters now: of the machine, of each process group in `groups`, of the Postgres
    backends connected to `database`, and of this process."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    busy = user + nice + system + irq + softirq + steal
    times = os.times()
    return Sample(
        busy=busy / _TICK,
        total=(busy + idle + iowait) / _TICK,
        groups=_accounted(groups, database),
        own=times.user + times.system,
    )


def _accounted(groups: Mapping[str, int], database: str) -> dict[str, float]:
    ticks = dict.fromkeys([*groups, "postgres"], 0)
    by_pgid = {pgid: name for name, pgid in groups.items()}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            # After the command's closing parenthesis: state, ppid, pgrp, ... utime is the 12th.
            fields = stat.rsplit(")", 1)[1].split()
            name = by_pgid.get(int(fields[2]))
            if name is None:
                title = Path(entry.path, "cmdline").read_bytes()
                # A backend's title: "postgres: <user> <database> <client> <state>".
                if title.startswith(b"postgres: ") and f" {database} ".encode() in title:
                    name = "postgres"
        except OSError:  # the process ended while we looked
            continue
        if name is not None:
            ticks[name] += sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
    return {name: n / _TICK for name, n in ticks.items()}


def between(start: Sample | None, end: Sample | None) -> dict[str, Any]:
    """CPU seconds per part between two samples, and how busy the machine's cores were."""
    if start is None or end is None or end.total <= start.total:
        return {"available": False}
    parts = {name: end.groups[name] - start.groups.get(name, 0.0) for name in end.groups}
    parts["bench"] = end.own - start.own  # the load generator's threads, or the poller
    busy = end.busy - start.busy
    parts["rest"] = max(0.0, busy - sum(parts.values()))
    return {
        "available": True,
        "machine_busy_percent": round(100 * busy / (end.total - start.total), 1),
        "cpu_seconds": {name: round(v, 2) for name, v in parts.items()},
    }
