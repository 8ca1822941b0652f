"""Train: a form that starts `python -m core.train` as a separate, detached process (never a thread of this
server), with an estimate of the run's time from this machine's measured speed, and Stop / Resume for any run.
Watching the curves is the Runs page's job.

The form's fields are plain widgets (no st.form), so a field that does not apply to the current choices is disabled
at once: the labelled count only in semi-supervised mode, custom channels only with the custom architecture, λ_M only
with more than one stage, the dataset only while no image folder is given.
"""
import contextlib
import os
from dataclasses import asdict
import threading
import time

import streamlit as st
import torch

from core.data import INSTALL_HINTS, NATIVE_SHAPES, DataConfig, DatasetUnavailable, missing_files, open_split
from core.model import SWWAE, UNLABELED, ModelConfig
from core.runs import ARCHITECTURES, check_run_name, default_run_name, launch, make_configs, parse_channels, resume, stop
from core.runs import discover_runs, plain, runs_root, summarize
from core.training import MODES, TrainConfig, build_optimizer, default_model_config, list_devices, memory_format
from core.training import resolve_device, rundir, run_device, train_step, training_net

CUSTOM = "custom"
REFRESH_S = 2.0
DEFAULT_MODE = "supervised"  # with every label: the form's defaults agree (semi-supervised asks for a count)
SEMI_LABELS = 1_000  # the labelled count offered when semi-supervised is chosen: 100 per class of a 10-class set
PROBE_BATCH = 64  # images per timed step on a CPU: a step's time grows in proportion to the batch above this
TIMED_STEPS = 3  # steps timed after one warm-up step
TRAINER_THREADS = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)  # what a training process uses
_THREADS = threading.Lock()  # torch's thread count is one per process: one timing changes it at a time

# session_state keys of this page (the form's widgets are keyed train_*)
LAUNCHED = "train_launched"  # name of the run last started from this page
NOTICE = "train_notice"  # (kind, text) shown once after an action
for key, value in {LAUNCHED: None, NOTICE: None}.items():
    if key not in st.session_state:
        st.session_state[key] = value


@contextlib.contextmanager
def trainer_threads(device: torch.device):
    """Time as a training process runs: on the CPU with its thread count (this server keeps 1 for the explorer)."""
    if device.type != "cpu":
        yield
        return
    with _THREADS:
        saved = torch.get_num_threads()
        torch.set_num_threads(TRAINER_THREADS)
        try:
            yield
        finally:
            torch.set_num_threads(saved)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@st.cache_data(show_spinner="Timing a few training steps on this machine...", max_entries=64)
def seconds_per_step(model: dict, device_name: str, batch_size: int) -> float:
    """Wall seconds of one training step (core.training.train_step, as the trainer runs it) of a fresh model of
    config `model` on `device_name` with a random batch of `batch_size` images: the mean of TIMED_STEPS steps after
    a warm-up step."""
    device = resolve_device(device_name)
    config = TrainConfig(mode=DEFAULT_MODE, device=device_name)
    with trainer_threads(device):
        torch.manual_seed(0)
        swwae = SWWAE(ModelConfig(**model)).to(device, memory_format=memory_format(config, device)).train()
        optimizer, net = build_optimizer(swwae, config), training_net(swwae, config)
        images = torch.rand(batch_size, *swwae.input_shape, device=device)  # (B, C, H, W)
        labels = torch.randint(0, swwae.config.num_classes, (batch_size,), device=device)  # (B,)
        train_step(net, optimizer, images, labels, config=config, device=device)  # warm-up: first-call allocations
        _sync(device)
        start = time.perf_counter()
        for _ in range(TIMED_STEPS):
            train_step(net, optimizer, images, labels, config=config, device=device)
        _sync(device)
    return (time.perf_counter() - start) / TIMED_STEPS


