"""The SWWAE loss: unlabeled samples add nothing to NLL, and each lambda = 0 removes its term."""
import pytest
import torch
import torch.nn.functional as F

from core.model import swwae_loss
from core.model import SWWAE, digits_config


@pytest.fixture
def model():
    torch.manual_seed(0)
    return SWWAE(digits_config(channels=(4, 6, 8), head_width=16)).eval()


def test_terms_match_independent_formulas(model):
    x, labels = torch.rand(4, 1, 28, 28), torch.tensor([3, -1, 7, -1])
    enc, dec = model(x)
    terms = swwae_loss(x, labels, enc, dec, lambda_nll=1.0, lambda_rec=2.0, lambda_mid=0.5)
    nll = F.cross_entropy(enc.logits[[0, 2]], labels[[0, 2]])
    rec = ((dec.recon - x) ** 2).mean()
    mids = [((h - w) ** 2).mean() for h, w in zip(dec.hiddens, enc.whats)]
    assert torch.allclose(terms["nll"], nll) and torch.allclose(terms["rec"], rec)
    assert torch.allclose(terms["mid_0"], mids[0]) and torch.allclose(terms["mid_1"], mids[1])
    assert torch.allclose(terms["total"], nll + 2.0 * rec + 0.5 * (mids[0] + mids[1]))


def test_unlabeled_samples_get_zero_nll_gradient(model):
    x = torch.rand(4, 1, 28, 28, requires_grad=True)
    labels = torch.tensor([1, -1, 2, -1])
    enc, dec = model(x)
    nll = swwae_loss(x, labels, enc, dec, lambda_rec=0, lambda_mid=0)["total"]
    (grad,) = torch.autograd.grad(nll, x)
    assert grad[[1, 3]].abs().max() == 0 and grad[[0, 2]].abs().max() > 0


def test_batch_without_labels_gives_zero_nll_not_nan(model):
    x = torch.rand(3, 1, 28, 28)
    enc, dec = model(x)
    terms = swwae_loss(x, torch.full((3,), -1), enc, dec)
    assert terms["nll"].item() == 0.0 and torch.isfinite(terms["total"])


@pytest.mark.parametrize("off", ["lambda_nll", "lambda_rec", "lambda_mid"])
def test_lambda_zero_removes_its_term(model, off):
    x, labels = torch.rand(2, 1, 28, 28), torch.tensor([0, 1])
    enc, dec = model(x)
    weights = {"lambda_nll": 1.0, "lambda_rec": 1.0, "lambda_mid": 1.0, off: 0.0}
    terms = swwae_loss(x, labels, enc, dec, **weights)
    kept = [name for key, name in (("lambda_nll", "nll"), ("lambda_rec", "rec"), ("lambda_mid", "mid")) if key != off]
    assert torch.allclose(terms["total"], sum(terms[name] for name in kept))
    removed = {"lambda_nll": "nll", "lambda_rec": "rec", "lambda_mid": "mid"}[off]
    assert not terms[removed].requires_grad  # still reported, but cannot steer training
    # a removed term cannot poison the total even when it is not finite
    bad = dec.__class__(recon=dec.recon * float("nan"), hiddens=dec.hiddens) if off == "lambda_rec" else dec
    assert torch.isfinite(swwae_loss(x, labels, enc, bad, **weights)["total"])


def test_label_shape_is_checked(model):
    x = torch.rand(2, 1, 28, 28)
    enc, dec = model(x)
    with pytest.raises(ValueError, match=r"\(2,\)"):
        swwae_loss(x, torch.tensor([0, 1, 2]), enc, dec)
