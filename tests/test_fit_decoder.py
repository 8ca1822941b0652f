"""A what-where decoder fitted to a frozen classifier (core.model.fitted, core.training.fit_decoder,
`python -m core.train --encoder FILE --freeze-encoder`): the encoder stays bit-identical, decoding unpools by the
switches exactly as F.max_unpool2d does, the file round trip is exact, old files still open, what cannot be
mirrored is refused in one line, and the fit learns."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from core.data import DataConfig, load_split
from core.model.fitted import FittedDecoder, decoder_fields, plan_decoder
from core.model.network import NetworkError, PoolingNetwork
from core.model.network_file import NetworkFileError, read_network_file, save_network_file
from core.model.specs import open_network
from core.model.zoo import build
from core.runs.cli import main
from core.training import TrainConfig
from core.training.fit_decoder import fit_decoder, reconstruction_mse

ARGS = {"in_channels": 1, "num_classes": 10, "image_size": 28, "widths": [4, 8], "dropout": 0.3}
INPUT = {"channels": 1, "size": 28, "mean": [0.13], "std": [0.31]}


def _encoder_file(path, widths=(4, 8), seed=0):
    """A small_vgg file whose batch norm statistics are not the defaults (a few train-mode passes), so a fit that
    let them move would be caught."""
    torch.manual_seed(seed)
    net = build("small_vgg", **{**ARGS, "widths": list(widths)}).train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(8, 1, 28, 28))
    save_network_file(path, net.eval(), architecture="zoo:small_vgg",
                      architecture_args={**ARGS, "widths": list(widths)}, input=INPUT,
                      data_config={"dataset": "mnist5k"}, metrics={"val_acc": 0.5})
    return path


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """(encoder file, fitted file, FitResult) of a short fit on mnist5k."""
    folder = tmp_path_factory.mktemp("fit")
    source = _encoder_file(folder / "encoder.pt")
    result = fit_decoder(source, TrainConfig(epochs=2, batch_size=32, max_steps=6, device="cpu", seed=0,
                                             eval_batch_size=32),
                         DataConfig(dataset="mnist5k", max_train=96, max_val=64), export_path=folder / "fitted.pt")
    return source, folder / "fitted.pt", result


def test_a_fit_leaves_every_encoder_tensor_bit_identical(fitted):
    source, path, result = fitted
    assert result.state == "finished" and result.step == 6 and result.path == str(path)
    before = open_network(source).network.net.state_dict()
    after = result.network.net.state_dict()
    assert before.keys() == after.keys() and any("running_mean" in k for k in before)
    for key in before:  # weights, biases, batch norm running statistics and counts
        assert torch.equal(before[key], after[key]), key
    stored = read_network_file(path).state
    assert all(torch.equal(before[key], stored[key]) for key in before)
    assert not any(p.requires_grad for p in result.network.net.parameters())
    # the decoder did learn: its weights moved from a fresh decoder's (same seed)
    torch.manual_seed(0)
    fresh = FittedDecoder(plan_decoder(open_network(source).network)).state_dict()
    moved = result.network.fitted_decoder.state_dict()
    assert any(not torch.equal(fresh[k], moved[k]) for k in fresh if k.endswith("weight"))


def _reference_stage(stage: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """A decoder stage in eval mode written out with torch.nn.functional: conv, batch norm, relu."""
    for layer in stage:
        if isinstance(layer, nn.Conv2d):
            x = F.conv2d(x, layer.weight, layer.bias, padding=layer.kernel_size[0] // 2)
        elif isinstance(layer, nn.BatchNorm2d):
            x = (x - layer.running_mean.view(1, -1, 1, 1)) / torch.sqrt(layer.running_var.view(1, -1, 1, 1)
                                                                        + layer.eps)
            x = x * layer.weight.view(1, -1, 1, 1) + layer.bias.view(1, -1, 1, 1)
        else:
            x = x.clamp_min(0)
    return x


def test_decoding_a_what_with_another_images_where_unpools_by_those_switches(fitted):
    _, path, _ = fitted
    network = open_network(path).network
    assert network.config.decoder == "fitted"
    images = load_split(DataConfig(dataset="mnist5k", max_val=4), "val")[0]
    first, second = network.encode(images[:2]), network.encode(images[2:4])
    stages = len(network.config.pool_sizes)
    swapped = first.with_wheres_from(second, range(stages))
    with torch.no_grad():
        decoding = network.decode(swapped)
    cfg, top = network.config, stages - 1
    for stage in range(stages):
        coming_down = first.whats[top] if stage == top else decoding.hiddens[stage]  # what this stage unpools
        reference = F.max_unpool2d(coming_down, second.wheres[stage], cfg.pool_sizes[stage], cfg.pool_strides[stage],
                                   output_size=(cfg.stage_sizes[stage],) * 2)
        assert torch.equal(decoding.unpooled[stage], reference), stage
    decoder = network.fitted_decoder
    for stage in range(1, stages):  # hiddens[l] = decoder stage l+1 of its unpooled map
        assert torch.allclose(decoding.hiddens[stage - 1],
                              _reference_stage(decoder.decoder_stages[stage], decoding.unpooled[stage]), atol=1e-5)
    recon = torch.sigmoid(_reference_stage(decoder.decoder_stages[0], decoding.unpooled[0]))
    assert torch.allclose(decoding.recon, recon, atol=1e-6) and 0 <= decoding.recon.min() <= decoding.recon.max() <= 1
    with torch.no_grad():
        own = network.decode(first)
    assert not torch.equal(own.recon, decoding.recon)  # the where matters


def test_the_file_round_trip_gives_identical_reconstructions_and_its_mse(fitted):
    _, path, result = fitted
    reopened = open_network(path).network
    images = load_split(DataConfig(dataset="mnist5k", max_val=64), "val")[0]
    with torch.no_grad():
        mine = result.network.decode(result.network.encode(images)).recon
        theirs = reopened.decode(reopened.encode(images)).recon
    assert torch.equal(mine, theirs)
    file = read_network_file(path)
    assert file.decoder_config == decoder_fields(result.network.fitted_decoder)["decoder_config"]
    assert file.metrics["val_acc"] == 0.5  # the encoder's own metrics are kept beside the fit's
    # the stored validation MSE is the plain per-pixel MSE of these 64 validation images
    assert file.metrics["decoder"]["val_mse"] == pytest.approx(F.mse_loss(theirs, images).item(), rel=1e-5)
    assert reconstruction_mse(reopened, _Batches(images)) == pytest.approx(F.mse_loss(theirs, images).item(),
                                                                            rel=1e-5)


class _Batches:
    def __init__(self, images):
        self.images = images

    def in_order(self):
        for start in range(0, len(self.images), 10):
            yield self.images[start:start + 10], None


def test_a_file_without_a_decoder_still_opens_with_the_deconvnet(fitted):
    source, _, _ = fitted
    assert read_network_file(source).decoder_config is None
    network = open_network(source).network
    assert network.config.decoder == "deconvnet" and network.fitted_decoder is None
    encoding = network.encode(torch.rand(2, 1, 28, 28))
    assert torch.equal(network.decode(encoding).recon, network.deconvnet(encoding).recon)


def test_broken_decoder_fields_are_refused_in_one_line(fitted, tmp_path):
    source, path, _ = fitted
    file = read_network_file(path)
    common = dict(architecture=file.architecture, architecture_args=file.architecture_args, input=file.input)
    net = open_network(source).network.net
    with pytest.raises(NetworkFileError, match="a decoder without its decoder_state"):
        save_network_file(tmp_path / "a.pt", net, decoder_config=file.decoder_config, **common)
    assert not (tmp_path / "a.pt").exists()  # refused before a byte is written
    payload = torch.load(path, weights_only=True)
    del payload["decoder_state"]
    torch.save(payload, tmp_path / "a.pt")
    with pytest.raises(NetworkFileError, match="a decoder without its decoder_state"):
        read_network_file(tmp_path / "a.pt")
    wrong = dict(file.decoder_state)
    wrong.pop(next(iter(wrong)))
    save_network_file(tmp_path / "b.pt", net, decoder_config=file.decoder_config, decoder_state=wrong, **common)
    with pytest.raises(NetworkError, match="decoder's weights do not fit") as caught:
        open_network(tmp_path / "b.pt")
    assert "\n" not in str(caught.value)
    other = {**file.decoder_config, "conv_kernels": [5] * len(file.decoder_config["conv_kernels"])}
    save_network_file(tmp_path / "c.pt", net, decoder_config=other, decoder_state=file.decoder_state, **common)
    with pytest.raises(NetworkError, match="does not mirror this network"):
        open_network(tmp_path / "c.pt")


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.pool, self.head = nn.MaxPool2d(2), nn.Linear(4 * 14 * 14, 10)

    def forward(self, x):
        h = F.relu(self.conv1(x))
        h = h + self.conv2(h)  # a residual addition
        return self.head(self.pool(h).flatten(1))


def _wrap(net):
    return PoolingNetwork(net.eval(), in_channels=1, image_size=28, input_mean=[0.0], input_std=[1.0])


@pytest.mark.parametrize("net, reason", [
    (_Residual(), "does not read"),
    (nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                   nn.Linear(4 * 7 * 7, 10)), "changes the map size"),
    (nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(7), nn.Conv2d(4, 4, 3, padding=1),
                   nn.MaxPool2d(7), nn.Flatten(), nn.Linear(4, 10)), "AdaptiveAvgPool2d"),
])
def test_a_network_the_decoder_cannot_mirror_is_refused_in_one_line(net, reason):
    with pytest.raises(NetworkError, match="cannot fit a what-where decoder") as caught:
        plan_decoder(_wrap(net))
    assert reason in str(caught.value) and "\n" not in str(caught.value)


def test_overlapping_padded_windows_are_unpooled_by_their_switches():
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(3, 2, padding=1),
                        nn.Flatten(), nn.Linear(4 * 14 * 14, 10))
    network = _wrap(net)
    decoder = FittedDecoder(plan_decoder(network)).eval()
    network.attach_decoder(decoder)
    encoding = network.encode(torch.rand(2, 1, 28, 28))
    with torch.no_grad():
        decoding = network.decode(encoding)
    reference = F.max_unpool2d(encoding.whats[0], encoding.wheres[0], 3, 2, 1, output_size=(28, 28))
    assert torch.equal(decoding.unpooled[0], reference) and decoding.hiddens == []
    network.attach_decoder(None)
    assert network.config.decoder == "deconvnet"


def test_the_command_line_fits_and_refuses_in_one_line(fitted, tmp_path, capsys):
    source, _, _ = fitted
    out = tmp_path / "net.pt"
    code = main(["--encoder", str(source), "--freeze-encoder", "--dry-run", "--quiet", "--batch-size", "16",
                 "--export", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and "val reconstruction MSE" in printed and f"wrote {out}" in printed
    assert open_network(out).network.config.decoder == "fitted"
    assert read_network_file(out).metrics["decoder"]["dataset"] == "mnist5k"  # the encoder file's dataset
    for argv, message in ((["--encoder", str(source)], "--encoder needs --freeze-encoder"),
                          (["--freeze-encoder"], "--freeze-encoder needs --encoder"),
                          (["--encoder", str(tmp_path / "none.pt"), "--freeze-encoder"], "pooling-network file"),
                          (["--encoder", str(source), "--freeze-encoder", "--channels", "8"], "does not apply")):
        assert main(argv) == 2
        error = capsys.readouterr().err
        assert message in error and error.count("\n") == 1, error


def test_the_reconstruction_error_falls_over_a_few_hundred_steps(tmp_path):
    source = _encoder_file(tmp_path / "encoder.pt", widths=(8, 16), seed=1)
    data = DataConfig(dataset="mnist5k", max_train=1600, max_val=200)
    val = load_split(data, "val")[0]
    untrained = open_network(source).network
    untrained.attach_decoder(FittedDecoder(plan_decoder(untrained)))
    before = reconstruction_mse(untrained, _Batches(val))
    result = fit_decoder(source, TrainConfig(epochs=6, batch_size=32, lr=3e-3, device="cpu", seed=0), data)
    after = reconstruction_mse(result.network, _Batches(val))
    train_mean = load_split(data, "train")[0].mean(dim=0, keepdim=True)  # the best image that ignores the input
    baseline = F.mse_loss(train_mean.expand_as(val), val).item()
    assert result.step == 300 and after < before / 4 and after < baseline / 2, (before, after, baseline)
