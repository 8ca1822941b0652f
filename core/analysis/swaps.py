"""What-where swaps as pure functions of a model and images: A's what decoded with B's where, the swap matrix, the
reconstruction with where ignored, and the where morph from A's where to B's. The Swap and Compare pages and the
benchmarks call these, so a number on a page and in docs/RESULTS.md cannot disagree.

For a foreign network (core.analysis.networks) the decoder is the deconvnet, whose output is a signed projection, no
image: its distances are measured between projections (a crossing against A's and B's own projections), never
against the images.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch

from core.analysis.networks import projects
from core.analysis.running import as_batch, cat_encodings, evaluating, mse_of, psnr
from core.model import SWWAE

__all__ = ["SwapResult", "WhereMorph", "swap_findings", "swap_where", "swap_matrix", "reconstruct", "no_where_recon", "morph_where"]


@dataclass
class SwapResult:
    """Reconstructions of A and B and of their what-where crossings, each (C, H, W) in the model's range."""

    recon_a: torch.Tensor
    recon_b: torch.Tensor
    what_a_where_b: torch.Tensor
    what_b_where_a: torch.Tensor
    no_where_a: torch.Tensor
    no_where_b: torch.Tensor
    metrics: dict[str, dict[str, float]]  # image name -> {'mse_a', 'psnr_a', 'mse_b', 'psnr_b'}
    projections: bool = False  # a network's deconvnet: mse_a / mse_b are distances to A's / B's own projection


