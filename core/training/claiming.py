"""Rank 0's claim on the run directory: taken before anything in it changes (refused while another trainer holds
it), with the check that a resume has a last.pt to go on from and a fresh start none to overwrite; a refusal is raised
on every rank. While the claim is held, a crash turns this process' "running" status into "failed" (`mark_failed`)."""
from __future__ import annotations

import os
from pathlib import Path

from core.training import rundir
from core.training.distributed import DistContext, broadcast_text

__all__ = ["RUN_FILES", "check_resumable", "claim_on_rank_0", "mark_failed"]


def check_resumable(run_dir: Path, *, resume: bool) -> None:
    if not resume and (run_dir / rundir.LAST_CHECKPOINT).exists():
        raise rundir.RunDirError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --run")
    if resume and not (run_dir / rundir.LAST_CHECKPOINT).exists():
        raise rundir.RunDirError(f"nothing to resume: {run_dir / rundir.LAST_CHECKPOINT} does not exist")


RUN_FILES = (rundir.CONFIG_FILE, rundir.METRICS_FILE, rundir.STATUS_FILE, rundir.LAST_CHECKPOINT)


def _claim_run_dir(run_dir: Path, *, resume: bool, new_only: bool, held: rundir.Claim | None) -> rundir.Claim:
    """Hold the run directory for this run (refused while another trainer holds it), or check it under the claim
    the caller `held` already. Nothing in it changes until every input has been checked: a refused resume leaves a
    finished run as it was. `new_only` (a dry run) refuses a folder that holds any run, before touching it."""
    if new_only and any((run_dir / name).exists() for name in RUN_FILES):
        raise rundir.RunDirError(f"{run_dir} holds a run: a dry run never writes into an existing run; give it a new "
                                 "folder (or none)")
    claim = held or rundir.claim(run_dir)
    try:
        check_resumable(run_dir, resume=resume)
    except BaseException:
        if held is None:
            claim.release()
        raise
    if held is None:  # a STOP left from before is no request to this run; one made from now on is. (A launcher
        rundir.clear_stop(run_dir)  # that passed its claim down cleared it then: one made since is this run's.)
    return claim


def claim_on_rank_0(run_dir: Path | None, ddp: DistContext, *, resume: bool, new_only: bool,
                    held: rundir.Claim | None) -> rundir.Claim | None:
    """Rank 0 claims the run directory; a refusal is raised on every rank, with rank 0's one-line reason, so no
    rank waits for a run that will not start."""
    claim, refusal = None, None
    if run_dir is not None and ddp.is_main:
        try:
            claim = _claim_run_dir(run_dir, resume=resume, new_only=new_only, held=held)
        except (rundir.RunDirError, OSError, ValueError) as exc:
            refusal = exc
    reason = broadcast_text(_first_line(refusal) if refusal is not None else None, ddp)
    if refusal is not None:
        raise refusal
    if reason is not None:
        raise rundir.RunDirError(f"rank 0 refused the run: {reason}")
    return claim


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def mark_failed(run_dir: Path, exc: BaseException) -> None:
    """Turn this process' "running" status into "failed: <reason>"; best effort (the disk may be full)."""
    status = rundir.read_status(run_dir)
    if not status or status.get("state") != "running" or status.get("pid") != os.getpid():
        return  # not started yet: the status (if any) is a previous run's, and stays as it was
    reason = _first_line(exc)
    try:
        rundir.write_status(run_dir, "failed", step=status["step"], epoch=status["epoch"],
                            message=f"{type(exc).__name__}: {reason}")
    except OSError:
        pass  # the original error says more than this one
