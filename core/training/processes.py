"""Whether a process a run directory names (status.json's "pid" and "pid_start", core.runs' launch.json) still runs on
this host: its start time from /proc, so a reused pid does not pass for it. core.training.rundir re-exports both names
(`rundir.pid_alive`, `rundir.process_start_time`)."""
from __future__ import annotations

import os
from typing import Any

__all__ = ["process_start_time", "pid_alive"]


def process_start_time(pid: Any) -> int | None:
    """When process `pid` started, in clock ticks since boot (/proc/<pid>/stat field 22); None where unknown."""
    try:
        with open(f"/proc/{int(pid)}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])  # fields after "(comm)" start at field 3
    except (OSError, IndexError, TypeError, ValueError, OverflowError):
        return None


def pid_alive(pid: Any, start: Any = None) -> bool:
    """Whether process `pid` runs on this host (a zombie, exited but not yet reaped, counts as dead). With
    `start` (a recorded process_start_time), a process that started at another time is a reused pid: dead."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    except (TypeError, ValueError, OverflowError):
        return False
    try:
        with open(f"/proc/{int(pid)}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                return False
    except (OSError, IndexError):
        return True  # no /proc (not Linux): kill(0) said it exists
    return start is None or process_start_time(pid) in (None, start)