@st.cache_data(show_spinner=False, max_entries=32)
def training_samples(data: dict, mode: str) -> int | str:
    """How many images an epoch of `mode` trains on (supervised: the labelled ones), or why that cannot be said."""
    try:
        subset = open_split(DataConfig(**data), "train")
    except (DatasetUnavailable, OSError, ValueError) as exc:
        return plain(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    return int((subset.labels != UNLABELED).sum()) if mode == "supervised" else len(subset)


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 90 else f"{minutes // 60} h {minutes % 60:02d} min"


def estimate(configs, device_label: str) -> tuple[str, str]:
    """('**About 8 min** on this machine's CPU', '700 steps (70 per epoch of 4,500 images) × 0.72 s per step, ...'):
    the run's training steps × the measured seconds per step, and how both were had."""
    train, data = configs.train, configs.data
    samples = training_samples({"dataset": data.dataset, "labels": data.labels, "max_train": data.max_train},
                               train.mode)
    if isinstance(samples, str):
        return "No time estimate", samples
    per_epoch = samples // train.batch_size
    if per_epoch == 0:
        return "No time estimate", f"{samples:,} training images are fewer than one batch of {train.batch_size}."
    steps = per_epoch * train.epochs if not train.max_steps else min(train.max_steps, per_epoch * train.epochs)
    device = resolve_device(train.device)
    probe = train.batch_size if device.type != "cpu" else min(train.batch_size, PROBE_BATCH)
    try:
        step_s = seconds_per_step(asdict(configs.model), train.device, probe) * train.batch_size / probe
    except (RuntimeError, ValueError, AssertionError) as exc:  # e.g. a device this process cannot reach
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return "No time estimate", plain(f"a training step could not be timed on {train.device}: {reason}")
    threads = f" with {TRAINER_THREADS} thread{'s' if TRAINER_THREADS > 1 else ''}" if device.type == "cpu" else ""
    scaled = f", scaled to {train.batch_size} images" if probe != train.batch_size else ""
    where = "this machine's CPU" if device.type == "cpu" else device_label
    return (f"**About {duration(steps * step_s)}** on {where}",
            f"Estimate: {steps:,} steps ({per_epoch:,} per epoch of {samples:,} images) × {step_s:.2g} s per step, "
            f"timed here on a batch of {probe}{threads}{scaled}. The process's start, its data loading and a "
            "validation after each epoch add a little; other work on the machine slows it.")


st.title("Train")
root = runs_root()
st.caption(f"Starts the training engine as its own process in `{root}/NAME`: closing this tab or restarting the "
           "server does not stop it. Watch it on the Runs page.")
missing = {name: reason for name in NATIVE_SHAPES if (reason := missing_files(name, DataConfig.data_dir))}
for name in missing:
    hint = INSTALL_HINTS.get(name, "put its four IDX files in data/")
    st.caption(f":material/info: **{name}** is not on this machine: {hint}, or start it on a connected machine "
               "(it downloads into data/ on first use).")

with st.container(border=True):
    left, middle, right = st.columns(3)
    with left:
        name = st.text_input("Run name", key="train_name", placeholder="dataset-date-time when empty",
                             help="Folder under the runs folder; letters, digits, '.', '_' and '-'.")
        folder_given = bool(str(st.session_state.get("train_folder") or "").strip())
        dataset = st.selectbox("Dataset", list(NATIVE_SHAPES), key="train_dataset", disabled=folder_given,
                               format_func=lambda name: f"{name} (not here: needs a download)" if name in missing else name,
                               help="mnist5k ships with the app; MNIST and Fashion-MNIST are read from data/ or the "
                                    "system's dataset packages; the others are downloaded into data/ on first use. "
                                    "Disabled while an image folder is given.")
        folder = st.text_input("...or an image folder", key="train_folder", placeholder="/path/to/images",
                               help="One sub-folder per class (torchvision ImageFolder); replaces the dataset.")
        mode = st.selectbox("Mode", MODES, index=MODES.index(DEFAULT_MODE), key="train_mode",
                            help="supervised: classify and reconstruct with every training label; semi-supervised: "
                                 "keep only some labels, reconstruct every image; unsupervised: reconstruct only.")
        if mode == "semi-supervised":
            labels = st.number_input("Labelled images kept", min_value=1, value=SEMI_LABELS, step=100,
                                     key="train_labels", help="Training labels kept, balanced across classes; the "
                                                              "other images train the reconstruction only.")
        else:
            labels = -1  # DataConfig: every label (an unsupervised run ignores them)
            st.number_input("Labelled images kept", value=None, disabled=True,
                            placeholder="every label" if mode == "supervised" else "none (unsupervised)",
                            help="Asked in semi-supervised mode only.")
    with middle:
        chosen_data = folder.strip() and f"folder:{folder.strip()}" or dataset
        default_channels = default_model_config(chosen_data).channels
        architecture = st.selectbox(
            "Architecture (channels per stage)", [*ARCHITECTURES, CUSTOM], key="train_architecture",
            format_func=lambda arch: f"default {tuple(default_channels)}" if arch == "default" else arch,
            help="3x3 convolutions and 2x2 pools at every stage; default: the dataset's shipped architecture.")
        if architecture == CUSTOM:
            channels_text = st.text_input("Custom channels", value="32 64 128", key="train_channels",
                                          help="One number per stage, e.g. 32 64 128.")
        else:
            channels_text = " ".join(map(str, ARCHITECTURES[architecture] or default_channels))
            st.text_input("Custom channels", value=channels_text, disabled=True,
                          help="Editable with the 'custom' architecture.")
        pooling = st.radio("Pooling", ["hard", "soft", "none"], horizontal=True, key="train_pooling",
                           help="hard: max-pool switches; soft: soft what-where; none: the no-where ablation.")
        lambda_rec = st.number_input("λ_rec (image reconstruction)", min_value=0.0, value=TrainConfig.lambda_rec,
                                     step=0.1, key="train_lambda_rec")
        stages = len(channels_text.replace(",", " ").split())
        lambda_mid = st.number_input("λ_M (intermediate reconstructions)", min_value=0.0, value=TrainConfig.lambda_mid,
                                     step=0.05, key="train_lambda_mid", disabled=stages < 2,
                                     help="Weight of each stage's what reconstruction; none with a single stage.")
    with right:
        epochs = st.number_input("Epochs", min_value=1, value=TrainConfig.epochs, key="train_epochs")
        batch_size = st.number_input("Batch size", min_value=1, value=TrainConfig.batch_size, key="train_batch_size")
        lr = st.number_input("Learning rate", min_value=0.0, value=TrainConfig.lr, step=1e-4, format="%.5f",
                             key="train_lr")
        devices = {d.name: d.label for d in list_devices()}  # GPUs first: the first is the default
        if st.session_state.get("train_device") not in devices:  # e.g. a GPU that is gone
            st.session_state.pop("train_device", None)
        device = st.selectbox("Device", list(devices), key="train_device", format_func=devices.get,
                              help="Each CUDA device by name and memory; the first listed (a GPU when there is one) is the "
                              "default.")
        launch_slot = st.container()  # the estimate and Start, filled once every field below is read
    detail_slot = st.empty()  # how the estimate was had
    with st.expander("More options"):
        more = st.columns(4)
        max_steps = more[0].number_input("Stop after steps", min_value=1, value=None, placeholder="no limit",
                                         key="train_max_steps", help="Finish after this many steps in all; empty: "
                                                                     "train every epoch.")
        log_every = more[1].number_input("Log every (steps)", min_value=1, value=TrainConfig.log_every,
                                         key="train_log_every")
        max_train = more[2].number_input("Training images", min_value=1, value=None, placeholder="all",
                                         key="train_max_train", help="Train on the first N images of a seeded "
                                                                     "shuffle; empty: all of them.")
        seed = more[3].number_input("Seed", min_value=0, value=TrainConfig.seed, key="train_seed")
        snapshots = st.checkbox("Keep snapshots", value=TrainConfig.snapshots, key="train_snapshots",
                                help="The weights at steps 1, 2, 5, 10, 20, 50, ... and the last (at most 30 files, "
                                     "weights only), so the sidebar, Compare and Runs pages can show the model at "
                                     "each of them.")
    try:
        channels = parse_channels(channels_text) if architecture == CUSTOM else ARCHITECTURES[architecture]
        configs = make_configs(
            data={"dataset": chosen_data, "labels": int(labels), "max_train": int(max_train or 0)},
            train={"mode": mode, "lambda_rec": float(lambda_rec), "lambda_mid": float(lambda_mid), "epochs": int(epochs),
                   "batch_size": int(batch_size), "lr": float(lr), "device": device, "max_steps": int(max_steps or 0),
                   "log_every": int(log_every), "seed": int(seed), "snapshots": bool(snapshots)},
            model={"channels": channels, "pooling": pooling})
    except (ValueError, OSError) as exc:
        configs, problem = None, plain(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        headline, detail = "No time estimate", f":material/warning: {problem}"
    else:
        headline, detail = estimate(configs, devices.get(device, device))
    detail_slot.caption(detail, help=f"The model of these settings is built here and {TIMED_STEPS} training steps are timed on "
               "random images (the first time for a setting takes a few seconds); steps = epochs × (training images "
               "÷ batch size), or the step limit.")
    with launch_slot:
        st.markdown(headline)
        submitted = st.button("Start training", type="primary", icon=":material/play_arrow:", key="train_start")

if submitted:
    try:
        if configs is None:
            raise ValueError(problem)
        run_name = check_run_name(name or default_run_name(chosen_data))
        launched = launch(root / run_name, configs)
    except (ValueError, OSError, rundir.RunDirError) as exc:
        st.error(plain(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__))
    else:
        st.session_state[LAUNCHED] = run_name
        st.session_state["train_manage"] = run_name
        st.session_state[NOTICE] = ("success", f"Started {run_name} (pid {launched.pid}).")
        with st.expander("Equivalent command"):
            st.code(" ".join(["python", *launched.command[1:]]), language="bash")

st.subheader("Manage a run")
runs = [path.name for path in discover_runs(root)]
if not runs:
    st.caption("No runs yet.")
    st.stop()
if st.session_state.get("train_manage") not in runs:
    st.session_state["train_manage"] = st.session_state[LAUNCHED] if st.session_state[LAUNCHED] in runs else runs[0]
chosen_run = st.selectbox("Run", runs, key="train_manage")
run_dir = root / chosen_run


def act(action, *args, **kwargs) -> None:
    try:
        action(*args, **kwargs)
    except (ValueError, OSError, rundir.RunDirError) as exc:
        st.session_state[NOTICE] = ("error", plain(str(exc).strip().splitlines()[0] or type(exc).__name__))
    else:
        st.session_state[NOTICE] = ("success", f"{action.__name__.capitalize()} requested for {plain(run_dir.name)}.")


def manage(active: bool) -> None:
    summary = summarize(run_dir)
    if summary.active != active:
        st.rerun()  # started or ended: switch the refresh on or off
    notice = st.session_state[NOTICE]
    if notice is not None:
        st.session_state[NOTICE] = None
        (st.success if notice[0] == "success" else st.error)(notice[1])
    progress = summary.step / summary.total_steps if summary.total_steps else 0.0
    trained_on = run_device(run_dir, summary.status)
    st.progress(min(1.0, progress), text=f"**{summary.state}** · step {summary.step}"
                f"{f' / {summary.total_steps}' if summary.total_steps else ''} · epoch {summary.epoch}"
                f"{f' / {summary.epochs}' if summary.epochs else ''}" + (f" · on {plain(trained_on)}" if trained_on else "")
                + (f" · {plain(summary.message)}" if summary.message else ""))
    stop_col, epochs_col, resume_col, link_col = st.columns([1, 1.2, 1, 1.5], vertical_alignment="bottom")
    stop_col.button("Stop", key="train_stop", icon=":material/stop:", disabled=not summary.active,
                    on_click=act, args=(stop, run_dir), help="Finish the current step, save last.pt, end as 'stopped'.")
    more_epochs = epochs_col.number_input("Epochs when resumed", min_value=1, value=None, placeholder="as configured",
                                          key=f"train_resume_epochs_{chosen_run}",
                                          help="Train up to this many epochs in all; empty keeps the run's setting.")
    resume_col.button("Resume", key="train_resume", icon=":material/play_arrow:",
                      disabled=summary.active or not (run_dir / rundir.LAST_CHECKPOINT).is_file(),
                      on_click=act, args=(resume, run_dir),
                      kwargs={} if more_epochs is None else {"epochs": int(more_epochs)},
                      help="Continue from last.pt with the optimizer state, up to the epochs given.")
    link_col.page_link("views/runs.py", label="Watch on the Runs page", icon=":material/monitoring:")


is_active = summarize(run_dir).active
st.fragment(run_every=REFRESH_S if is_active else None)(manage)(is_active)
