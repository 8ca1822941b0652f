"""Runs: every run under the runs folder (from this app, the CLI or torchrun), live curves, samples, and
"Open in explorer". Everything comes from the run directories, so a restarted server finds running runs again.

The live part is a fragment that reruns every REFRESH_S seconds only while some run is active; each tick reads
only the bytes appended to the chosen runs' metrics files (their MetricsReaders live in session state).
"""
from pathlib import Path

import streamlit as st

from app.curves import curves_figure, run_colour
from app.downloads import chart_config, csv_button, file_name
from app.lens import show_lens
from app.lines import Line, line_figure
from app.sidebar import examples_of, file_identity, request_model
from core.analysis import (StepPictures, Tile, busiest_channel, image_lens, panel_png, spread_evenly, step_pictures,
                           switches_settled)
from core.data import class_names, one_per_class
from core.model import CheckpointError, load_checkpoint
from core.runs import MetricsReader, RunSummary, curves, discover_runs, plain, resume, runs_root, stop, summarize
from core.training import MAX_SNAPSHOTS, rundir, run_device

REFRESH_S = 2.0
MAX_POINTS = 2000  # per line; longer runs are averaged over buckets of records
DEFAULT_SHOWN = 4  # active runs selected when the page opens
MAX_SHOWN = 8  # runs plotted at once: a refresh tick draws at most this many curves, pictures and buttons
LAYERS_PAGE = "views/layers.py"
STATE_BADGES = {"starting": ":blue-badge[:material/hourglass_top: starting]",  # for markdown (the table says it plainly)
                "running": ":green-badge[:material/play_circle: running]",
                "finished": ":gray-badge[:material/check_circle: finished]",
                "stopped": ":orange-badge[:material/stop_circle: stopped]",
                "failed": ":red-badge[:material/error: failed]", "stale": ":orange-badge[:material/warning: stale]",
                "unreadable": ":red-badge[:material/error: unreadable]"}

# session_state keys of this page
SELECTED = "runs_selected"  # names of the runs whose curves are drawn
LOG_LOSSES = "runs_log_losses"
FORMATION_RUN, FORMATION_STAGE, FORMATION_IMAGE = "runs_formation_run", "runs_formation_stage", "runs_formation_image"
FORMATION_CHANNEL = "runs_formation_channel"  # None: every channel of the stage
FORMATION_STEP, FORMATION_PLAYING = "runs_formation_step", "runs_formation_playing"  # the lens's step; Play on
PLAY_S = 1.5  # seconds per step while playing
WHERE_TILE_WIDTH = 150  # px a where map is drawn at in the row of snapshot steps
READERS = "runs_readers"  # {run directory: MetricsReader}, kept between ticks
if READERS not in st.session_state:
    st.session_state[READERS] = {}

st.title("Runs")
root = runs_root()
st.caption(f"Every run under `{root}`: started here (Train page), from a terminal (`python -m core.train --run "
           f"{root}/NAME ...`) or by `torchrun`. Curves refresh every {REFRESH_S:g} s while a run is active.")
summaries = {path.name: summarize(path) for path in discover_runs(root)}
if not summaries:
    st.info("No runs yet: start one on the Train page, or from a terminal with `python -m core.train`.")
    st.page_link("views/train.py", label="Train a model", icon=":material/model_training:")
    st.stop()

names = list(summaries)
if SELECTED not in st.session_state:  # a few active runs (newest first), else the newest one
    st.session_state[SELECTED] = [n for n in names if summaries[n].active][:DEFAULT_SHOWN] or names[:1]
st.session_state[SELECTED] = [n for n in st.session_state[SELECTED] if n in summaries][:MAX_SHOWN]  # a folder may
pick_col, log_col, refresh_col = st.columns([5, 1.9, 1.3], vertical_alignment="bottom")  # be gone
pick_col.multiselect("Runs to plot (overlaid)", names, key=SELECTED, max_selections=MAX_SHOWN,
                     help=f"Up to {MAX_SHOWN} at once, so every refresh stays quick however many runs there are.")
log_col.toggle("log-scale losses", key=LOG_LOSSES)
refresh_col.button("Refresh", icon=":material/refresh:", help="Look for new runs now (the page refreshes by itself "
                   "only while a run is active).", key="runs_refresh")


