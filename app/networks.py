"""Foreign pooling networks in the explorer: telling a pooling-network file from an SWWAE checkpoint, opening it (or
a torchvision / zoo architecture, a `.pt2`) through core.model.specs, cached like an SWWAE checkpoint, and the
sidebar's "Open your own network" controls.

A network opens as a `NetworkCheckpoint`: a core.model.Checkpoint whose model is a PoolingNetwork and whose
model_config its NetworkConfig, so every page reads it the way it reads an SWWAE's. Its identity follows the SWWAE
rules: a file's `sidebar.file_identity`, an upload's sha256, and for an architecture opened from the sidebar the
sha256 of (spec, input size, weights bytes). Its source (the Model select's value) is
``"network:<sha256 prefix>:<label>"``, the recipe kept in the session (`NETWORKS`). Every refusal is one
CheckpointError line, so the sidebar shows it with st.error and keeps the previous model.
"""
from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from core.model import Checkpoint, CheckpointError, NetworkError
from core.model import exported, network_file, specs, zoo

__all__ = ["NETWORK_PREFIX", "NETWORKS", "NetworkCheckpoint", "is_network_file", "is_network_bytes", "open_path",
           "open_bytes", "open_recipe", "network_file_label", "own_network_form", "untrained_note", "RANDOM_NOTE"]

NETWORK_PREFIX = "network:"
NETWORKS = "own_networks"  # session key: {source: Recipe} of networks opened from the sidebar's controls
OWN_ARCH, OWN_SIZE, OWN_FILE, OWN_OPEN = "own_arch", "own_size", "own_file", "own_open"  # the expander's widgets
OWN_REQUEST = "own_request"  # a recipe source asked for by the Open button, loaded by the sidebar on this run
DEFAULT_ARCHITECTURE = "torchvision:vgg11_bn"
TORCHVISION_SIZE, ZOO_SIZE = 224, 28
RANDOM_NOTE = "random weights: the pictures show an untrained network"
_MARKER = network_file.NETWORK_FORMAT.encode()  # the format marker, stored as plain text in a torch.save zip's data.pkl


@dataclass
class NetworkCheckpoint(Checkpoint):
    """A foreign network as the pages read a checkpoint (model: PoolingNetwork, model_config: NetworkConfig)."""

    random_weights: bool = False  # nothing trained it: its class outputs mean nothing
    class_names: list[str] | None = None  # its own class names, when its source gives them (ImageNet weights)

    @property
    def classifier_trained(self) -> bool:
        return not self.random_weights and super().classifier_trained


@dataclass(frozen=True)
class Recipe:
    """An architecture opened from the sidebar: spec, input side and the weights' bytes (None: random)."""

    spec: str
    size: int | None
    weights: bytes | None
    weights_name: str = ""

    @property
    def sha256(self) -> str:
        digest = hashlib.sha256(f"{self.spec}|{self.size}|".encode())
        digest.update(self.weights or b"")
        return digest.hexdigest()


def untrained_note(checkpoint: Checkpoint) -> str:
    """Why a model's class outputs mean nothing, in one line (random weights, or trained without labels)."""
    if getattr(checkpoint, "random_weights", False):
        return ("No class prediction: this network has random weights (nothing trained it), so its class "
                "probabilities mean nothing.")
    return ("No class prediction: this model was trained without labels (unsupervised), so its classifier head keeps "
            "its random initial weights and its class probabilities mean nothing.")


# ---- telling the formats apart, cheaply: the zip's pickle holds the marker as text; no tensor is read ----

def _has_marker(archive: zipfile.ZipFile) -> bool:
    pickles = [name for name in archive.namelist() if name.endswith("data.pkl")]
    return bool(pickles) and _MARKER in archive.read(pickles[0])


def is_network_bytes(data: bytes) -> bool:
    """Whether bytes are a pooling-network file or a .pt2 program (else: an SWWAE checkpoint, or unreadable)."""
    try:
        return exported.is_pt2_archive(data) or _has_marker(zipfile.ZipFile(io.BytesIO(data)))
    except (zipfile.BadZipFile, OSError, KeyError, ValueError):
        return False


@st.cache_data(max_entries=256, show_spinner=False)
def is_network_file(path: str, identity: str) -> bool:  # noqa: ARG001 - identity: the cache key of this version
    """Whether the file at `path` is a pooling-network file or a .pt2 (read once per version of the file)."""
    if path.endswith(".pt2"):
        return True
    try:
        with zipfile.ZipFile(path) as archive:
            return _has_marker(archive)
    except (zipfile.BadZipFile, OSError, KeyError, ValueError):
        return False


@st.cache_data(max_entries=256, show_spinner=False)
def network_file_label(path: str, identity: str) -> str:  # noqa: ARG001 - identity: the cache key
    """'fashion_vgg (zoo:small_vgg classifier, no decoder)', 'fashion_vgg_decoder (zoo:small_vgg classifier, fitted
    what-where decoder)' for the Model select."""
    name = Path(path).stem
    if path.endswith(".pt2"):
        return f"{name} (exported classifier, no decoder)"
    try:
        stored = network_file.read_network_file(path)
        decoder = "fitted what-where decoder" if stored.decoder_config is not None else "no decoder"
        return f"{name} ({stored.architecture} classifier, {decoder})"
    except NetworkError:
        return f"{name} (unreadable pooling-network file)"