def swap_where(model: SWWAE, a: torch.Tensor, b: torch.Tensor, stages: Sequence[int]) -> SwapResult:
    """Decode A's what with B's where at `stages` (and B's what with A's where); one encode, one decode."""
    if a.shape != b.shape:
        raise ValueError(f"A and B must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    with evaluating(model):
        pair = torch.cat([as_batch(a, model), as_batch(b, model)])  # (2, C, H, W): A, B
        encoding = model.encode(pair)  # batch (A, B)
        crossed = encoding.with_wheres_from(encoding.select([1, 0]), stages)  # (what A + where B, what B + where A)
        both = cat_encodings([encoding, crossed])  # (A, B, A|B, B|A)
        recons = model.decode(both).recon
        no_where = model.decode(encoding, pooling="none").recon
    images = {
        "recon_a": recons[0], "recon_b": recons[1], "what_a_where_b": recons[2], "what_b_where_a": recons[3],
        "no_where_a": no_where[0], "no_where_b": no_where[1],
    }
    projections = projects(model.config)
    reference_a, reference_b = (recons[0], recons[1]) if projections else (pair[0], pair[1])
    metrics = {}
    for name, image in images.items():
        mse_a, mse_b = mse_of(image, reference_a), mse_of(image, reference_b)
        metrics[name] = {"mse_a": mse_a, "psnr_a": math.nan if projections else psnr(mse_a), "mse_b": mse_b,
                         "psnr_b": math.nan if projections else psnr(mse_b)}
    return SwapResult(**images, metrics=metrics, projections=projections)


def _closer(name: str, mse_a: float, mse_b: float, projections: bool = False) -> str:
    """'lies 3.1× closer to B than to A (MSE 0.012 to B, 0.037 to A)' for one picture's errors; for a network's
    projections, the distances to A's and B's own projections."""
    nearer, farther = ("B", "A") if mse_b < mse_a else ("A", "B")
    near, far = min(mse_a, mse_b), max(mse_a, mse_b)
    ratio = far / near if near > 0 else float("inf")
    if projections:
        return (f"{name}: its deconvnet projection lies {ratio:.1f}× closer to {nearer}'s own projection than to "
                f"{farther}'s (mean squared distance {near:.4g} to {nearer}'s, {far:.4g} to {farther}'s)")
    return (f"{name} lies {ratio:.1f}× closer to {nearer} than to {farther} (MSE {near:.4f} to {nearer}, "
            f"{far:.4f} to {farther})")


def swap_findings(result: SwapResult, stages: Sequence[int]) -> list[str]:
    """The swap's result in sentences, each quoting the errors it compares: whose image each crossing resembles.
    Empty when no stage's where was swapped (the crossings are then the plain reconstructions)."""
    if not stages:
        return []
    m, projections = result.metrics, result.projections
    return [_closer("A's content with B's switches", m["what_a_where_b"]["mse_a"], m["what_a_where_b"]["mse_b"],
                    projections) + ".",
            _closer("B's content with A's switches", m["what_b_where_a"]["mse_a"], m["what_b_where_a"]["mse_b"],
                    projections) + "."]


def swap_matrix(model: SWWAE, images: torch.Tensor, stages: Sequence[int] | None = None
                ) -> tuple[torch.Tensor, np.ndarray]:
    """Cell (i, j) decodes the what of image i with the where of image j at `stages` (default: all).

    images: (K, C, H, W), K <= 8 -> (recons (K, K, C, H, W), mse (K, K) of each cell against image i; for a
    network, against image i's own projection, the diagonal).
    """
    k = images.shape[0]
    if not 1 <= k <= 8:
        raise ValueError(f"a swap matrix takes 1 to 8 images, got {k}")
    stages = range(len(model.config.channels)) if stages is None else stages
    with evaluating(model):
        batch = as_batch(images, model)
        encoding = model.encode(batch)
        rows = torch.arange(k).repeat_interleave(k)  # what of image i, K times each
        cols = torch.arange(k).repeat(k)  # where of image j
        grid = encoding.select(rows).with_wheres_from(encoding.select(cols), stages)
        recons = model.decode(grid).recon  # (K*K, C, H, W)
        own = recons[rows * k + rows] if projects(model.config) else batch[rows]  # (K*K, C, H, W) references
        mse = ((recons.float() - own.float()) ** 2).flatten(1).mean(1)  # (K*K,)
    return recons.view(k, k, *recons.shape[1:]), mse.view(k, k).cpu().numpy()


def reconstruct(model: SWWAE, images: torch.Tensor) -> torch.Tensor:
    """The model's own reconstruction of one image or a batch: (N, C, H, W)."""
    with evaluating(model):
        return model.decode(model.encode(as_batch(images, model))).recon


def no_where_recon(model: SWWAE, images: torch.Tensor) -> torch.Tensor:
    """Reconstruction with every where replaced by the 'none' rule (nearest upsampling): (N, C, H, W)."""
    with evaluating(model):
        return model.decode(model.encode(as_batch(images, model)), pooling="none").recon


@dataclass
class WhereMorph:
    """A's what decoded with wheres moving from A's (t = 0) to B's (t = 1)."""

    ts: np.ndarray  # (T,)
    recons: torch.Tensor  # (T, C, H, W)
    mse_to_a: np.ndarray  # (T,) against image A (a network: against A's own projection)
    mse_to_b: np.ndarray  # (T,) against image B (a network: against B's own projection)


def _morphed_wheres(where_a: torch.Tensor, where_b: torch.Tensor, t: float, generator: torch.Generator
                    ) -> torch.Tensor:
    """Soft: (1 - t) * A + t * B of the continuous offsets. Hard: B's switch at a fixed random fraction t of the
    positions (the same positions for every image, and nested: those taken at t are taken at every larger t)."""
    if where_a.is_floating_point():
        return torch.lerp(where_a, where_b, t)
    order = torch.rand(where_a.shape[1:], generator=generator).to(where_a.device)  # (C, h, w)
    return torch.where(order < t, where_b, where_a)


def morph_where(model: SWWAE, a: torch.Tensor, b: torch.Tensor, ts: Sequence[float],
                stages: Sequence[int] | None = None, seed: int = 0) -> WhereMorph:
    """Decode A's what with wheres moved a fraction t of the way from A's to B's at `stages` (default: all)."""
    stages = range(len(model.config.channels)) if stages is None else stages
    with evaluating(model):
        pair = torch.cat([as_batch(a, model), as_batch(b, model)])  # (2, C, H, W)
        encoding = model.encode(pair)
        from_a, from_b = encoding.select(0), encoding.select(1)
        morphs = []
        for t in ts:
            generator = torch.Generator().manual_seed(seed)  # the same positions at every t
            wheres = [_morphed_wheres(where_a, where_b, float(t), generator) if stage in stages else where_a
                      for stage, (where_a, where_b) in enumerate(zip(from_a.wheres, from_b.wheres))]
            morphs.append(replace(from_a, wheres=wheres))  # A's what, wheres t of the way to B's
        recons = model.decode(cat_encodings(morphs)).recon  # (T, C, H, W)
        references = model.decode(encoding).recon if projects(model.config) else pair  # (2, C, H, W): A, B
    errors = lambda image: ((recons.float() - image.float()) ** 2).flatten(1).mean(1).cpu().numpy()  # noqa: E731
    return WhereMorph(np.asarray(ts, dtype=float), recons, errors(references[0:1]), errors(references[1:2]))