def status_table(found: dict[str, RunSummary]) -> None:
    st.dataframe(
        {"run": list(found),
         "state": [s.state for s in found.values()],
         "progress": [min(1.0, s.step / s.total_steps) if s.total_steps else None for s in found.values()],
         "step": [f"{s.step} / {s.total_steps}" if s.total_steps else str(s.step) for s in found.values()],
         "epoch": [f"{s.epoch} / {s.epochs}" if s.epochs else str(s.epoch) for s in found.values()],
         "device": [run_device(s.path, s.status) for s in found.values()],
         "message": [s.message for s in found.values()],
         "pid": [f"{s.pid}@{s.host}" if s.pid else "" for s in found.values()]},
        hide_index=True, key="runs_table", width="stretch",
        column_config={"run": st.column_config.TextColumn(width="medium"),
                       "progress": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0, format="percent",
                                                                   width="small"),
                       "step": st.column_config.TextColumn(width="small"),
                       "epoch": st.column_config.TextColumn(width="small"),
                       "device": st.column_config.TextColumn(width="medium", help="What the run trains on: the "
                                                             "resolved device when status.json records it, else "
                                                             "config.json's train.device"),
                       "message": st.column_config.TextColumn(width="large")},
        column_order=["run", "state", "progress", "step", "epoch", "device", "message", "pid"])


def reader_for(path: Path) -> MetricsReader:
    readers = st.session_state[READERS]
    if str(path) not in readers:
        readers[str(path)] = MetricsReader(path)
    reader = readers[str(path)]
    reader.update()  # only the bytes appended since the last tick
    return reader


def sample_classes(run_dir: Path) -> str:
    """The classes of a run's sample strip, left to right (one validation image per class, in class order), or ""
    when its config.json does not say."""
    try:
        config = rundir.read_config(run_dir)
        names = class_names(config["data"].get("dataset"), int(config["model"].get("num_classes", 10)))
        count = int(config["train"].get("samples", 8))
    except (rundir.RunDirError, OSError, KeyError, TypeError, ValueError, AttributeError):
        return ""
    return ", ".join(names[:count])


def run_panel(summary: RunSummary, reader: MetricsReader, colour: str) -> None:
    st.markdown(f"<span style='color:{colour}'>■</span> **{plain(summary.name)}** {STATE_BADGES.get(summary.state, '')}",
                unsafe_allow_html=True)
    trained_on = run_device(summary.path, summary.status)
    if summary.message or trained_on:
        st.caption(" · ".join(plain(text) for text in (f"on {trained_on}" if trained_on else "", summary.message)
                              if text))
    best = reader.last("eval")
    if best:
        accuracy = best.get("accuracy", float("nan"))
        st.caption(f"last validation (epoch {best.get('epoch', 0):.0f}): accuracy "
                   f"{'n/a' if accuracy != accuracy else f'{100 * accuracy:.2f}%'}, reconstruction MSE "
                   f"{best.get('rec', float('nan')):.5f}")
    test = (summary.status or {}).get("test")
    if isinstance(test, dict) and isinstance(test.get("accuracy"), (int, float)):
        st.caption(f"test ({plain(test.get('checkpoint', 'best.pt'))}, {test.get('images', 0):,} images): accuracy "
                   f"{100 * test['accuracy']:.2f}%, reconstruction MSE {test.get('rec', float('nan')):.5f}")
    samples = rundir.list_samples(summary.path)
    if samples:
        classes = sample_classes(summary.path)
        st.image(str(samples[-1]), caption=f"{samples[-1].stem.replace('_', ' ')}: validation images (top"
                 f"{': ' + plain(classes) if classes else ''}) and their reconstructions (bottom)", width="stretch")
    elif summary.active:
        st.caption("Reconstructions appear after the first epoch's evaluation.")
    buttons = [st.container(), st.container()]  # stacked, full width: a run's column is too narrow for two labels
    if buttons[0].button("Open in explorer", width="stretch", key=f"runs_open_{summary.name}",
                         icon=":material/layers:",
                         disabled=not summary.has_best, help="Load this run's best.pt into the Layers and Swap pages"):
        request_model(summary.path / rundir.BEST_CHECKPOINT)
        st.switch_page(LAYERS_PAGE)
    if summary.active:
        if buttons[1].button("Stop", width="stretch", key=f"runs_stop_{summary.name}", icon=":material/stop:",
                             help="Finish the current step, save last.pt, end as 'stopped'"):
            try:
                stop(summary.path)
            except (ValueError, OSError, rundir.RunDirError) as exc:  # e.g. it ended meanwhile
                st.error(plain(str(exc).strip().splitlines()[0] or type(exc).__name__))
            else:
                st.toast(f"Asked {plain(summary.name)} to stop.")
    elif (summary.path / rundir.LAST_CHECKPOINT).is_file():
        if buttons[1].button("Resume", width="stretch", key=f"runs_resume_{summary.name}", icon=":material/play_arrow:",
                             help="Continue from last.pt (the Train page can also add epochs)"):
            try:
                resume(summary.path)
            except (ValueError, OSError, rundir.RunDirError) as exc:
                st.error(plain(str(exc).strip().splitlines()[0] or type(exc).__name__))
            else:
                st.rerun()  # a run became active: the page starts refreshing


