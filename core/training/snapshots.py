"""The snapshots/ folder of a run directory: where the snapshot of a step is written, which snapshots exist, and the
removal of void ones. The format is documented in core.training.rundir, which owns it and re-exports these names:
call them as `rundir.snapshot_path`, `rundir.list_snapshots`, ... like the rest of the run directory."""
from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["SNAPSHOTS_DIR", "snapshot_path", "list_snapshots", "remove_snapshots_after"]

SNAPSHOTS_DIR = "snapshots"
_SNAPSHOT_NAME = re.compile(r"step_(\d{8,})\.pt")


def snapshot_path(run_dir: str | os.PathLike, step: int) -> Path:
    """Where the snapshot of `step` lives: snapshots/step_<step, 8 digits or more>.pt."""
    return Path(run_dir) / SNAPSHOTS_DIR / f"step_{int(step):08d}.pt"


def list_snapshots(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, path) of every snapshot file, earliest step first (temporary files and other names ignored)."""
    folder = Path(run_dir) / SNAPSHOTS_DIR
    if not folder.is_dir() or folder.is_symlink():
        return []
    found = ((_SNAPSHOT_NAME.fullmatch(path.name), path) for path in folder.iterdir())
    return sorted((int(match.group(1)), path) for match, path in found if match and path.is_file())


def remove_snapshots_after(run_dir: str | os.PathLike, step: int) -> list[int]:
    """Remove the snapshots of steps after `step` (-1: all); returns their steps. A trainer holding the run's claim
    calls it on resume (they are void) and on a fresh start."""
    removed = [(found, path) for found, path in list_snapshots(run_dir) if found > step]
    for _, path in removed:
        path.unlink(missing_ok=True)
    return [found for found, _ in removed]
