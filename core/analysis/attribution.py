"""Which input pixels drive a class logit: Captum attributions of an SWWAE's classifier.

Methods (Captum):
- ``integrated_gradients``: Sundararajan et al. 2017, path integral of the gradient from a black baseline.
- ``saliency``: Simonyan et al. 2014, the gradient of the class logit (signed here; abs on request).
- ``deconvolution``: Zeiler & Fergus 2014. Each ReLU passes back relu(grad); max pooling routes the signal
  through the *switches* (the where), which is exactly how the SWWAE decoder reconstructs.
- ``guided_backprop``: Springenberg et al. 2015, the gradient masked by both the forward ReLU and relu(grad).

Deconvolution and guided backprop hardly depend on the class explained (Nie, Zhang & Patel 2018, "A theoretical
explanation for perplexing behaviors of backpropagation-based visualizations"; Adebayo et al. 2018, "Sanity checks
for saliency maps"): `target_contrast` measures it on one image, as the correlation of the maps of the two most
likely classes. `top_unit` is the SWWAE's own route through the switches to set beside deconvolution: the top
stage's strongest channel decoded alone through the image's wheres (core.analysis.unit_view).

Captum's deconvolution and guided backprop put backward hooks on every ``nn.ReLU`` of the model they are given.
The SWWAE's ReLUs are in-place (a fragile mix with backward hooks) and the dashboard's model is shared by every
session, so attribution runs on a private copy with out-of-place ReLUs (`LogitsModel`); the model passed in is
never modified or hooked.
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from core.analysis.running import as_batch, evaluating
from core.analysis.units import UnitView, unit_view
from core.model import SWWAE

__all__ = ["METHODS", "METHOD_LABELS", "NEARLY_SAME", "LogitsModel", "Attribution", "attribute", "attribute_all",
           "map_correlation", "TargetContrast", "target_contrast", "TopUnit", "top_unit"]

METHODS = ("integrated_gradients", "saliency", "deconvolution", "guided_backprop")
METHOD_LABELS = {
    "integrated_gradients": "Integrated Gradients",
    "saliency": "Saliency",
    "deconvolution": "Deconvolution (Zeiler-Fergus)",
    "guided_backprop": "Guided Backprop",
}
NEARLY_SAME = 0.9  # maps of two classes correlating at least this much barely depend on the class


class LogitsModel(nn.Module):
    """image (N, C, H, W) in [0, 1] -> class logits (N, num_classes), on an eval-mode copy with out-of-place ReLUs."""

    def __init__(self, model: SWWAE):
        super().__init__()
        self.swwae = copy.deepcopy(model).eval()
        for module in self.swwae.modules():
            if isinstance(module, nn.ReLU):
                module.inplace = False
        for parameter in self.swwae.parameters():
            parameter.requires_grad_(False)  # gradients are wanted for the input only

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.swwae.encode(images, check_finite=False).logits


@dataclass
class Attribution:
    method: str
    target: int  # the class whose logit is explained
    values: np.ndarray  # (C, H, W) attribution of each input pixel, signed
    scale: float  # max |values| (> 0), for a symmetric colour scale

    @property
    def normalised(self) -> np.ndarray:
        """(H, W) in [-1, 1]: the channel mean divided by `scale`, ready for a fixed diverging colour scale."""
        return self.values.mean(0) / self.scale


def _explainer(method: str, wrapper: LogitsModel):
    from captum import attr  # imported here: importing this module does no work

    if method == "integrated_gradients":
        return attr.IntegratedGradients(wrapper)
    if method == "saliency":
        return attr.Saliency(wrapper)
    if method == "deconvolution":
        return attr.Deconvolution(wrapper)
    if method == "guided_backprop":
        return attr.GuidedBackprop(wrapper)
    raise ValueError(f"unknown attribution method {method!r}; expected one of {METHODS}")


def attribute(model: SWWAE | LogitsModel, image: torch.Tensor, method: str, target: int | None = None, *,
              ig_steps: int = 32) -> Attribution:
    """Attribution of one image (C, H, W) or (1, C, H, W) for class `target` (None: the predicted class)."""
    wrapper = model if isinstance(model, LogitsModel) else LogitsModel(model)
    param = next(wrapper.parameters())
    batch = (image.unsqueeze(0) if image.dim() == 3 else image).to(device=param.device, dtype=param.dtype)
    if batch.shape[0] != 1:
        raise ValueError(f"attribute takes one image, got a batch of {batch.shape[0]}")
    wrapper.swwae.check_input(batch)
    num_classes = wrapper.swwae.config.num_classes
    if target is None:
        with torch.no_grad():
            target = int(wrapper(batch).argmax(1).item())
    if not 0 <= target < num_classes:
        raise ValueError(f"target class {target} does not exist; expected 0..{num_classes - 1}")
    explainer = _explainer(method, wrapper)
    inputs = batch.clone().requires_grad_(True)  # (1, C, H, W)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")  # expected, see module doc
        values = _run(explainer, method, inputs, target, ig_steps)
    values = values.detach()[0].float().cpu().numpy()  # (C, H, W)
    scale = float(np.abs(values).max(initial=0.0))
    return Attribution(method=method, target=target, values=values, scale=scale if scale > 0 else 1.0)


def _run(explainer, method: str, inputs: torch.Tensor, target: int, ig_steps: int) -> torch.Tensor:
    if method == "integrated_gradients":
        return explainer.attribute(inputs, baselines=torch.zeros_like(inputs), target=target, n_steps=ig_steps,
                                   internal_batch_size=ig_steps)
    if method == "saliency":
        return explainer.attribute(inputs, target=target, abs=False)
    return explainer.attribute(inputs, target=target)


def attribute_all(model: SWWAE, image: torch.Tensor, methods: tuple[str, ...] = METHODS, target: int | None = None,
                  *, ig_steps: int = 32) -> list[Attribution]:
    """`attribute` for several methods, sharing one model copy."""
    wrapper = LogitsModel(model)
    return [attribute(wrapper, image, method, target, ig_steps=ig_steps) for method in methods]


def map_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two maps of one shape over their values; NaN when either map is constant."""
    assert a.shape == b.shape, f"maps of different shapes {a.shape} and {b.shape} cannot be correlated"
    a = a.astype(np.float64).ravel() - a.mean(dtype=np.float64)
    b = b.astype(np.float64).ravel() - b.mean(dtype=np.float64)
    norm = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / norm) if norm > 0 else float("nan")