def live(active: frozenset[str], selected: tuple[str, ...], log_losses: bool) -> None:
    found = {path.name: summarize(path) for path in discover_runs(root)}
    now_active = frozenset(name for name, s in found.items() if s.active)
    if now_active != active or set(found) != set(summaries):
        st.rerun()  # a run started or ended, or appeared: refresh the whole page (and start/stop the timer)
    status_table(found)
    shown = [name for name in selected if name in found]
    if not shown:
        st.info("Choose runs to plot above.")
        return
    readers = {name: reader_for(found[name].path) for name in shown}
    series = {name: curves(reader, MAX_POINTS) for name, reader in readers.items()}
    if any(series.values()):
        st.plotly_chart(curves_figure(series, log_losses=log_losses), key="runs_curves",
                        config={"displaylogo": False}, theme=None)
    else:
        st.info("No metrics logged yet.")
    counts = [f"{plain(name)}: {reader.count('step')} training and {reader.count('eval')} validation records"
              + (f", {reader.malformed} malformed line{'s' * (reader.malformed != 1)} skipped" if reader.malformed else "")
              for name, reader in readers.items()]
    st.caption(" · ".join(counts))
    st.subheader("Latest reconstructions")
    for start in range(0, len(shown), 3):
        for column, name in zip(st.columns(3), shown[start:start + 3]):
            with column:
                run_panel(found[name], readers[name], run_colour(shown.index(name)))


active_runs = frozenset(name for name, s in summaries.items() if s.active)
st.fragment(run_every=REFRESH_S if active_runs else None)(live)(
    active_runs, tuple(st.session_state[SELECTED]), bool(st.session_state.get(LOG_LOSSES, False)))


# ---- what and where over training: the run's snapshots -------------------------------------------------------------

@st.cache_data(max_entries=512, show_spinner=False)
def snapshot_pictures(path: str, identity: str, dataset: str, stage: int,  # noqa: ARG001 - identity, dataset: keys
                      channel: int | None, index: int, _images) -> StepPictures | str:
    """One snapshot's pictures (core.analysis.step_pictures), or why it cannot be read (one line); keyed on the file's
    identity (app.sidebar.file_identity), the sample images' dataset, the stage, channel and image."""
    try:
        return step_pictures(load_checkpoint(path).model, _images, index, stage, channel)
    except (CheckpointError, ValueError) as exc:
        return str(exc).strip().splitlines()[0]


@st.cache_data(max_entries=512, show_spinner=False)
def settled_shares(path: str, identity: str, final_path: str, final_identity: str, dataset: str,  # noqa: ARG001
                   _images) -> list[float] | str:
    """core.analysis.switches_settled of one snapshot against the run's last, over the sample images; or why not (one
    line). Keyed on both files' identities and the samples' dataset."""
    try:
        return switches_settled(load_checkpoint(path).model, load_checkpoint(final_path).model, _images)
    except (CheckpointError, ValueError) as exc:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


@st.cache_resource(max_entries=64, show_spinner=False)
def snapshot_model(path: str, identity: str):  # noqa: ARG001 - identity: cache key
    return load_checkpoint(path).model


