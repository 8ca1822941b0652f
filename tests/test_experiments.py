"""The what-where experiments the dashboard calls, checked against direct model calls."""
import math

import numpy as np
import pytest
import torch

from core.experiments import layer_views, no_where_recon, psnr, shift_image, swap_matrix, swap_where, translation_probe
from core.model import SWWAE, digits_config


@pytest.fixture
def model():
    torch.manual_seed(0)
    return SWWAE(digits_config(channels=(4, 6, 8), head_width=16)).eval()


def test_swap_where_matches_direct_decoding(model):
    a, b = torch.rand(1, 28, 28), torch.rand(1, 28, 28)
    result = swap_where(model, a, b, [1])
    with torch.no_grad():
        enc_a, enc_b = model.encode(a[None]), model.encode(b[None])
        expected = model.decode(enc_a.with_wheres_from(enc_b, [1])).recon[0]
        recon_a = model.decode(enc_a).recon[0]
    assert torch.allclose(result.what_a_where_b, expected, atol=1e-6)
    assert torch.allclose(result.recon_a, recon_a, atol=1e-6)
    mse = ((expected - a) ** 2).mean().item()
    assert math.isclose(result.metrics["what_a_where_b"]["mse_a"], mse, rel_tol=1e-5)
    assert math.isclose(result.metrics["what_a_where_b"]["psnr_a"], 10 * math.log10(1 / mse), rel_tol=1e-5)


def test_swap_with_no_stage_gives_the_plain_reconstructions(model):
    a, b = torch.rand(1, 28, 28), torch.rand(1, 28, 28)
    result = swap_where(model, a, b, [])
    assert torch.allclose(result.what_a_where_b, result.recon_a) and torch.allclose(result.what_b_where_a, result.recon_b)


def test_swap_matrix_diagonal_is_plain_reconstruction(model):
    images = torch.rand(3, 1, 28, 28)
    recons, mse = swap_matrix(model, images)
    with torch.no_grad():
        plain = model.decode(model.encode(images)).recon
        cross = model.decode(model.encode(images[[0]]).with_wheres_from(model.encode(images[[2]]), [0, 1, 2])).recon
    for i in range(3):
        assert torch.allclose(recons[i, i], plain[i], atol=1e-6)
    assert torch.allclose(recons[0, 2], cross[0], atol=1e-6)
    assert mse[0, 0] == pytest.approx(((plain[0] - images[0]) ** 2).mean().item(), rel=1e-5)
    with pytest.raises(ValueError, match="1 to 8"):
        swap_matrix(model, torch.rand(9, 1, 28, 28))


def test_no_where_recon_equals_a_none_mode_decode(model):
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        expected = model.decode(model.encode(x), pooling="none").recon
    assert torch.allclose(no_where_recon(model, x), expected)
    assert not torch.allclose(expected, model.decode(model.encode(x)).recon)


def test_shift_image_moves_pixels_and_zero_fills():
    x = torch.arange(16.0).view(1, 4, 4)
    s = shift_image(x, 1, 2)
    assert torch.equal(s[0, 2:, 1:], x[0, :2, :3]) and s[0, :2].abs().sum() == 0 and s[0, :, 0].abs().sum() == 0


def test_translation_probe_is_zero_for_no_shift_and_positive_for_a_shift(model):
    x = torch.rand(1, 28, 28)
    assert all(p.what_change == 0 and p.where_change == 0 for p in translation_probe(model, x, 0, 0))
    moved = translation_probe(model, x, 3, 1)
    assert len(moved) == 3 and all(p.what_change > 0 and 0 < p.where_change <= 1 for p in moved)


def test_layer_views_agree_with_the_encoding(model):
    x = torch.rand(1, 28, 28)
    views, enc, dec = layer_views(model, x)
    assert model.training is False
    for view in views:
        assert np.allclose(view.what, enc.whats[view.stage][0].numpy())
        # the where id picks the cell of the pre-pool map that holds the what
        c, h, w = view.what.shape
        rows = np.arange(h)[:, None] * view.pool_size + view.where_id // view.pool_size
        cols = np.arange(w)[None, :] * view.pool_size + view.where_id % view.pool_size
        picked = np.take_along_axis(view.pre_pool.reshape(c, -1), (rows * view.pre_pool.shape[-1] + cols).reshape(c, -1), 1)
        assert np.allclose(picked.reshape(c, h, w), view.what)
    assert views[-1].hidden is None and views[0].mid_mse == pytest.approx(((dec.hiddens[0] - enc.whats[0]) ** 2).mean().item(), rel=1e-5)


def test_experiments_restore_training_mode(model):
    model.train()
    swap_where(model, torch.rand(1, 28, 28), torch.rand(1, 28, 28), [0])
    assert model.training


def test_psnr():
    assert psnr(0.01) == pytest.approx(20.0) and psnr(0.0) == math.inf