@dataclass
class TargetContrast:
    """One method's maps for the two most likely classes of one image, and how alike they are."""

    method: str
    first: Attribution  # the predicted class's map
    second: Attribution  # the runner-up's map
    correlation: float  # map_correlation of the two maps as drawn (channel means); NaN when one is constant

    @property
    def nearly_same(self) -> bool:
        return self.correlation >= NEARLY_SAME


def target_contrast(model: SWWAE, image: torch.Tensor, methods: tuple[str, ...] = METHODS, *,
                    ig_steps: int = 32) -> list[TargetContrast]:
    """Per method, the maps of the predicted class and of the second most likely class, and their correlation:
    near 1, the method shows the image rather than the class (module docstring)."""
    assert model.config.num_classes >= 2, "contrasting two classes needs a model of at least two classes"
    wrapper = LogitsModel(model)
    batch = as_batch(image, wrapper.swwae)  # (1, C, H, W)
    with torch.no_grad():
        first, second = wrapper(batch)[0].topk(2).indices.tolist()
    contrasts = []
    for method in methods:
        maps = [attribute(wrapper, batch, method, target, ig_steps=ig_steps) for target in (first, second)]
        contrasts.append(TargetContrast(method, *maps, map_correlation(*(m.values.mean(0) for m in maps))))
    return contrasts


@dataclass
class TopUnit:
    """The top stage's strongest channel for one image, decoded alone through the image's wheres."""

    view: UnitView  # stage, channel, its decoding and contribution (C, H, W)
    scale: float  # max |contribution| of the channel mean (> 0), for the diverging scale attributions use

    @property
    def contribution(self) -> np.ndarray:
        """(H, W) in [-1, 1]: what the unit adds to the decoding of an all-zero stage, over `scale`."""
        return self.view.contribution.mean(0) / self.scale


def top_unit(model: SWWAE, image: torch.Tensor) -> TopUnit:
    """The top stage's channel with the largest what for this image, decoded alone through the image's wheres: the
    SWWAE decoder's route back through the switches, to set beside deconvolution's."""
    top = len(model.config.channels) - 1
    with evaluating(model):
        whats = model.encode(as_batch(image, model)).whats[top][0]  # (C_top, h, w)
    channel = int(whats.flatten(1).amax(1).argmax())
    view = unit_view(model, image, top, channel)
    scale = float(np.abs(view.contribution.mean(0)).max(initial=0.0))
    return TopUnit(view, scale if scale > 0 else 1.0)