def settling_chart(snapshots, dataset: str, images) -> None:
    """Per stage, the share of switches already where the last snapshot puts them, over the steps."""
    final_step, final_path = snapshots[-1]
    final_identity = file_identity(final_path)
    rows = [(step, settled_shares(str(path), file_identity(path), str(final_path), final_identity, dataset, images))
            for step, path in snapshots if path.exists()]
    rows = [(step, shares) for step, shares in rows if not isinstance(shares, str)]
    if len(rows) < 2:
        return
    stages = len(rows[0][1])
    lines = [Line(f"stage {stage + 1}", [step for step, _ in rows], [shares[stage] for _, shares in rows], stage)
             for stage in range(stages)]
    figure = line_figure(lines, title=f"Switches already where step {final_step:,} puts them",
                         x_title="training step (log)", y_title="share of switches", y_range=(0, 1.02), height=300)
    figure.update_xaxes(type="log")
    name = file_name("settling", Path(str(final_path)).parent.name, ext="csv")
    st.plotly_chart(figure, key="runs_settling", config=chart_config(name[:-4]), theme=None)
    csv_button("Download these shares (CSV)", {"step": [step for step, _ in rows], **{
        f"stage {stage + 1}": [shares[stage] for _, shares in rows] for stage in range(stages)}}, name, "runs_settling_csv")
    early = rows[min(len(rows) - 1, 3)]
    st.caption(f"Over the {len(images)} sample images, windows that are a choice at both steps (ties left out). At "
               f"step {early[0]:,}: " + ", ".join(f"stage {s + 1} {early[1][s]:.0%}" for s in range(stages)) + ".")


def advance_play(steps: list[int]) -> None:
    """The lens's step for this run of the section: kept, or (while playing) the next snapshot's. Called first thing,
    so a tick moves the step even when a busy machine makes the section's drawing outlast the play's interval (the
    next tick then interrupts the drawing, not the step)."""
    if not steps:
        return
    if st.session_state.get(FORMATION_STEP) not in steps:  # new run, a step that is gone, or Play just pressed
        st.session_state[FORMATION_STEP] = steps[0] if st.session_state.get(FORMATION_PLAYING) else steps[-1]
    elif st.session_state.get(FORMATION_PLAYING):
        later = [step for step in steps if step > st.session_state[FORMATION_STEP]]
        if later:
            st.session_state[FORMATION_STEP] = later[0]
        else:
            st.session_state[FORMATION_PLAYING] = False
            st.rerun()  # the whole page: the section's refresh stops with the play


def lens_at_step(snapshots, images, names, stage: int, channel: int | None, index: int) -> None:
    """One channel's pooling lens at the chosen snapshot step (a slider, and Play in the section above)."""
    steps = [step for step, path in snapshots if path.exists()]
    if not steps:
        return
    step = st.select_slider("Step of the lens", steps, key=FORMATION_STEP, format_func=lambda s: f"{s:,}")
    path = dict(snapshots)[step]
    model = snapshot_model(str(path), file_identity(path))
    channel = busiest_channel(model, images[index], stage) if channel is None else channel
    st.markdown(f"**Pooling lens of {names[index]}, stage {stage + 1}, channel {channel}, at step {step:,}**")
    show_lens(image_lens(model, images[index], stage, channel), "runs_lens", height=420)