# ---- opening, cached under the identity ----

def _checkpoint(loaded: specs.LoadedNetwork, device: str, random_weights: bool = False) -> NetworkCheckpoint:
    network = loaded.network.to(device).eval()
    return NetworkCheckpoint(model=network, model_config=network.config, train_config=loaded.train_config,
                             data_config=loaded.data_config, step=loaded.step, epoch=loaded.epoch,
                             metrics=dict(loaded.metrics), random_weights=random_weights,
                             class_names=loaded.class_names)


def _opened(spec, **kwargs) -> specs.LoadedNetwork:
    try:
        return specs.open_network(spec, **kwargs)
    except NetworkError as exc:
        raise CheckpointError(str(exc).splitlines()[0] if str(exc) else "cannot open this network") from None


@st.cache_resource(max_entries=4, show_spinner="Opening the network...")
def open_path(path: str, identity: str, device: str) -> NetworkCheckpoint:  # noqa: ARG001 - identity: key
    return _checkpoint(_opened(path), device)


@st.cache_resource(max_entries=4, show_spinner="Opening the network...")
def open_bytes(sha256: str, device: str, _data: bytes) -> NetworkCheckpoint:  # noqa: ARG001 - sha256: key
    return _checkpoint(_opened(bytes(_data)), device)


@st.cache_resource(max_entries=4, show_spinner="Building the network...")
def _open_recipe(sha256: str, device: str, _recipe: Recipe) -> NetworkCheckpoint:  # noqa: ARG001 - sha256: key
    recipe = _recipe
    if recipe.spec == "pt2":
        return _checkpoint(_opened(recipe.weights, image_size=recipe.size), device)
    loaded = _opened(recipe.spec, weights=recipe.weights, image_size=recipe.size)
    return _checkpoint(loaded, device, random_weights=recipe.weights is None)


def open_recipe(source: str, device: str) -> tuple[NetworkCheckpoint, str]:
    """The network of a "network:" source (cached) and its identity; CheckpointError when the session lost it."""
    recipe = st.session_state.get(NETWORKS, {}).get(source)
    if recipe is None:
        raise CheckpointError("this network is no longer in this session; open it again in the sidebar")
    return _open_recipe(recipe.sha256, device, recipe), f"network:{recipe.sha256}@{device}"


# ---- the sidebar's "Open your own network" ----

def _architectures() -> list[str]:
    return [DEFAULT_ARCHITECTURE, *(f"zoo:{name}" for name in zoo.ARCHITECTURES),
            *(f"torchvision:{name}" for name in specs.torchvision_names() if f"torchvision:{name}" != DEFAULT_ARCHITECTURE)]


def _on_architecture() -> None:
    st.session_state[OWN_SIZE] = ZOO_SIZE if st.session_state[OWN_ARCH].startswith("zoo:") else TORCHVISION_SIZE


def _on_open() -> None:
    """Keep the recipe of the controls' network and ask the sidebar to load it (it reports a failure)."""
    uploaded = st.session_state.get(OWN_FILE)
    data, name = (uploaded.getvalue(), uploaded.name) if uploaded is not None else (None, "")
    size = int(st.session_state[OWN_SIZE])
    if name.endswith(".pt2"):
        recipe, label = Recipe("pt2", size, data, name), f"{name} ({size}×{size})"
    else:
        spec = st.session_state[OWN_ARCH]
        how = f"weights: {name}" if data is not None else "random weights"
        recipe, label = Recipe(spec, size, data, name), f"{spec} at {size}×{size} ({how})"
    source = f"{NETWORK_PREFIX}{recipe.sha256[:16]}:{label}"
    st.session_state.setdefault(NETWORKS, {})[source] = recipe
    st.session_state[OWN_REQUEST] = source


def own_network_form() -> None:
    """The expander's controls: an architecture, an input size and a weights (.pth) or program (.pt2) upload."""
    with st.expander("Open your own network"):
        st.selectbox("Architecture", _architectures(), key=OWN_ARCH, on_change=_on_architecture,
                     help="A torchvision classification model or one of the project's own (zoo:). Its max-pooling "
                          "layers (nn.MaxPool2d) are shown as the SWWAE's are.")
        st.session_state.setdefault(OWN_SIZE, TORCHVISION_SIZE)
        st.number_input("Input size (pixels a side)", min_value=8, max_value=512, step=1, key=OWN_SIZE)
        st.file_uploader("Weights (.pth state dict) or a program (.pt2)", type=["pth", "pt", "pt2"], key=OWN_FILE,
                         help="Read without running code (weights_only=True; a .pt2 is screened). With no file the "
                              "network opens with random weights.")
        st.button("Open", key=OWN_OPEN, on_click=_on_open, width="stretch")
        st.caption(f"With no file: {RANDOM_NOTE}.")
