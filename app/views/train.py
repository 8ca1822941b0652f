"""Train: a form that starts `python -m core.train` as a separate, detached process (never a thread of this
server), and Stop / Resume for any run. Watching the curves is the Runs page's job."""

import streamlit as st

from core.data import INSTALL_HINTS, NATIVE_SHAPES, DataConfig, missing_files
from core.runs import ARCHITECTURES, check_run_name, default_run_name, launch, make_configs, parse_channels, resume, stop
from core.runs import discover_runs, plain, runs_root, summarize
from core.training import MODES, TrainConfig, list_devices, rundir, run_device

CUSTOM = "custom"
REFRESH_S = 2.0

# session_state keys of this page (the form's widgets are keyed train_*)
LAUNCHED = "train_launched"  # name of the run last started from this page
NOTICE = "train_notice"  # (kind, text) shown once after an action
for key, value in {LAUNCHED: None, NOTICE: None}.items():
    if key not in st.session_state:
        st.session_state[key] = value

st.title("Train")
root = runs_root()
st.caption(f"Starts the training engine as its own process in `{root}/NAME`: closing this tab or restarting the "
           "server does not stop it. Watch it on the Runs page.")
missing = {name: reason for name in NATIVE_SHAPES if (reason := missing_files(name, DataConfig.data_dir))}
for name in missing:
    hint = INSTALL_HINTS.get(name, "put its four IDX files in data/")
    st.caption(f":material/info: **{name}** is not on this machine: {hint}, or start it on a connected machine "
               "(it downloads into data/ on first use).")

with st.form("train_form"):
    left, middle, right = st.columns(3)
    with left:
        name = st.text_input("Run name", key="train_name", placeholder="dataset-date-time when empty",
                             help="Folder under the runs folder; letters, digits, '.', '_' and '-'.")
        dataset = st.selectbox("Dataset", list(NATIVE_SHAPES), key="train_dataset",
                               format_func=lambda name: f"{name} (not here: needs a download)" if name in missing else name,
                               help="mnist5k ships with the app; MNIST and Fashion-MNIST are read from data/ or the "
                                    "system's dataset packages; the others are downloaded into data/ on first use.")
        folder = st.text_input("...or an image folder", key="train_folder", placeholder="/path/to/images",
                               help="One sub-folder per class (torchvision ImageFolder); overrides the dataset.")
        labels = st.number_input("Labels kept (semi-supervised)", min_value=-1, value=-1, step=100, key="train_labels",
                                 help="Training labels kept, balanced across classes; -1 keeps all.")
        mode = st.selectbox("Mode", MODES, index=MODES.index(TrainConfig.mode), key="train_mode")
    with middle:
        architecture = st.selectbox("Architecture (channels per stage)", [*ARCHITECTURES, CUSTOM],
                                    key="train_architecture", help="3x3 convolutions and 2x2 pools at every stage.")
        channels_text = st.text_input("Custom channels", value="32 64 128", key="train_channels",
                                      help="Used when the architecture is 'custom'; one number per stage.")
        pooling = st.radio("Pooling", ["hard", "soft", "none"], horizontal=True, key="train_pooling",
                           help="hard: max-pool switches; soft: soft what-where; none: the no-where ablation.")
        lambda_rec = st.number_input("λ_rec (image reconstruction)", min_value=0.0, value=TrainConfig.lambda_rec,
                                     step=0.1, key="train_lambda_rec")
        lambda_mid = st.number_input("λ_M (intermediate reconstructions)", min_value=0.0, value=TrainConfig.lambda_mid,
                                     step=0.05, key="train_lambda_mid")
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
    with st.expander("More options"):
        more = st.columns(4)
        max_steps = more[0].number_input("Max steps (0 = all)", min_value=0, value=0, key="train_max_steps")
        log_every = more[1].number_input("Log every (steps)", min_value=1, value=TrainConfig.log_every,
                                         key="train_log_every")
        max_train = more[2].number_input("Training samples (0 = all)", min_value=0, value=0, key="train_max_train")
        seed = more[3].number_input("Seed", min_value=0, value=TrainConfig.seed, key="train_seed")
        snapshots = st.checkbox("Keep snapshots", value=TrainConfig.snapshots, key="train_snapshots",
                                help="The weights at steps 1, 2, 5, 10, 20, 50, ... and the last (at most 30 files, "
                                     "weights only), so the sidebar, Compare and Runs pages can show the model at "
                                     "each of them.")
    submitted = st.form_submit_button("Start training", type="primary", icon=":material/play_arrow:", key="train_start")

if submitted:
    try:
        chosen = folder.strip() and f"folder:{folder.strip()}" or dataset
        channels = parse_channels(channels_text) if architecture == CUSTOM else ARCHITECTURES[architecture]
        configs = make_configs(
            data={"dataset": chosen, "labels": int(labels), "max_train": int(max_train)},
            train={"mode": mode, "lambda_rec": float(lambda_rec), "lambda_mid": float(lambda_mid), "epochs": int(epochs),
                   "batch_size": int(batch_size), "lr": float(lr), "device": device, "max_steps": int(max_steps),
                   "log_every": int(log_every), "seed": int(seed), "snapshots": bool(snapshots)},
            model={"channels": channels, "pooling": pooling})
        run_name = check_run_name(name or default_run_name(chosen))
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
