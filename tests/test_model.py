"""SWWAE encode/decode behaviour: switches route the reconstruction, locally; bad inputs are refused."""
import pytest
import torch

from core.model import SWWAE, ModelConfig, digits_config, rgb32_config
from core.model import where_offsets


def tiny(**overrides) -> SWWAE:
    torch.manual_seed(0)
    config = digits_config(channels=(4, 6, 8), head_width=16, **overrides)
    model = SWWAE(config).eval()
    with torch.no_grad():  # non-trivial BN statistics, so eval mode is not the identity
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model


def receptive_rows(model: SWWAE, stage: int, index: int) -> tuple[int, int]:
    """Image rows the decoder can touch from one window (index) of `stage`'s where (same for columns)."""
    cfg = model.config
    lo, hi = index * cfg.pool_sizes[stage], index * cfg.pool_sizes[stage] + cfg.pool_sizes[stage] - 1
    for level in reversed(range(stage + 1)):
        reach = (cfg.kernel_sizes[level] // 2) * cfg.convs_per_stage
        lo, hi = lo - reach, hi + reach  # the convolutions after the unpool at this level
        if level > 0:  # the unpool of the level below spreads each cell over its window
            p = cfg.pool_sizes[level - 1]
            lo, hi = lo * p, hi * p + p - 1
    return max(lo, 0), min(hi, cfg.image_size - 1)


@pytest.mark.parametrize("stage", [0, 1, 2])
def test_changing_one_where_changes_recon_only_in_its_receptive_region(stage):
    model = tiny()
    x = torch.rand(1, 1, 28, 28)
    with torch.no_grad():
        encoding = model.encode(x)
        where = encoding.wheres[stage].clone()
        hiddens = model.decode(encoding).hiddens + [encoding.whats[-1]]
        what = hiddens[stage][0]  # (C, h, w), what the decoder unpools: move its strongest switch
        c, i, j = (int(v) for v in torch.unravel_index(what.argmax(), what.shape))
        offset = where_offsets(where, model.config.pool_sizes[stage], model.config.stage_sizes[stage])[0, c, i, j]
        width = model.config.stage_sizes[stage]
        # move the switch of window (i, j) to the diagonally opposite cell of the same window
        new_row, new_col = i * 2 + 1 - int(offset[0]), j * 2 + 1 - int(offset[1])
        where[0, c, i, j] = new_row * width + new_col
        encoding.wheres[stage] = where
        changed = model.decode(encoding).recon
        base = model.decode(model.encode(x)).recon
    diff = (changed - base).abs()[0, 0]
    r0, r1 = receptive_rows(model, stage, i)
    c0, c1 = receptive_rows(model, stage, j)
    inside = torch.zeros_like(diff, dtype=torch.bool)
    inside[r0 : r1 + 1, c0 : c1 + 1] = True
    assert diff[inside].max() > 0, "moving a switch must change the reconstruction"
    assert torch.all(diff[~inside] == 0), "and only inside the region it can reach"


@pytest.mark.parametrize("pooling", ["hard", "soft", "none"])
def test_swap_where_with_itself_is_identity(pooling):
    model = tiny(pooling=pooling)
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        encoding = model.encode(x)
        same = encoding.with_wheres_from(model.encode(x), [0, 1, 2])
        assert torch.equal(model.decode(same).recon, model.decode(encoding).recon)


@pytest.mark.parametrize("pooling", ["hard", "soft"])
def test_what_a_with_where_b_differs_from_recon_a(pooling):
    model = tiny(pooling=pooling)
    a, b = torch.rand(1, 1, 28, 28), torch.rand(1, 1, 28, 28)
    with torch.no_grad():
        enc_a, enc_b = model.encode(a), model.encode(b)
        crossed = model.decode(enc_a.with_wheres_from(enc_b, [0, 1, 2])).recon
        assert (crossed - model.decode(enc_a).recon).abs().max() > 1e-3


def test_none_mode_ignores_where():
    model = tiny(pooling="none")
    a, b = torch.rand(1, 1, 28, 28), torch.rand(1, 1, 28, 28)
    with torch.no_grad():
        enc_a = model.encode(a)
        crossed = enc_a.with_wheres_from(model.encode(b), [0, 1, 2])
        assert torch.equal(model.decode(crossed).recon, model.decode(enc_a).recon)


def test_hard_encoding_matches_a_hand_written_stack():
    """The encoder is conv -> BN -> ReLU -> max_pool2d per stage, on normalised input."""
    model = tiny()
    x = torch.rand(3, 1, 28, 28)
    h = (x - 0.1307) / 0.3081
    with torch.no_grad():
        encoding = model.encode(x)
        for stage, block in enumerate(model.encoder_stages):
            conv, bn = block[0], block[1]
            h = torch.relu(torch.nn.functional.batch_norm(conv(h), bn.running_mean, bn.running_var, bn.weight,
                                                          bn.bias, training=False, eps=bn.eps))
            h, where = torch.nn.functional.max_pool2d(h, 2, 2, return_indices=True)
            assert torch.allclose(encoding.whats[stage], h, atol=1e-6)
            assert torch.equal(encoding.wheres[stage], where)
        assert torch.allclose(encoding.logits, model.to_logits(h), atol=1e-6)


def test_hiddens_align_with_the_whats_they_reconstruct():
    model = tiny()
    encoding, decoding = model(torch.rand(2, 1, 28, 28))
    assert len(decoding.hiddens) == len(encoding.whats) - 1
    for hidden, what in zip(decoding.hiddens, encoding.whats):
        assert hidden.shape == what.shape
    assert decoding.recon.min() >= 0 and decoding.recon.max() <= 1  # sigmoid output


def test_rgb_config_round_trips_odd_sizes():
    model = SWWAE(rgb32_config(channels=(4, 4, 4, 4), kernel_sizes=(3, 3, 3, 3), pool_sizes=(2, 2, 2, 2),
                               image_size=30)).eval()  # 30 -> 15 -> 7 -> 3 -> 1
    x = torch.rand(2, 3, 30, 30)
    encoding, decoding = model(x)
    assert [w.shape[-1] for w in encoding.whats] == [15, 7, 3, 1]
    assert decoding.recon.shape == x.shape


@pytest.mark.parametrize("bad, match", [
    (torch.rand(1, 3, 28, 28), r"\(N, 1, 28, 28\)"),
    (torch.rand(1, 1, 4, 4), r"\(N, 1, 28, 28\)"),
    (torch.rand(1, 28, 28), r"\(N, 1, 28, 28\)"),
    (torch.full((1, 1, 28, 28), float("nan")), "NaN"),
])
def test_bad_inputs_raise_value_error_naming_the_expected_shape(bad, match):
    with pytest.raises(ValueError, match=match):
        tiny().encode(bad)


def test_config_too_small_for_its_pools():
    with pytest.raises(ValueError, match="too small"):
        ModelConfig(image_size=4)


def test_mismatched_swap_is_refused():
    model = tiny()
    enc = model.encode(torch.rand(1, 1, 28, 28))
    other = model.encode(torch.rand(2, 1, 28, 28))
    with pytest.raises(ValueError, match=r"expected \(1, 4, 14, 14\)"):
        enc.with_wheres_from(other, [0])
    with pytest.raises(ValueError, match="stage 5 does not exist"):
        enc.with_wheres_from(enc, [5])
    soft = tiny(pooling="soft").encode(torch.rand(1, 1, 28, 28))
    with pytest.raises(ValueError, match="expected"):
        enc.with_wheres_from(soft, [0])


def test_config_round_trips_through_a_dict():
    from dataclasses import asdict
    import json
    config = digits_config(pooling="soft", channels=(8, 16, 32))
    assert ModelConfig.from_dict(json.loads(json.dumps(asdict(config)))) == config
    with pytest.raises(ValueError, match="unknown"):
        ModelConfig.from_dict({"bogus": 1})


def test_encoder_noise_is_training_only_and_leaves_noise_free_models_unchanged():
    noisy, plain = tiny(noise_std=0.5), tiny()
    assert noisy.state_dict().keys() == plain.state_dict().keys()  # checkpoints of both load into either
    noisy.load_state_dict(plain.state_dict())
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(noisy.encode(x).logits, plain.encode(x).logits)  # eval: no noise
        noisy.train(), plain.train()
        first, second = noisy.encode(x).pre_pool[0], noisy.encode(x).pre_pool[0]
        clean = plain.encode(x).pre_pool[0]
    assert not torch.equal(first, second)
    # stage 1's pre-pool is ReLU(BN(conv) + noise): where the clean pre-activation is well above 0, the
    # difference is the noise itself, with the configured spread
    diff = (first - clean)[clean > 2.0]
    assert diff.numel() > 50 and abs(diff.std().item() - 0.5) < 0.1 and abs(diff.mean().item()) < 0.1


def test_negative_noise_is_refused():
    with pytest.raises(ValueError, match="noise_std"):
        digits_config(noise_std=-0.1)
