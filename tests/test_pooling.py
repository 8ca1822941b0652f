"""Pooling and unpooling against PyTorch's own max_pool2d / max_unpool2d, and gradcheck for the soft mode."""
import pytest
import torch
import torch.nn.functional as F

from core.model import pool, soft_pool, soft_unpool, unpool, where_offsets


def distinct(*shape, dtype=torch.float32, seed=0):
    """Values whose gaps are >= 0.1, so the max of every window is unique."""
    g = torch.Generator().manual_seed(seed)
    n = torch.Size(shape).numel()
    return (torch.randperm(n, generator=g).to(dtype) / 10).view(*shape)


@pytest.mark.parametrize("size, hw", [(2, (8, 8)), (2, (7, 7)), (3, (7, 10))])
def test_hard_pool_matches_max_pool2d(size, hw):
    x = torch.randn(2, 3, *hw)
    what, where = pool(x, "hard", size, beta=1.0)
    ref_what, ref_where = F.max_pool2d(x, size, size, return_indices=True)
    assert torch.equal(what, ref_what) and torch.equal(where, ref_where)


@pytest.mark.parametrize("size, hw", [(2, (8, 8)), (2, (7, 7)), (3, (7, 10))])
def test_hard_unpool_puts_each_max_at_its_argmax_and_zeros_elsewhere(size, hw):
    x = distinct(2, 3, *hw) + 1.0  # positive, so a placed value never equals a zero
    what, where = pool(x, "hard", size, beta=1.0)
    out = unpool(what, where, "hard", size, hw)
    assert out.shape == x.shape  # odd sizes round-trip through output_size
    assert torch.equal(out, F.max_unpool2d(what, where, size, size, output_size=hw))
    # independent check: a cell is non-zero iff it is the max of its window, and then holds x
    h, w = hw[0] // size, hw[1] // size
    windows = x[..., : h * size, : w * size]
    is_max = windows == F.interpolate(what, scale_factor=size, mode="nearest")
    expected = torch.zeros_like(x)
    expected[..., : h * size, : w * size] = torch.where(is_max, windows, torch.zeros_like(windows))
    assert torch.equal(out, expected)
    assert int((out != 0).sum()) == what.numel()


def test_soft_pool_tends_to_hard_at_large_beta():
    # gaps >= 0.1 and beta = 400: the runner-up weight is <= exp(-40), so agreement is within 1e-6
    x = distinct(2, 3, 7, 7, dtype=torch.float64)
    what, where = soft_pool(x, 2, beta=400.0)
    hard_what, hard_where = F.max_pool2d(x, 2, 2, return_indices=True)
    assert torch.allclose(what, hard_what, atol=1e-6)
    assert torch.allclose(where, where_offsets(hard_where, 2, 7).double(), atol=1e-6)
    # and soft unpooling at those positions is hard unpooling
    assert torch.allclose(soft_unpool(what, where, 2, (7, 7)),
                          F.max_unpool2d(hard_what, hard_where, 2, 2, output_size=(7, 7)), atol=1e-6)


def test_soft_pool_is_a_softmax_weighted_average_at_small_beta():
    x = torch.randn(1, 1, 2, 2, dtype=torch.float64)
    what, where = soft_pool(x, 2, beta=0.0)  # uniform weights
    assert torch.allclose(what, x.mean().view(1, 1, 1, 1))
    assert torch.allclose(where, torch.tensor([0.5, 0.5], dtype=torch.float64).view(1, 1, 1, 1, 2))


def test_soft_pool_gradcheck():
    x = torch.randn(1, 2, 5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: soft_pool(t, 2, beta=3.0), (x,))


def test_soft_unpool_gradcheck():
    g = torch.Generator().manual_seed(1)
    what = torch.randn(1, 2, 2, 2, dtype=torch.float64, generator=g, requires_grad=True)
    # offsets inside (0, 2) for size 3, kept away from the kinks of the bilinear weights at integers
    where = (torch.rand(1, 2, 2, 2, 2, dtype=torch.float64, generator=g) * 0.6 + 0.2
             + torch.randint(0, 2, (1, 2, 2, 2, 2), generator=g)).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: soft_unpool(a, b, 3, (7, 7)), (what, where))


def test_soft_unpool_spreads_a_value_bilinearly_and_conserves_it():
    what = torch.tensor([[[[2.0]]]])
    where = torch.tensor([0.25, 0.5]).view(1, 1, 1, 1, 2)
    out = soft_unpool(what, where, 2, (2, 2))
    expected = 2.0 * torch.tensor([[0.75 * 0.5, 0.75 * 0.5], [0.25 * 0.5, 0.25 * 0.5]])
    assert torch.allclose(out[0, 0], expected)


def test_none_unpool_ignores_where_and_upsamples_nearest():
    what = torch.randn(1, 2, 3, 3)
    a = unpool(what, torch.zeros(1, 2, 3, 3, dtype=torch.long), "none", 2, (7, 7))
    b = unpool(what, torch.randint(0, 49, (1, 2, 3, 3)), "none", 2, (7, 7))
    assert torch.equal(a, b)
    assert torch.equal(a[..., :6, :6], what.repeat_interleave(2, -2).repeat_interleave(2, -1))
    assert torch.all(a[..., 6, :] == 0) and torch.all(a[..., :, 6] == 0)


def test_where_offsets_of_hard_switches():
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 1, 0] = 1  # window (0, 0): row 1, col 0
    x[0, 0, 2, 3] = 1  # window (1, 1): row 0, col 1
    _, where = F.max_pool2d(x + 0.0, 2, 2, return_indices=True)
    offsets = where_offsets(where, 2, 4)[0, 0]
    assert offsets[0, 0].tolist() == [1.0, 0.0] and offsets[1, 1].tolist() == [0.0, 1.0]
