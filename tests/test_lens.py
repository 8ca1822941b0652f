"""The pooling lens against independent references: F.max_pool2d's indices for the marked cell, F.max_unpool2d for
the unpooled map, a brute-force count for ties, and the soft pool's own offsets for the soft-argmax position."""
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.analysis import layer_views, pooling_lens, switch_agreement, window_ties
from core.model import SWWAE, ModelConfig


def tiny(pooling: str, pool: int = 2) -> SWWAE:
    torch.manual_seed(0)
    cfg = ModelConfig(channels=(4, 6), kernel_sizes=(3, 3), pool_sizes=(pool, 2), pooling=pooling,
                      image_size=14 if pool == 2 else 15)
    return SWWAE(cfg).eval()


def image_with_flat_regions(size: int) -> torch.Tensor:
    """A digit-like image: zeros (ties after ReLU) and a blob of distinct values."""
    torch.manual_seed(1)
    x = torch.zeros(1, 1, size, size)
    x[..., 3:10, 4:11] = torch.rand(7, 7)
    return x


def brute_ties(pre_pool: np.ndarray, s: int) -> np.ndarray:
    h, w = pre_pool.shape[0] // s, pre_pool.shape[1] // s
    out = np.zeros((h, w), dtype=bool)
    for r, c in itertools.product(range(h), range(w)):
        window = pre_pool[r * s:(r + 1) * s, c * s:(c + 1) * s]
        out[r, c] = int((window == window.max()).sum()) > 1
    return out


