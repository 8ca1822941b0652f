"""The shift probe's curves, computed once per model and input and shared by the Swap and Compare pages (so both
show the same numbers for a model). Keyed on the model's identity (`Explorer.identity`: its file's or upload's
identity and the device; never its name or step, since a file can be rewritten with other weights) and the images."""
from __future__ import annotations

import hashlib

import numpy as np
import streamlit as st
import torch

from core.analysis import ShiftStage, shift_curves

__all__ = ["PROBE_SHIFTS", "dataset_curves", "image_curves", "fingerprint"]

PROBE_SHIFTS = range(5)


@st.cache_data(max_entries=16, show_spinner="Shifting the dataset images...")
def dataset_curves(identity: str, dataset: str, size: int, _model, _images  # noqa: ARG001
                   ) -> list[ShiftStage]:
    """Shift curves of `size` dataset images spread evenly over the set (every class), against each other.
    Keyed on (model identity, dataset, size), which decide `_model` and `_images`."""
    picked = np.linspace(0, len(_images) - 1, size).round().astype(int)
    return shift_curves(_model, _images[picked], PROBE_SHIFTS)


@st.cache_data(max_entries=32, show_spinner=False)
def image_curves(identity: str, a_key: str, b_key: str, _model, _a, _b  # noqa: ARG001
                 ) -> list[ShiftStage]:
    """Shift curves of image A, with image B's switches as the chance level; keyed on the model and both images."""
    return shift_curves(_model, _a, PROBE_SHIFTS, reference=_b)


def fingerprint(image: torch.Tensor) -> str:
    return hashlib.sha256(image.numpy().tobytes()).hexdigest()
