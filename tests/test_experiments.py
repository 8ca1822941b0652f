"""The what-where experiments the dashboard calls, checked against direct model calls."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.analysis import (
    along_axis, channel_peaks, layer_views, morph_where, no_where_recon, psnr, shift_curves, shift_findings,
    shift_image,
    shift_probe, swap_matrix, swap_where, top_images, unit_decodings, unit_view,
)
from core.model import SWWAE, ModelConfig, digits_config


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


def identity_model(stages: int, pooling: str = "hard", size: int = 16) -> SWWAE:
    """A hand-built SWWAE whose every stage is a 1x1 identity conv then 2x2 pooling: its what is exactly invariant
    to a shift inside a pooling window, and its where exactly follows the shift."""
    config = ModelConfig(image_size=size, channels=(1,) * stages, kernel_sizes=(1,) * stages, pool_sizes=(2,) * stages,
                         batch_norm=False, head_width=0, pooling=pooling, soft_beta=60.0, input_mean=(0.0,),
                         input_std=(1.0,))
    model = SWWAE(config).eval()
    with torch.no_grad():
        for stage in model.encoder_stages:
            stage[0].weight.fill_(1.0)
            stage[0].bias.zero_()
    return model


def dots(size: int, points: list[tuple[int, int]]) -> torch.Tensor:
    image = torch.zeros(1, size, size)
    for row, col in points:
        image[0, row, col] = 1.0
    return image


@pytest.mark.parametrize("pooling", ["hard", "soft"])
def test_shift_probe_gives_the_ideal_values_on_an_invariant_model(pooling):
    model = identity_model(1, pooling)
    image = dots(16, [(2, 2), (6, 10), (12, 4)])  # each dot at the top-left of its 2x2 window
    other = dots(16, [(3, 3), (7, 11), (13, 5)])  # a different image: dots at the bottom-right corners
    stage, = shift_probe(model, image, 1, 0, reference=other)  # one pixel right: every dot stays in its window
    assert stage.what_change == pytest.approx(0.0, abs=1e-5) and stage.what_per_pre_pool == pytest.approx(0.0, abs=1e-5)
    assert stage.pre_pool_change == pytest.approx(math.sqrt(2)) and stage.input_change == pytest.approx(math.sqrt(2))
    assert stage.switches == 3 and stage.where_followed == 1.0 and stage.where_reference == 0.0
    assert stage.where_error == pytest.approx(0.0, abs=0.05)
    down, = shift_probe(model, image, 0, 1, reference=other)
    assert down.what_change == pytest.approx(0.0, abs=1e-5) and down.where_followed == 1.0


def test_where_follows_a_shift_by_the_total_stride_at_every_stage():
    model = identity_model(2)
    image = dots(16, [(1, 2), (5, 9), (9, 4)])
    stage1, stage2 = shift_probe(model, image, 4, 4)  # 4 px = stage 2's total stride
    assert stage1.stride == 2 and stage2.stride == 4
    assert stage1.where_followed == 1.0 and stage2.where_followed == 1.0 and stage2.switches == 3
    assert math.isnan(stage1.where_reference)  # one image and no reference given: no chance level
    odd, _ = shift_probe(model, image, 1, 0)  # moves the dots across window borders
    assert odd.where_followed == 1.0 and odd.what_change > 0  # the switch still follows; the what does not stay put


def test_shift_curves_cover_both_axes_and_their_findings_quote_the_numbers(model):
    images = torch.rand(4, 1, 28, 28)
    rows = shift_curves(model, images, shifts=[0, 2])
    assert [(r.shift_x, r.shift_y) for r in rows[::3]] == [(0, 0), (2, 0), (0, 0), (0, 2)]
    assert all(r.where_followed == 1.0 and r.what_change == 0 for r in rows if r.shift == 0)
    direct = shift_probe(model, images, 0, 2)
    assert [r.what_change for r in rows[-3:]] == [r.what_change for r in direct]
    assert [(r.shift, r.stage) for r in along_axis(rows, "y")] == [(0, 0), (0, 1), (0, 2), (2, 0), (2, 1), (2, 2)]
    assert along_axis(rows, "y")[3] is rows[-3] and along_axis(rows, "x")[0] is rows[0]
    findings = shift_findings(rows, 2)
    ratio = np.mean([r.what_per_input for r in rows if r.shift == 2 and r.stage == 0])
    assert any(f"{ratio:.2f}×" in line for line in findings)
    assert shift_findings(rows, 0) == []


def test_unit_decoding_of_all_channels_equals_decoding_from_that_stage(model):
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        encoding = model.encode(x)
        full = model.decode(encoding).recon
        for stage, channels in enumerate(model.config.channels):
            every = model.decode(encoding.keeping_channels(stage, range(channels)), from_stage=stage).recon
            assert torch.allclose(every, model.decode(encoding, from_stage=stage).recon)
        assert torch.allclose(model.decode(encoding, from_stage=2).recon, full)
        # decoding from stage 1 is the decoder's lower half applied to stage 1's what, by hand
        h = F.max_unpool2d(encoding.whats[1], encoding.wheres[1], 2, 2, output_size=(14, 14))
        h = F.max_unpool2d(model.decoder_stages[1](h), encoding.wheres[0], 2, 2, output_size=(28, 28))
        by_hand = torch.sigmoid(model.decoder_stages[0](h))
        assert torch.allclose(model.decode(encoding, from_stage=1).recon, by_hand, atol=1e-6)
        only = model.decode(encoding.keeping_channels(1, [3]), from_stage=1).recon
        nothing = model.decode(encoding.keeping_channels(1, []), from_stage=1).recon
    decodings, contributions = unit_decodings(model, x, 1, 3)
    assert torch.allclose(decodings, only, atol=1e-6) and torch.allclose(contributions, only - nothing, atol=1e-6)
    view = unit_view(model, x[0], 1, 3)
    assert np.allclose(view.decoding, only[0].numpy(), atol=1e-6)
    assert np.allclose(view.what, encoding.whats[1][0, 3].numpy())
    assert view.recon_mse == pytest.approx(((full[0] - x[0]) ** 2).mean().item(), rel=1e-5)
    with pytest.raises(ValueError, match="channel 6 does not exist"):
        encoding.keeping_channels(1, [6])


def test_top_images_rank_by_the_channel_peak(model):
    images = torch.rand(7, 1, 28, 28)
    peaks = channel_peaks(model, images, batch_size=3)
    with torch.no_grad():
        whats = model.encode(images).whats
    for stage, what in enumerate(whats):
        assert np.allclose(peaks[stage], what.amax(dim=(2, 3)).numpy())
    top = top_images(peaks[2], 5, count=3)
    assert list(top) == list(np.argsort(-whats[2][:, 5].amax(dim=(1, 2)).numpy())[:3])


@pytest.mark.parametrize("pooling", ["hard", "soft"])
def test_where_morph_runs_from_a_to_what_a_with_where_b(pooling):
    torch.manual_seed(0)
    model = SWWAE(digits_config(channels=(4, 6, 8), head_width=16, pooling=pooling)).eval()
    a, b = torch.rand(1, 28, 28), torch.rand(1, 28, 28)
    morph = morph_where(model, a, b, [0.0, 0.5, 1.0])
    swapped = swap_where(model, a, b, [0, 1, 2])
    assert torch.allclose(morph.recons[0], swapped.recon_a, atol=1e-6)
    assert torch.allclose(morph.recons[2], swapped.what_a_where_b, atol=1e-6)
    assert morph.mse_to_a[0] == pytest.approx(swapped.metrics["recon_a"]["mse_a"], rel=1e-5)
    assert not torch.allclose(morph.recons[1], morph.recons[0]) and not torch.allclose(morph.recons[1], morph.recons[2])


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