@pytest.mark.parametrize("pool", [2, 3])
def test_hard_lens_marks_max_pool2d_cell_ties_and_unpool(pool):
    model = tiny("hard", pool)
    x = image_with_flat_regions(model.config.image_size)
    with torch.no_grad():
        encoding = model.encode(x)
    for channel in range(model.config.channels[0]):
        lens = pooling_lens(encoding, "hard", pool, 0, channel)
        pre = encoding.pre_pool[0][:, channel:channel + 1]  # (1, 1, H, W)
        what, index = F.max_pool2d(pre, pool, pool, return_indices=True)
        width = pre.shape[-1]
        expected = np.stack([(index // width)[0, 0].numpy(), (index % width)[0, 0].numpy()], axis=-1)
        assert np.array_equal(lens.switch.round().astype(int), expected)  # the marked cell is max_pool2d's index
        assert np.array_equal(lens.what, what[0, 0].numpy())
        assert np.array_equal(lens.tied, brute_ties(pre[0, 0].numpy(), pool))
        unpooled = F.max_unpool2d(what, index, pool, pool, output_size=pre.shape[-2:])
        assert np.array_equal(lens.unpooled, unpooled[0, 0].numpy())
    # the test image has flat zero regions: some windows must be ties, and ties must not be everywhere
    all_ties = window_ties(encoding.pre_pool[0][0], pool)
    assert all_ties.any() and not all_ties.all()


def test_ties_only_where_a_maximum_repeats():
    pre = torch.tensor([[0., 0., 1., 2.],
                        [0., 0., 3., 1.],
                        [5., 5., 4., 4.],
                        [1., 2., 4., 3.]])
    assert window_ties(pre, 2).tolist() == [[True, False], [True, True]]  # a repeated non-zero max is a tie too
    batch = torch.stack([pre, -pre + 10])  # (2, 4, 4): windows per item
    assert window_ties(batch, 2).shape == (2, 2, 2)


def test_soft_lens_position_is_the_soft_argmax():
    model = tiny("soft")
    x = image_with_flat_regions(14)
    with torch.no_grad():
        encoding = model.encode(x)
    lens = pooling_lens(encoding, "soft", 2, 0, 1)
    pre = encoding.pre_pool[0][0, 1]  # (H, W)
    for r, c in itertools.product(range(lens.what.shape[0]), range(lens.what.shape[1])):
        window = pre[2 * r:2 * r + 2, 2 * c:2 * c + 2].reshape(-1)
        weights = torch.softmax(model.config.soft_beta * window, 0)
        expected = (2 * r + float((weights * torch.tensor([0., 0., 1., 1.])).sum()),
                    2 * c + float((weights * torch.tensor([0., 1., 0., 1.])).sum()))
        assert lens.switch[r, c] == pytest.approx(expected, abs=1e-5)
        # a flat window's soft-argmax is its centre, and it is marked a tie
        if bool((window == window.max()).all()):
            assert lens.tied[r, c] and lens.switch[r, c] == pytest.approx((2 * r + 0.5, 2 * c + 0.5), abs=1e-5)


def test_none_lens_unpools_by_nearest_neighbour():
    model = tiny("none")
    with torch.no_grad():
        encoding = model.encode(image_with_flat_regions(14))
    lens = pooling_lens(encoding, "none", 2, 0, 0)
    assert np.array_equal(lens.unpooled, np.kron(lens.what, np.ones((2, 2), dtype=np.float32)))


def test_layer_views_carry_the_ties_of_every_channel():
    model = tiny("hard")
    views, _, _ = layer_views(model, image_with_flat_regions(14)[0])
    for view in views:
        assert np.array_equal(view.tied, window_ties(view.pre_pool, view.pool_size))


def test_switch_agreement_counts_same_moved_and_ties():
    model = tiny("hard")
    x = image_with_flat_regions(14)
    shifted = torch.roll(x, 1, dims=-1)
    with torch.no_grad():
        a, b = model.encode(x), model.encode(shifted)
    lens_a, lens_b = pooling_lens(a, "hard", 2, 0, 2), pooling_lens(b, "hard", 2, 0, 2)
    agreement = switch_agreement(lens_a, lens_b)
    both = ~(lens_a.tied | lens_b.tied)
    same = (lens_a.switch == lens_b.switch).all(-1)
    assert np.array_equal(agreement.same, same & both) and np.array_equal(agreement.moved, ~same & both)
    assert agreement.same.sum() + agreement.moved.sum() + agreement.tied.sum() == lens_a.tied.size
    assert agreement.moved.any()  # a one-pixel shift moves some switches out of their cell
    assert switch_agreement(lens_a, lens_a).moved.sum() == 0
    sentence = agreement.sentence("A", "B")
    assert f"{int(agreement.moved.sum())} (" in sentence


def test_lens_refuses_a_channel_that_does_not_exist():
    model = tiny("hard")
    with torch.no_grad():
        encoding = model.encode(image_with_flat_regions(14))
    with pytest.raises(ValueError, match="channel 9 does not exist at stage 1"):
        pooling_lens(encoding, "hard", 2, 0, 9)


def test_readout_says_tie_or_switch():
    model = tiny("hard")
    with torch.no_grad():
        encoding = model.encode(image_with_flat_regions(14))
    lens = pooling_lens(encoding, "hard", 2, 0, 0)
    tied = np.argwhere(lens.tied)[0]
    chosen = np.argwhere(~lens.tied)[0]
    assert "a tie" in lens.readout(*tied) and "no cell was chosen" in lens.readout(*tied)
    r, c = lens.switch[tuple(chosen)].round().astype(int)
    assert f"pixel ({r}, {c})" in lens.readout(*chosen)


def test_switches_settled_counts_agreeing_choices_against_a_brute_force_count():
    from core.analysis import switches_settled

    final, early = tiny("hard"), tiny("hard")
    torch.manual_seed(5)
    for parameter in early.parameters():  # an "earlier" model: the same architecture, other weights
        parameter.data.add_(0.3 * torch.randn_like(parameter))
    images = torch.cat([image_with_flat_regions(14), torch.rand(2, 1, 14, 14)])
    assert switches_settled(final, final, images) == [1.0, 1.0]
    shares = switches_settled(early, final, images)
    with torch.no_grad():
        a, b = early.encode(images), final.encode(images)
    for stage, share in enumerate(shares):
        same = chosen = 0
        for n, c in itertools.product(range(images.shape[0]), range(a.whats[stage].shape[1])):
            lens_a, lens_b = (pooling_lens(e, "hard", 2, stage, c, n) for e in (a, b))
            both = ~(lens_a.tied | lens_b.tied)
            chosen += int(both.sum())
            same += int(((lens_a.switch == lens_b.switch).all(-1) & both).sum())
        assert share == pytest.approx(same / chosen)
    assert min(shares) < 1.0