def run_samples(run_dir: Path):
    """(dataset name, one example image per class (S, C, H, W), their class names) of a run, from its config.json;
    a one-line reason instead when they cannot be had."""
    try:
        config = rundir.read_config(run_dir)
        dataset, model = config["data"]["dataset"], config["model"]
        examples = examples_of(dataset, int(model["in_channels"]), int(model["image_size"]))
    except (rundir.RunDirError, OSError, KeyError, TypeError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"its sample images are unavailable ({reason})"
    rows = one_per_class(examples.labels, int(config["train"].get("samples", 8)) or 8)
    return dataset, examples.images[rows], [examples.label_name(int(r)) for r in rows]


def formation(run_dir: Path, active: bool, samples) -> None:
    """For each snapshot step of the run: one image's where map (a row: the switches forming) and the samples'
    reconstructions (`run_samples`, read by the section; read again here while they are unavailable: a run that
    has just started may not have written its config yet). Refreshes while the run trains, so new snapshots join."""
    if active != summarize(run_dir).active:
        st.rerun()  # started or ended: switch the refresh on or off
    listed = rundir.list_snapshots(run_dir)
    snapshots = spread_evenly(listed, MAX_SNAPSHOTS)  # a folder may hold thousands (copied in): load and draw a few
    if not snapshots:
        st.caption("No snapshots yet: they appear at steps 1, 2, 5, 10, 20, 50, ... while the run trains." if active
                   else "This run kept no snapshots (it started before they existed, or with --no-snapshots).")
        return
    advance_play([step for step, path in snapshots if path.exists()])
    samples = run_samples(run_dir) if isinstance(samples, str) else samples
    if isinstance(samples, str):
        st.caption(f"{plain(run_dir.name)}: {samples}.")
        return
    dataset, images, names = samples
    stage, index = st.session_state.get(FORMATION_STAGE, 0), st.session_state.get(FORMATION_IMAGE, 0)
    channel = st.session_state.get(FORMATION_CHANNEL)
    index = index if 0 <= index < len(images) else 0
    if len(listed) > len(snapshots):
        st.caption(f"{len(listed) - len(snapshots):,} of the run's {len(listed):,} snapshot files skipped: showing "
                   f"{len(snapshots)} spread over the run (a trainer keeps at most {MAX_SNAPSHOTS}).")
    pictures = [(step, snapshot_pictures(str(path), file_identity(path), dataset, stage, channel, index, images))
                for step, path in snapshots if path.exists()]
    refused = [f"step {step}: {p}" for step, p in pictures if isinstance(p, str)]
    pictures = [(step, p) for step, p in pictures if not isinstance(p, str)]
    if refused:
        st.warning(f"{len(refused)} snapshot(s) could not be read: {plain(refused[0])}")
    if not pictures:
        return
    chart_col, _ = st.columns([3, 2])
    with chart_col:
        settling_chart(snapshots, dataset, images)
    lens_at_step(snapshots, images, names, stage, channel, index)
    st.caption(f"Snapshot steps{' so far' if active else ''}: {', '.join(f'{step:,}' for step, _ in pictures)}")
    scale = max(1, round(WHERE_TILE_WIDTH / pictures[0][1].where.shape[1]))
    st.image(panel_png([Tile(f"step {step:,}", p.where) for step, p in pictures], len(pictures), scale=scale),
             caption=f"The where of {names[index]} at stage {stage + 1}"
                     f"{'' if channel is None else f', channel {channel}'}, each switch coloured by its position in "
                     "the pooling window (faded where its what is 0), at every snapshot step", width="stretch")
    st.image(panel_png([Tile(f"step {step:,}: MSE {p.recon_mse:.4f}", p.strip) for step, p in pictures], 2, scale=2),
             caption=f"Reconstructions of {', '.join(names)} at every snapshot step", width="stretch")


def formation_section() -> None:
    """Pick a run, a stage and an image; the formation fragment draws them (live while the run trains)."""
    st.subheader("What and where over training")
    run_col, stage_col, channel_col, image_col = st.columns([3, 1, 1, 2])
    run_name = run_col.selectbox("Run", names, key=FORMATION_RUN, help="Its snapshots, earliest step first")
    run_dir = summaries[run_name].path
    try:
        channels = [int(c) for c in rundir.read_config(run_dir)["model"]["channels"]]
    except (rundir.RunDirError, OSError, KeyError, TypeError, ValueError):
        channels = [1]
    if st.session_state.get(FORMATION_STAGE, 0) >= len(channels):
        st.session_state[FORMATION_STAGE] = 0
    stage = stage_col.selectbox("Stage", range(len(channels)), key=FORMATION_STAGE,
                                format_func=lambda s: f"stage {s + 1}")
    if (st.session_state.get(FORMATION_CHANNEL) or 0) >= channels[stage]:
        st.session_state[FORMATION_CHANNEL] = None
    channel_col.selectbox("Channel", [None, *range(channels[stage])], key=FORMATION_CHANNEL,
                          format_func=lambda c: "all" if c is None else str(c))
    samples = run_samples(run_dir)
    labels = samples[2] if not isinstance(samples, str) else ["-"]
    if st.session_state.get(FORMATION_IMAGE, 0) >= len(labels):
        st.session_state[FORMATION_IMAGE] = 0
    image_col.selectbox("Image for the where map", range(len(labels)), key=FORMATION_IMAGE,
                        format_func=lambda i: labels[i])
    active = summaries[run_name].active
    playing = bool(st.session_state.get(FORMATION_PLAYING))
    st.button("Pause" if playing else "Play the steps", key="runs_play", on_click=_toggle_play,
              icon=":material/pause:" if playing else ":material/play_arrow:",
              help=f"Step the lens through the snapshots, one every {PLAY_S:g} s")
    every = PLAY_S if playing else (REFRESH_S if active else None)
    st.fragment(run_every=every)(formation)(run_dir, active, samples)


def _toggle_play() -> None:
    playing = not st.session_state.get(FORMATION_PLAYING)
    st.session_state[FORMATION_PLAYING] = playing
    if playing:
        st.session_state[FORMATION_STEP] = None  # from the first step


formation_section()
