"""The SWWAE objective (Zhao et al. 2015, eq. 1): L = L_NLL + lambda_rec * L2rec + lambda_M * sum_l L2M_l.

One loss serves every regime: supervised (all labels), semi-supervised (label -1 marks an unlabeled sample,
which adds nothing to L_NLL) and unsupervised (no labels, or lambda_nll = 0).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from core.model.swwae import Decoding, Encoding

__all__ = ["UNLABELED", "swwae_loss"]

UNLABELED = -1


def swwae_loss(
    x: torch.Tensor,
    labels: torch.Tensor,
    encoding: Encoding,
    decoding: Decoding,
    *,
    lambda_nll: float = 1.0,
    lambda_rec: float = 1.0,
    lambda_mid: float = 0.2,
) -> dict[str, torch.Tensor]:
    """Every named term of the loss, unweighted, plus their weighted sum as 'total'.

    Returns {'total', 'nll', 'rec', 'mid', 'mid_0', ..., 'mid_{L-2}'}: nll is the mean cross-entropy over the
    labeled samples (0 when there are none); rec is the mean squared error of the reconstruction against x;
    mid_l is the mean squared error between decoder hidden l and encoder what l; mid is their sum. A term whose
    lambda is 0 is still reported (detached) but is left out of the total, so it cannot affect gradients.
    """
    if labels.shape != (x.shape[0],):
        raise ValueError(f"labels must have shape ({x.shape[0]},), got {tuple(labels.shape)}")
    logits = encoding.logits.float()
    labeled = labels != UNLABELED
    # sum / max(count, 1): a batch with no labels gives exactly 0, not NaN
    nll = F.cross_entropy(logits, labels, ignore_index=UNLABELED, reduction="sum") / labeled.sum().clamp(min=1)
    rec = F.mse_loss(decoding.recon.float(), x.float())
    mids = [F.mse_loss(hidden.float(), what.float()) for hidden, what in zip(decoding.hiddens, encoding.whats)]
    mid = torch.stack(mids).sum() if mids else torch.zeros((), device=x.device)

    weighted = [(lambda_nll, nll), (lambda_rec, rec), (lambda_mid, mid)]
    total = sum((weight * term for weight, term in weighted if weight != 0), torch.zeros((), device=x.device))
    terms = {"total": total}
    for name, (weight, term) in zip(("nll", "rec", "mid"), weighted):
        terms[name] = term if weight != 0 else term.detach()
    for stage, term in enumerate(mids):
        terms[f"mid_{stage}"] = term if lambda_mid != 0 else term.detach()
    return terms
