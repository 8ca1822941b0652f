"""`python -m core.train --network zoo:small_vgg ...`: a plain classifier trained on the project's data and written as
a pooling-network file whose numbers (input mean/std, validation accuracy) agree with independent recomputations."""
import pytest
import torch

from core.data import DataConfig, DatasetUnavailable, load_split
from core.model.network_file import read_network_file
from core.model.zoo import build
from core.runs.cli import main
from core.training import TrainConfig
from core.training.classifier import channel_stats, train_classifier, zoo_name


def _net_from_file(loaded):
    net = build(zoo_name(loaded.architecture), **loaded.architecture_args)
    net.load_state_dict(loaded.state)  # strict: every key and shape
    return net.eval()


def _accuracy(net, loaded, images, labels) -> float:
    mean = torch.tensor(loaded.input["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(loaded.input["std"]).view(1, -1, 1, 1)
    with torch.no_grad():
        return (net((images - mean) / std).argmax(dim=1) == labels).float().mean().item()


def test_a_dry_run_writes_a_network_file_whose_numbers_agree_with_the_data(tmp_path, capsys):
    path = tmp_path / "net.pt"
    code = main(["--network", "zoo:small_vgg", "--dataset", "mnist5k", "--dry-run", "--quiet", "--batch-size", "32",
                 "--export", str(path)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "epoch 2:" in out and f"wrote {path}" in out and "pooling-network file" in out
    loaded = read_network_file(path)
    assert loaded.architecture == "zoo:small_vgg" and loaded.dataset == "mnist5k"
    assert loaded.architecture_args == {"in_channels": 1, "num_classes": 10, "image_size": 28, "widths": [32, 64, 128],
                                        "dropout": 0.3}  # every argument: the file alone rebuilds the network
    assert loaded.train_config["batch_size"] == 32 and loaded.data_config["max_train"] == 64  # 2 steps of 32
    # the input statistics are those of the (dry run's) training images, recomputed here from the split
    train_images, _ = load_split(DataConfig(dataset="mnist5k", max_train=64), "train")
    assert loaded.input["size"] == 28 and loaded.input["channels"] == 1
    assert loaded.input["mean"][0] == pytest.approx(train_images.mean().item(), abs=1e-5)
    assert loaded.input["std"][0] == pytest.approx(train_images.std(unbiased=False).item(), abs=1e-5)
    # the stored validation accuracy is what the stored weights score on the validation split
    val_images, val_labels = load_split(DataConfig(dataset="mnist5k", max_val=64), "val")
    net = _net_from_file(loaded)
    assert loaded.metrics["val_acc"] == pytest.approx(_accuracy(net, loaded, val_images, val_labels), abs=1e-9)
    assert loaded.metrics["val_images"] == 64 and loaded.epoch == loaded.metrics["best_epoch"] in (1, 2)
    assert "test_acc" not in loaded.metrics  # no --test: the test split is never read


def test_training_learns_and_keeps_the_best_on_validation_weights(tmp_path):
    records = []
    result = train_classifier(
        "zoo:small_vgg", TrainConfig(epochs=2, batch_size=32, lr=3e-3, seed=1, device="cpu", snapshots=False),
        DataConfig(dataset="mnist5k", max_train=640, max_val=200), export_path=tmp_path / "net.pt",
        on_epoch=records.append, architecture_args={"widths": [4, 8]})
    assert result.state == "finished" and [r["epoch"] for r in records] == [1, 2]
    best = max(records, key=lambda r: (r["val_acc"], -r["val_loss"]))
    assert best["val_acc"] > 0.6  # far above the 0.1 of chance after 40 steps on real digits
    loaded = read_network_file(tmp_path / "net.pt")
    assert loaded.epoch == best["epoch"] and loaded.metrics["val_acc"] == best["val_acc"]
    assert loaded.architecture_args["widths"] == [4, 8]
    val_images, val_labels = load_split(DataConfig(dataset="mnist5k", max_val=200), "val")
    assert _accuracy(_net_from_file(loaded), loaded, val_images, val_labels) == pytest.approx(best["val_acc"])
    assert records[-1]["lr"] < 1e-4  # the cosine schedule ran down to (almost) min_lr 0


def test_a_dry_run_with_test_scores_the_kept_weights_on_the_test_split(tmp_path, capsys):
    try:
        load_split(DataConfig(dataset="fashion-mnist", max_val=8), "test")
    except DatasetUnavailable:
        pytest.skip("Fashion-MNIST's files are not on this machine")
    path = tmp_path / "fashion.pt"
    code = main(["--network", "zoo:small_vgg", "--dataset", "fashion-mnist", "--dry-run", "--quiet", "--test",
                 "--export", str(path)])
    out = capsys.readouterr().out
    assert code == 0 and "test: accuracy" in out, out
    loaded = read_network_file(path)
    test_images, test_labels = load_split(DataConfig(dataset="fashion-mnist", max_val=64), "test")
    assert loaded.metrics["test_images"] == 64
    assert loaded.metrics["test_acc"] == pytest.approx(_accuracy(_net_from_file(loaded), loaded, test_images,
                                                                 test_labels), abs=1e-9)


def test_channel_stats_match_torch_over_uneven_batches():
    from core.data import DeviceBatches
    images = (torch.rand(70, 3, 5, 5) * 255).to(torch.uint8)
    batches = DeviceBatches(images, torch.zeros(70, dtype=torch.long), batch_size=16, seed=0)  # 4 full + 6
    mean, std = channel_stats(batches)
    floats = images.double() / 255
    torch.testing.assert_close(torch.tensor(mean, dtype=torch.double), floats.mean(dim=(0, 2, 3)), atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.tensor(std, dtype=torch.double), floats.std(dim=(0, 2, 3), unbiased=False),
                               atol=1e-6, rtol=0)


@pytest.mark.parametrize("args, needle", [
    (["--network", "torchvision:vgg11_bn"], "this trainer trains the project's own networks, one of zoo:small_vgg"),
    (["--network", "zoo:resnet"], "one of zoo:small_vgg"),
    (["--network", "zoo:small_vgg", "--channels", "8", "16"], "--channels sets the SWWAE's architecture"),
    (["--network", "zoo:small_vgg", "--resume", "--run", "x"], "--resume does not apply to --network"),
    (["--network", "zoo:small_vgg", "--dataset", "mnist5k", "--max-train", "10"],
     "only 10 labelled training samples, fewer than batch_size 64"),
])
def test_bad_network_options_end_in_one_line_and_exit_2(args, needle, tmp_path, capsys):
    assert main(args + ["--quiet", "--export", str(tmp_path / "net.pt")]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1, err
    assert not list(tmp_path.iterdir())  # nothing written

