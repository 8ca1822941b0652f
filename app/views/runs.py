"""Runs: every run under the runs folder (from this app, the CLI or torchrun), live curves, samples, and
"Open in explorer". Everything comes from the run directories, so a restarted server finds running runs again.

The live part is a fragment that reruns every REFRESH_S seconds only while some run is active; each tick reads
only the bytes appended to the chosen runs' metrics files (their MetricsReaders live in session state).
"""
from pathlib import Path

import streamlit as st

from app.curves import curves_figure, run_colour
from app.sidebar import request_model
from core.data import class_names
from core.runs import MetricsReader, RunSummary, curves, discover_runs, plain, resume, runs_root, stop, summarize
from core.training import rundir, run_device

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
pick_col, log_col, refresh_col = st.columns([6, 1.4, 1], vertical_alignment="bottom")  # be gone
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
                       "device": st.column_config.TextColumn(width="small", help="What the run trains on: the "
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
    buttons = st.columns(2)
    if buttons[0].button("Open in explorer", key=f"runs_open_{summary.name}", icon=":material/layers:",
                         disabled=not summary.has_best, help="Load this run's best.pt into the Layers and Swap pages"):
        request_model(summary.path / rundir.BEST_CHECKPOINT)
        st.switch_page(LAYERS_PAGE)
    if summary.active:
        if buttons[1].button("Stop", key=f"runs_stop_{summary.name}", icon=":material/stop:",
                             help="Finish the current step, save last.pt, end as 'stopped'"):
            try:
                stop(summary.path)
            except (ValueError, OSError, rundir.RunDirError) as exc:  # e.g. it ended meanwhile
                st.error(plain(str(exc).strip().splitlines()[0] or type(exc).__name__))
            else:
                st.toast(f"Asked {plain(summary.name)} to stop.")
    elif (summary.path / rundir.LAST_CHECKPOINT).is_file():
        if buttons[1].button("Resume", key=f"runs_resume_{summary.name}", icon=":material/play_arrow:",
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
                        config={"displaylogo": False})
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
