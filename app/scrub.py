"""Training time as a slider: a checkpoint inside a run folder whose trainer kept snapshots (core.training.rundir's
snapshots/step_<8 digits>.pt) gets a step slider over them, ending at the checkpoint itself.

`step_slider(path, step, key)` draws it and returns the snapshot chosen (a Path), or None for the checkpoint itself.
While the run trains, the slider is a fragment that looks for new snapshots every REFRESH_S seconds, so they join it
without reloading the page; moving it reruns the whole app (the pages show the chosen step's model).

Session keys, for a slider created with `key`: `key` (the chosen snapshot's step, None for the checkpoint itself, which
a live run rewrites at ever later steps), `<key>_widget` (the select_slider's own), `<key>_applied` (what the last
full run used).
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.training import rundir

__all__ = ["REFRESH_S", "run_folder", "snapshot_options", "step_slider", "is_training"]

REFRESH_S = 2.0


def run_folder(checkpoint: Path) -> Path | None:
    """The run directory a checkpoint sits in (its folder, when that holds config.json or snapshots/), else None."""
    folder = checkpoint.parent
    return folder if (folder / rundir.CONFIG_FILE).is_file() or (folder / rundir.SNAPSHOTS_DIR).is_dir() else None


def is_training(run: Path) -> bool:
    return rundir.is_live(rundir.read_status(run))


def snapshot_options(run: Path, file_step: int) -> dict[int, Path | None]:
    """{step: its snapshot} in step order, with the checkpoint itself (None) at its own step: a snapshot of that step
    holds the same weights, so the checkpoint stands for it."""
    options: dict[int, Path | None] = dict(rundir.list_snapshots(run))
    options[file_step] = None
    return dict(sorted(options.items()))


def step_slider(checkpoint: Path, file_step: int, key: str, *, label: str = "Training step") -> Path | None:
    """The step slider of a run's checkpoint (nothing when it is no run's, or its run kept no snapshots and is not
    training); returns the chosen snapshot, None for the checkpoint itself."""
    run = run_folder(checkpoint)
    if run is None:  # (a snapshot chosen as a file is no run's checkpoint: its folder holds neither)
        return None
    training = is_training(run)
    if not training and not rundir.list_snapshots(run):
        return None
    st.session_state[f"{key}_applied"] = st.session_state.get(key)
    st.fragment(run_every=REFRESH_S if training else None)(_slider)(run, checkpoint.name, file_step, key, label)
    chosen = st.session_state.get(key)  # a listed snapshot's step (the slider settled it), or None
    return None if chosen is None else rundir.snapshot_path(run, chosen)


def _slider(run: Path, name: str, file_step: int, key: str, label: str) -> None:
    options = snapshot_options(run, file_step)
    if st.session_state.get(key) not in options or st.session_state.get(key) == file_step:
        st.session_state[key] = None  # a snapshot that is gone, or the checkpoint's own step: the checkpoint
    widget = f"{key}_widget"
    st.session_state[widget] = file_step if st.session_state[key] is None else st.session_state[key]
    if len(options) < 2:
        st.caption(f"{label}: snapshots appear here as the run reaches steps 1, 2, 5, 10, 20, 50, ...")
        return
    st.select_slider(label, list(options), key=widget, on_change=_keep, args=(widget, key, file_step),
                     format_func=lambda step: f"{step:,}" + (f" ({name})" if step == file_step else ""),
                     help=f"The model at each step the trainer kept a snapshot of ({len(options) - 1} so far), and "
                          f"{name} itself. Every page shows the chosen step's model.")
    if st.session_state[key] != st.session_state[f"{key}_applied"]:
        st.rerun()  # moved by the user in this fragment: the whole app shows the new step


def _keep(widget: str, key: str, file_step: int) -> None:
    step = st.session_state[widget]
    st.session_state[key] = None if step == file_step else step
