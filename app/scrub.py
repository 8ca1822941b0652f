"""Training time as a slider: a checkpoint inside a run folder whose trainer kept snapshots (core.training.rundir's
snapshots/step_<8 digits>.pt) gets a step slider over them, ending at the checkpoint itself.

`step_slider(path, step, key)` draws it and returns the snapshot chosen (a Path), or None for the checkpoint itself.
While the run trains, the slider is a fragment that looks for new snapshots every REFRESH_S seconds, so they join it
without reloading the page; moving it reruns the whole app (the pages show the chosen step's model). A folder with
more snapshots than a trainer keeps (core.training.MAX_SNAPSHOTS; files copied in) offers that many, spread over the
run, and says how many it skipped.

Session keys, for a slider created with `key`: `key` (the chosen snapshot's step, None for the checkpoint itself, which
a live run rewrites at ever later steps), `<key>_widget` (the select_slider's own), `<key>_applied` (what the last
full run used).
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.analysis import spread_evenly
from core.training import MAX_SNAPSHOTS, rundir

__all__ = ["PLAY_S", "next_step", "REFRESH_S", "run_folder", "snapshot_options", "step_slider", "is_training"]

REFRESH_S = 2.0
PLAY_S = 1.5  # seconds per step while Play is on


def run_folder(checkpoint: Path) -> Path | None:
    """The run directory a checkpoint sits in (its folder, when that holds config.json or snapshots/), else None."""
    folder = checkpoint.parent
    return folder if (folder / rundir.CONFIG_FILE).is_file() or (folder / rundir.SNAPSHOTS_DIR).is_dir() else None


def is_training(run: Path) -> bool:
    return rundir.is_live(rundir.read_status(run))


def snapshot_options(run: Path, file_step: int, chosen: int | None = None) -> tuple[dict[int, Path | None], int]:
    """({step: its snapshot} in step order, with the checkpoint itself (None) at its own step: a snapshot of that step
    holds the same weights, so the checkpoint stands for it; how many snapshots were left out). At most
    MAX_SNAPSHOTS snapshots, spread over the run, and the `chosen` step's when it is still there."""
    listed = rundir.list_snapshots(run)
    options: dict[int, Path | None] = dict(spread_evenly(listed, MAX_SNAPSHOTS))
    skipped = len(listed) - len(options)
    if chosen is not None and chosen not in options and (found := dict(listed).get(chosen)) is not None:
        options[chosen] = found
    options[file_step] = None
    return dict(sorted(options.items())), skipped


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
    playing = bool(st.session_state.get(f"{key}_playing"))
    st.button("Pause" if playing else "Play the steps", key=f"{key}_play", on_click=_toggle_play, args=(key,),
              icon=":material/pause:" if playing else ":material/play_arrow:",
              help=f"Show the model at each snapshot step in turn, one every {PLAY_S:g} s, on every page")
    every = PLAY_S if playing else (REFRESH_S if training else None)
    st.fragment(run_every=every)(_slider)(run, checkpoint.name, file_step, key, label)
    chosen = st.session_state.get(key)  # a listed snapshot's step (the slider settled it), or None
    return None if chosen is None else rundir.snapshot_path(run, chosen)


def _slider(run: Path, name: str, file_step: int, key: str, label: str) -> None:
    options, skipped = snapshot_options(run, file_step, st.session_state.get(key))
    if st.session_state.get(key) not in options or st.session_state.get(key) == file_step:
        st.session_state[key] = None  # a snapshot that is gone, or the checkpoint's own step: the checkpoint
    if st.session_state.get(f"{key}_playing"):
        st.session_state[key] = next_step(list(options), file_step, st.session_state[key])
        if st.session_state[key] is None:  # played through to the checkpoint itself
            st.session_state[f"{key}_playing"] = False
    widget = f"{key}_widget"
    st.session_state[widget] = file_step if st.session_state[key] is None else st.session_state[key]
    if len(options) < 2:
        st.caption(f"{label}: snapshots appear here as the run reaches steps 1, 2, 5, 10, 20, 50, ...")
        return
    st.select_slider(label, list(options), key=widget, on_change=_keep, args=(widget, key, file_step),
                     format_func=lambda step: f"{step:,}" + (f" ({name})" if step == file_step else ""),
                     help=f"The model at each step the trainer kept a snapshot of ({len(options) - 1} so far), and "
                          f"{name} itself. Every page shows the chosen step's model.")
    if skipped:
        st.caption(f"{skipped:,} more snapshot files in the run's folder skipped: the slider offers "
                   f"{MAX_SNAPSHOTS} spread over the run (a trainer keeps at most that many).")
    if st.session_state[key] != st.session_state[f"{key}_applied"]:
        st.rerun()  # moved by the user in this fragment: the whole app shows the new step


def next_step(steps: list[int], file_step: int, chosen: int | None) -> int | None:
    """The step after `chosen` (None: the checkpoint itself, at `file_step`) in `steps`, for Play: the first step
    when the checkpoint itself was shown, None (the checkpoint) after the last snapshot."""
    current = file_step if chosen is None else chosen
    if current == file_step and chosen is None:
        return steps[0] if steps[0] != file_step else None
    later = [step for step in steps if step > current]
    return None if not later or later[0] == file_step else later[0]


def _toggle_play(key: str) -> None:
    st.session_state[f"{key}_playing"] = not st.session_state.get(f"{key}_playing")


def _keep(widget: str, key: str, file_step: int) -> None:
    step = st.session_state[widget]
    st.session_state[key] = None if step == file_step else step
