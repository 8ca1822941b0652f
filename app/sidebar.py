"""The sidebar and the explorer's shared state: which model is loaded, on which device, with which examples.

Every page reads `current()`; nothing else loads checkpoints. How a model gets chosen:

- the "Model" selectbox (session key `MODEL_CHOICE`) lists `checkpoints/default.pt` first, then every `*.pt`
  under `checkpoints/` and `runs/*/`, then uploaded checkpoints. Its value is a *source*: a path relative to
  the repository root (or absolute, outside it), or ``"upload:<sha256 prefix>:<file name>"`` for an upload whose
  bytes are kept in `UPLOADS`.
- Changing it (or uploading a `.pt`) loads the new model in a callback; if that fails the selectbox snaps
  back to the model that was loaded, and the reason is shown once with `st.error`.
- a checkpoint inside a run folder with snapshots gets a "Training step" slider (app.scrub, session key
  `SNAPSHOT_STEP`): the Explorer then holds the chosen step's snapshot, its source that snapshot's path.
- `request_model(path)`, from any page or callback, asks for a checkpoint to be loaded on the next run (e.g.
  the Runs page's "Open in explorer": ``request_model(run_dir / "best.pt"); st.switch_page(LAYERS_PAGE)``).

Loading goes through `core.model.load_checkpoint`, cached with `st.cache_resource` under the model's *identity*
(`load_identified`): for a file its resolved path, size, inode, modification and change times, for an upload the
sha256 of its bytes; and the device. `Explorer.identity` carries it to the pages: every cache of a model's results
is keyed on it, never on the source's name or step, so a checkpoint rewritten in place with other weights (a run
retrained under the same name, an export written twice to one path) is never shown with the old one's results.

Foreign pooling networks (app.networks) ride on the same paths: a pooling-network file or `.pt2` under checkpoints/
or uploaded is told apart from an SWWAE checkpoint by its format marker and opened through core.model.specs; an
architecture opened in the "Open your own network" expander gets a ``"network:..."`` source. A network without a
dataset on this machine (ImageNet's) has no examples: its pages work on uploads and drawings.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import streamlit as st
import torch

from core.model import Checkpoint, CheckpointError, load_checkpoint
from core.data import NATIVE_SHAPES, class_names, load_examples
from core.runs import runs_root
from core.analysis import check_viewable
from app import networks
from app.address import BIND
from app.scrub import step_slider

__all__ = [
    "ROOT", "DEFAULT_CHECKPOINT", "Explorer", "Examples", "render", "current", "request_model",
    "find_checkpoints", "load_source", "MODEL_CHOICE", "MODEL_REQUEST", "MODEL_LOADED", "MODEL_ERROR",
    "UPLOADS", "DEVICE", "DATASET", "EXPLORER", "SNAPSHOT_STEP", "NONE_MODELS", "SHIPPED_MODELS", "source_label",
    "source_of", "path_of", "at_chosen_step", "examples_of", "load_identified", "file_identity", "shape_text",
]

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINT = "checkpoints/default.pt"
SHIPPED_MODELS = {"mnist5k": DEFAULT_CHECKPOINT, "fashion-mnist": "checkpoints/fashion.pt"}  # dataset -> its model
NONE_MODELS = {  # dataset -> the where ablation's model trained without where on it, when shipped
    "mnist5k": "checkpoints/ablation_none.pt", "fashion-mnist": "checkpoints/fashion_ablation_none.pt",
}
UPLOAD_PREFIX = "upload:"

# session_state keys (the whole app's shared state; pages add their own, prefixed with the page name)
MODEL_CHOICE = "model_choice"  # selectbox value: the source of the model to show
MODEL_REQUEST = "model_request"  # a source asked for by request_model(), applied on the next run
MODEL_LOADED = "model_loaded"  # the source that loaded last: what the app falls back to after a bad choice
MODEL_ERROR = "model_error"  # one-line reason the last choice or upload failed, shown once
MODEL_UPLOAD = "model_upload"  # file_uploader widget for .pt files
UPLOADS = "model_uploads"  # {source: bytes} of uploaded checkpoints that loaded
DEVICE = "device"  # 'cpu' or 'cuda'
DATASET = "dataset"  # name of the example dataset (a core.data name); follows the loaded model's dataset
EXPLORER = "explorer"  # the Explorer built by this run's sidebar, read by the pages through current()
SNAPSHOT_STEP = "snapshot_step"  # the sidebar model's snapshot step (app.scrub), None: the chosen file itself


@dataclass
class Examples:
    name: str
    images: torch.Tensor  # (N, C, H, W) in [0, 1], converted to the model's channels and size
    labels: torch.Tensor  # (N,)
    description: str  # what they are: "500 validation images", "1,000 shipped test images (100 per class)"
    class_names: tuple[str, ...]  # the name of each label of this dataset

    def label_name(self, index: int) -> str:
        """The class name of example `index`."""
        label = int(self.labels[index])
        return self.class_names[label] if 0 <= label < len(self.class_names) else str(label)


@dataclass
class Explorer:
    """What the pages work with on this run."""

    source: str  # MODEL_CHOICE value of the loaded model
    label: str  # how the source reads in the UI
    checkpoint: Checkpoint
    device: str
    examples: Examples | None  # None when the dataset cannot be loaded
    identity: str  # which model this is (load_identified): the key of every cache of its results

    @property
    def model(self):
        return self.checkpoint.model

    @property
    def class_names(self) -> tuple[str, ...]:
        """The name of each of the model's classes: its own (a network's ImageNet weights), else the dataset's it was
        trained on (numbers when unknown)."""
        given = getattr(self.checkpoint, "class_names", None)
        if given:
            return tuple(given)
        return class_names(self.checkpoint.dataset, self.checkpoint.model_config.num_classes)


@st.cache_resource(max_entries=8, show_spinner="Loading checkpoint...")
def _load_file(path: str, identity: str, device: str) -> Checkpoint:  # noqa: ARG001 - identity: cache key
    return load_checkpoint(path, map_location=device)


@st.cache_resource(max_entries=4, show_spinner="Loading checkpoint...")
def _load_bytes(sha256: str, device: str, _data: bytes) -> Checkpoint:  # noqa: ARG001 - sha256 is the key
    return load_checkpoint(_data, map_location=device)


@st.cache_resource(max_entries=4, show_spinner="Loading examples...")
def examples_of(dataset: str, channels: int, image_size: int) -> Examples:
    """A dataset's explorer examples in a model's channels and size (cached); ValueError / OSError when unavailable."""
    examples = load_examples(dataset, channels=channels, image_size=image_size)
    return Examples(dataset, examples.images, examples.labels, examples.description,
                    class_names(dataset, int(examples.labels.max()) + 1 if len(examples.labels) else 0))


def path_of(source: str) -> Path | None:
    """The file of a source (None for an upload or a network opened from the sidebar)."""
    return None if source.startswith((UPLOAD_PREFIX, networks.NETWORK_PREFIX)) else _resolve(source)


def _resolve(source: str) -> Path:
    path = Path(source)
    return path if path.is_absolute() else ROOT / path


def file_identity(path: Path) -> str:
    """A file's identity for caches: its resolved path, size, inode, modification and change times (OSError when it
    is gone). Writing other bytes into it, or renaming another file onto it, changes it, even at the same size and
    with its old modification time put back (`cp -p`, `rsync -t`): the change time cannot be set."""
    stat = path.stat()
    return f"{path.resolve()}|{stat.st_size}|{stat.st_ino}|{stat.st_mtime_ns}|{stat.st_ctime_ns}"


def load_identified(source: str, device: str) -> tuple[Checkpoint, str]:
    """The checkpoint of a MODEL_CHOICE value (cached) and its identity on `device` (see the module's docstring);
    raises CheckpointError with a one-line reason. Pooling networks open through app.networks."""
    if source.startswith(networks.NETWORK_PREFIX):
        return networks.open_recipe(source, device)
    if source.startswith(UPLOAD_PREFIX):
        data = st.session_state.get(UPLOADS, {}).get(source)
        if data is None:
            raise CheckpointError("the uploaded checkpoint is no longer in this session; upload it again")
        sha256 = hashlib.sha256(data).hexdigest()
        load = networks.open_bytes if networks.is_network_bytes(data) else _load_bytes
        return load(sha256, device, data), f"sha256:{sha256}@{device}"
    path = _resolve(source)
    try:
        stat_identity = file_identity(path)
    except OSError:
        raise CheckpointError(f"{source}: no such file") from None
    identity = f"{stat_identity}@{device}"
    load = networks.open_path if networks.is_network_file(str(path), stat_identity) else _load_file
    return load(str(path), identity, device), identity


def load_source(source: str, device: str) -> Checkpoint:
    """The checkpoint of a MODEL_CHOICE value (cached); raises CheckpointError with a one-line reason."""
    return load_identified(source, device)[0]


def find_checkpoints() -> list[str]:
    """Sources of the checkpoints on disk: the default first, then checkpoints/**.pt and <runs root>/*/*.pt."""
    paths = [*ROOT.glob("checkpoints/**/*.pt"), *ROOT.glob("checkpoints/**/*.pt2"), *runs_root().glob("*/*.pt")]
    found = sorted({source_of(p) for p in paths if p.is_file()})
    return sorted(found, key=lambda source: source != DEFAULT_CHECKPOINT)


def source_of(path: Path) -> str:
    """A path as a MODEL_CHOICE value: relative to the repository root when inside it, else absolute."""
    path = path.resolve()
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)


def request_model(path: str | Path) -> None:
    """Ask the explorer to load the checkpoint at `path` on the next run (callable from a callback or a page,
    before or after the sidebar has run). Pair with `st.switch_page` to open a page on it."""
    st.session_state[MODEL_REQUEST] = source_of(Path(path))


def source_label(source: str) -> str:
    if source.startswith(UPLOAD_PREFIX):
        return f"uploaded: {source.split(':', 2)[2]}"
    if source.startswith(networks.NETWORK_PREFIX):
        return source.split(":", 2)[2]
    if source in SHIPPED_MODELS.values():  # "default (shipped)", "fashion (shipped)"
        return f"{Path(source).stem} (shipped)"
    path = _resolve(source)
    try:
        if networks.is_network_file(str(path), identity := file_identity(path)):
            return networks.network_file_label(str(path), identity)
    except OSError:
        pass
    return source


def _try_switch(source: str, *, drawn: bool = False) -> None:
    """Load `source`; on success it becomes the model, on failure the choice reverts and the reason is kept.
    `drawn`: the Model selectbox is already on the page (an address chose the model), so its value cannot be set
    again in this run: a failure asks for the loaded model on a rerun instead."""
    try:
        checkpoint = load_source(source, st.session_state[DEVICE])
        check_viewable(checkpoint.model_config)
    except CheckpointError as exc:
        kept = source_label(st.session_state[MODEL_LOADED])
        st.session_state[MODEL_ERROR] = f"Could not load {source_label(source)}: {exc}. Kept {kept}."
        if drawn:
            st.session_state[MODEL_REQUEST] = st.session_state[MODEL_LOADED]
            st.rerun()
        st.session_state[MODEL_CHOICE] = st.session_state[MODEL_LOADED]
        return
    st.session_state[MODEL_LOADED] = source
    if not drawn:
        st.session_state[MODEL_CHOICE] = source
    st.session_state[SNAPSHOT_STEP] = None  # a new model starts at its own file's step
    if checkpoint.dataset in NATIVE_SHAPES:  # the examples follow the model to its own dataset
        st.session_state[DATASET] = checkpoint.dataset


def _adopt_address_choice() -> None:
    """A model named by the opening address (the bound selectbox took it without calling on_change): load it as a
    choice would."""
    if st.session_state[MODEL_CHOICE] != st.session_state[MODEL_LOADED]:
        _try_switch(st.session_state[MODEL_CHOICE], drawn=True)


def _on_choice() -> None:
    _try_switch(st.session_state[MODEL_CHOICE])


def _on_upload() -> None:
    uploaded = st.session_state.get(MODEL_UPLOAD)
    if uploaded is None:
        return
    data = uploaded.getvalue()
    source = f"{UPLOAD_PREFIX}{hashlib.sha256(data).hexdigest()[:16]}:{uploaded.name}"
    uploads = st.session_state[UPLOADS]
    known = source in uploads
    uploads.setdefault(source, data)
    _try_switch(source)
    if not known and st.session_state[MODEL_LOADED] != source:
        del uploads[source]  # keep only uploads that loaded


def _init_state() -> None:
    defaults = {MODEL_LOADED: DEFAULT_CHECKPOINT, UPLOADS: {}, DEVICE: "cpu", DATASET: "mnist5k"}
    for key, value in defaults.items():
        if key not in st.session_state:
            st.session_state[key] = value
    if MODEL_CHOICE not in st.session_state:
        st.session_state[MODEL_CHOICE] = st.session_state[MODEL_LOADED]


def render() -> Explorer | None:
    """Draw the sidebar, load the chosen model and examples; store and return the Explorer (None: no model)."""
    _init_state()
    if MODEL_REQUEST in st.session_state:
        _try_switch(st.session_state.pop(MODEL_REQUEST))
    if networks.OWN_REQUEST in st.session_state:  # the "Open your own network" button; a failure is forgotten
        own = st.session_state.pop(networks.OWN_REQUEST)
        _try_switch(own)
        if st.session_state[MODEL_LOADED] != own:
            st.session_state[networks.NETWORKS].pop(own, None)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if st.session_state[DEVICE] not in devices:
        st.session_state[DEVICE] = "cpu"
    sources = [*find_checkpoints(), *st.session_state[UPLOADS], *st.session_state.get(networks.NETWORKS, {})]
    for source in (st.session_state[MODEL_LOADED], st.session_state[MODEL_CHOICE]):
        if source not in sources:  # e.g. a requested checkpoint outside checkpoints/ and runs/
            sources.append(source)

    with st.sidebar:
        st.selectbox("Model", sources, key=MODEL_CHOICE, format_func=source_label, on_change=_on_choice, bind=BIND,
                     help="Checkpoints under checkpoints/ and runs/*/, and uploaded ones.")
        _adopt_address_choice()
        st.file_uploader("...or upload a checkpoint", type=["pt", "pth", "ckpt", "pt2"], key=MODEL_UPLOAD,
                         on_change=_on_upload, help="An SWWAE checkpoint written by SWWAE Explorer, a pooling-network "
                         "file or a .pt2 program. Files holding code are refused, never run.")
        networks.own_network_form()
        if MODEL_ERROR in st.session_state:
            st.error(st.session_state.pop(MODEL_ERROR))
        st.selectbox("Examples", [name for name in NATIVE_SHAPES], key=DATASET, disabled=_without_dataset(),
                     help="Images of a dataset, converted to the model's channels and size; the loaded model's "
                          "own dataset unless you choose another. A network trained on a dataset that is not on "
                          "this machine (ImageNet) has none: use uploads and drawings.")
        st.radio("Device", devices, key=DEVICE, horizontal=True)

        explorer = _build_explorer()
        if explorer is not None:
            explorer = at_chosen_step(explorer, SNAPSHOT_STEP)
        if explorer is not None:
            st.caption(_model_caption(explorer))
    st.session_state[EXPLORER] = explorer
    return explorer


def _model_caption(explorer: Explorer) -> str:
    """The loaded model in one line: what it was trained on, its stages, its input (and, for a network, its
    architecture and decoding)."""
    cfg, checkpoint = explorer.checkpoint.model_config, explorer.checkpoint
    trained_on = checkpoint.dataset or "an unnamed dataset"
    examples = f"; examples: {explorer.examples.description}" if explorer.examples is not None else ""
    shape = f"input {cfg.in_channels}x{cfg.image_size}x{cfg.image_size}"
    if getattr(cfg, "decoder", None) is None:
        return (f"Trained on {trained_on}: {cfg.pooling} pooling, stages {list(cfg.channels)}, {shape}; step "
                f"{checkpoint.step}, epoch {checkpoint.epoch}{examples}")
    trained = networks.RANDOM_NOTE if getattr(checkpoint, "random_weights", False) else f"trained on {trained_on}"
    fit = checkpoint.metrics.get("decoder") if isinstance(checkpoint.metrics.get("decoder"), dict) else {}
    decoding = ("deconvnet projection (no trained decoder)" if cfg.decoder == "deconvnet"
                else f"fitted what-where decoder, the network frozen (val MSE {fit.get('val_mse', float('nan')):.4f})"
                if cfg.decoder == "fitted" else f"no decoding ({cfg.decoder_reason})")
    return (f"{cfg.architecture}, {trained}: {len(cfg.pool_sizes)} max-pooling layers {list(cfg.channels)}, {shape}; "
            f"{decoding}{examples}")


def _without_dataset() -> bool:
    """Whether the loaded model is a network whose dataset is not one of the example sets (ImageNet's)."""
    explorer = st.session_state.get(EXPLORER)
    return (explorer is not None and getattr(explorer.checkpoint.model_config, "decoder", None) is not None
            and explorer.checkpoint.dataset not in NATIVE_SHAPES)


def _build_explorer() -> Explorer | None:
    source, device = st.session_state[MODEL_CHOICE], st.session_state[DEVICE]
    try:
        checkpoint, identity = load_identified(source, device)
        check_viewable(checkpoint.model_config)
    except CheckpointError as exc:  # the loaded model's file vanished or changed into something bad
        st.error(f"Could not load {source_label(source)}: {exc}")
        if source == DEFAULT_CHECKPOINT:
            return None
        st.session_state[MODEL_LOADED] = DEFAULT_CHECKPOINT
        del st.session_state[MODEL_CHOICE]  # reset to the default on the next run
        return None
    cfg = checkpoint.model_config
    if getattr(cfg, "decoder", None) is not None and checkpoint.dataset not in NATIVE_SHAPES:
        st.caption("No example set: this network's dataset is not on this machine, so its pages work on uploaded "
                   "and drawn images; top images and the probe over a set need the dataset.")
        return Explorer(source, source_label(source), checkpoint, device, None, identity)
    try:
        examples = examples_of(st.session_state[DATASET], cfg.in_channels, cfg.image_size)
        if tuple(examples.images.shape[1:]) != checkpoint.model.input_shape:
            raise ValueError(f"they are {shape_text(examples.images.shape[1:])} images, the model takes "
                             f"{shape_text(checkpoint.model.input_shape)}")
    except (ValueError, OSError) as exc:  # DatasetUnavailable is a ValueError
        st.warning(f"Examples unavailable: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
        examples = None
    return Explorer(source, source_label(source), checkpoint, device, examples, identity)


def shape_text(shape) -> str:
    """An input shape (C, H, W) as it reads on a page: 1x28x28."""
    return "x".join(str(int(side)) for side in shape)


def at_chosen_step(explorer: Explorer, key: str, label: str = "Training step") -> Explorer:
    """The Explorer of the snapshot chosen on the step slider of `explorer`'s run (app.scrub), drawn here; the
    Explorer itself when its file is no run's, or the checkpoint itself is chosen, or the snapshot cannot load, or
    it takes other inputs than the checkpoint (the examples and every picked input are made for the checkpoint)."""
    path = path_of(explorer.source)
    snapshot = step_slider(path, explorer.checkpoint.step, key, label=label) if path is not None else None
    if snapshot is None:
        return explorer
    source = source_of(snapshot)
    try:
        checkpoint, identity = load_identified(source, explorer.device)
        check_viewable(checkpoint.model_config)
    except CheckpointError as exc:
        st.error(f"Could not load the snapshot: {exc}. Showing {explorer.label}.")
        return explorer
    if checkpoint.model.input_shape != explorer.model.input_shape:  # not this run's model: a file copied in
        st.error(f"Cannot show the snapshot of step {checkpoint.step:,}: it takes "
                 f"{shape_text(checkpoint.model.input_shape)} images, {explorer.label} and its examples "
                 f"{shape_text(explorer.model.input_shape)}. Showing {explorer.label}.")
        return explorer
    return Explorer(source, f"{explorer.label} at step {checkpoint.step:,} (snapshot)", checkpoint, explorer.device,
                    explorer.examples, identity)


def current() -> Explorer:
    """This run's Explorer (set by `render` in app/main.py); stops the page when no model could be loaded."""
    explorer = st.session_state.get(EXPLORER)
    if explorer is None:
        st.info("No model is loaded: choose or upload a checkpoint in the sidebar.")
        st.stop()
    return explorer
