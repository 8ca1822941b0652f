"""open_network: every way of naming a foreign classifier, checked against an independent reference.

References: torchvision's own net run on the normalised input (logits), F.max_pool2d(return_indices=True) on the
maps the pooling layers saw (switches), the state-dict route for a .pt2 of the same weights (whats and wheres).
Safety: a .pth or .pt2 holding a pickled object whose unpickling would create a marker file is refused and the marker
never appears; the .pt2 cases first show that torch.export.load alone WOULD run it, so the screen is what stops it.
Nothing downloads: torchvision nets are built with weights=None, and "DEFAULT" is tested with a stand-in download.
"""
import io
import json
import urllib.error
import zipfile

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torchvision.models._api import WeightsEnum

from core.model.network_file import save_network_file
from core.model.specs import IMAGENET_MEAN, IMAGENET_STD, NetworkError, open_network
from core.model.zoo import small_vgg

FASHION_NORM = ([0.286], [0.353])


class Marker:
    """Unpickling this creates `path`: what a malicious file would do instead."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def no_pool_net() -> nn.Module:
    """A factory for the "package.module:function" route: a classifier without any max-pooling."""
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert message and "\n" not in message and "Traceback" not in message, message
    return message


def saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def trained_like(net: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights with non-trivial batch-norm statistics, so batch norm is not the identity; eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.copy_(torch.rand(module.num_features, generator=generator) - 0.5)
                module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
                module.bias.copy_(torch.rand(module.num_features, generator=generator) - 0.5)
    return net.eval()


def switches_match_max_pool(network, images: torch.Tensor) -> bool:
    """Whether encode's wheres/whats are F.max_pool2d's on the inputs the MaxPool2d modules actually received."""
    seen: list[torch.Tensor] = []
    pools = [m for m in network.net.modules() if isinstance(m, nn.MaxPool2d)]
    handles = [p.register_forward_hook(lambda m, inputs, out: seen.append(inputs[0].detach().clone())) for p in pools]
    try:
        with torch.no_grad():
            encoding = network.encode(images)
    finally:
        for handle in handles:
            handle.remove()
    if len(seen) != len(encoding.wheres) or not seen:
        return False
    for pool, pre_pool, what, where in zip(pools, seen, encoding.whats, encoding.wheres):
        ref_what, ref_where = F.max_pool2d(pre_pool, pool.kernel_size, pool.stride, pool.padding, pool.dilation,
                                           ceil_mode=pool.ceil_mode, return_indices=True)
        if not (torch.equal(where, ref_where) and torch.equal(what, ref_what)):
            return False
    return True


# ---- torchvision ----

@pytest.mark.parametrize("name, size", [("vgg11_bn", 64), ("alexnet", 96)])
def test_torchvision_random_weights_switches_are_max_pool_indices(name, size):
    torch.manual_seed(0)
    loaded = open_network(f"torchvision:{name}", image_size=size)
    assert switches_match_max_pool(loaded.network, torch.rand(2, 3, size, size))


def test_torchvision_state_dict_sets_num_classes_and_gives_torchvision_logits():
    reference = trained_like(torchvision.models.resnet18(weights=None, num_classes=5))
    loaded = open_network("torchvision:resnet18", weights=saved(reference.state_dict()), image_size=64)
    images = torch.rand(2, 3, 64, 64)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = reference((images - mean) / std)  # (2, 5)
        got = loaded.network.encode(images).logits
    assert loaded.network.config.num_classes == 5 and torch.allclose(got, expected, atol=1e-5)


def test_torchvision_classifier_conv_head_sets_num_classes(tmp_path):
    """SqueezeNet's head is a Conv2d, not a Linear; weights given as a path."""
    path = tmp_path / "squeeze.pth"
    path.write_bytes(saved(torchvision.models.squeezenet1_1(weights=None, num_classes=4).state_dict()))
    assert open_network("torchvision:squeezenet1_1", weights=path, image_size=64).network.config.num_classes == 4


@pytest.mark.parametrize("change, expected", [
    (lambda s: s.pop("layer1.0.conv1.weight"), "missing layer1.0.conv1.weight"),
    (lambda s: s.update(extra=torch.zeros(1)), "unexpected extra"),
    (lambda s: s.update({"conv1.weight": torch.zeros(64, 1, 7, 7)}),
     "conv1.weight is (64, 1, 7, 7), expected (64, 3, 7, 7)"),
])
def test_torchvision_state_dict_that_does_not_fit_names_the_key(change, expected):
    state = torchvision.models.resnet18(weights=None).state_dict()
    change(state)
    with pytest.raises(NetworkError) as excinfo:
        open_network("torchvision:resnet18", weights=saved(state), image_size=64)
    assert expected in one_line_error(excinfo)


def test_pth_holding_code_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "ran"
    with pytest.raises(NetworkError) as excinfo:
        open_network("torchvision:alexnet", weights=saved({"fc.weight": Marker(marker)}))
    assert "refused, not run" in one_line_error(excinfo) and not marker.exists()


@pytest.mark.parametrize("data, expected", [(b"", "empty"), (b"not a torch file", "not a readable PyTorch file")])
def test_empty_or_corrupt_weights_give_one_line(data, expected):
    with pytest.raises(NetworkError) as excinfo:
        open_network("torchvision:alexnet", weights=data)
    assert expected in one_line_error(excinfo)


def test_default_weights_offline_give_one_line(monkeypatch):
    def offline(self, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", offline)
    with pytest.raises(NetworkError) as excinfo:
        open_network("torchvision:alexnet", weights="DEFAULT")
    assert one_line_error(excinfo) == ("torchvision:alexnet: its ImageNet weights need a download from "
                                       "download.pytorch.org; no connection")


def test_default_weights_load_with_weights_only_and_bring_class_names(monkeypatch):
    stand_in = torchvision.models.squeezenet1_1(weights=None).state_dict()
    calls = []

    def download(self, *args, **kwargs):
        calls.append(kwargs)
        return stand_in

    monkeypatch.setattr(WeightsEnum, "get_state_dict", download)
    loaded = open_network("torchvision:squeezenet1_1", weights="DEFAULT")
    assert (calls[0]["weights_only"], len(loaded.class_names), loaded.network.config.image_size,
            loaded.label) == (True, 1000, 224, "torchvision:squeezenet1_1 (ImageNet weights)")


def test_too_large_image_size_and_unknown_names_give_one_line():
    for spec, kwargs, expected in [("torchvision:alexnet", {"image_size": 4096}, "outside 32..1024"),
                                   ("torchvision:fasterrcnn_resnet50_fpn", {}, "not a torchvision classification"),
                                   ("zoo:nope", {}, "not in the zoo"),
                                   ("hello", {}, "expected torchvision:NAME")]:
        with pytest.raises(NetworkError) as excinfo:
            open_network(spec, **kwargs)
        assert expected in one_line_error(excinfo), spec


# ---- zoo, pooling-network files ----

def test_zoo_random_weights_open_with_its_layout():
    config = open_network("zoo:small_vgg").network.config
    assert (config.in_channels, config.image_size, config.pool_sizes, config.decoder) == (1, 28, (2, 2, 2),
                                                                                          "deconvnet")


def test_pooling_network_file_round_trip_gives_the_same_logits(tmp_path):
    net = trained_like(small_vgg(num_classes=7))
    path = tmp_path / "vgg.pt"
    save_network_file(path, net, architecture="zoo:small_vgg", architecture_args={"num_classes": 7, "in_channels": 1},
                      input={"channels": 1, "size": 28, "mean": FASHION_NORM[0], "std": FASHION_NORM[1]},
                      data_config={"dataset": "fashion-mnist"}, step=5, metrics={"test_acc": 0.9})
    loaded = open_network(path)
    images = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        expected = net((images - 0.286) / 0.353)
        got = loaded.network.encode(images).logits
    assert torch.allclose(got, expected, atol=1e-6)
    assert (loaded.data_config, loaded.step, loaded.metrics, loaded.label) == (
        {"dataset": "fashion-mnist"}, 5, {"test_acc": 0.9}, "vgg.pt (zoo:small_vgg)")


def test_torchvision_network_file_opens_and_one_asking_for_a_download_is_refused(tmp_path):
    net = trained_like(torchvision.models.squeezenet1_1(weights=None, num_classes=3))
    for args in ({"num_classes": 3}, {"num_classes": 3, "weights": "DEFAULT"}):
        save_network_file(tmp_path / "tv.pt", net, architecture="torchvision:squeezenet1_1", architecture_args=args,
                          input={"channels": 3, "size": 64, "mean": [0.5] * 3, "std": [0.25] * 3})
        if "weights" not in args:
            images = torch.rand(2, 3, 64, 64)
            with torch.no_grad():
                assert torch.allclose(open_network(str(tmp_path / "tv.pt")).network.encode(images).logits,
                                      net((images - 0.5) / 0.25), atol=1e-5)
    with pytest.raises(NetworkError) as excinfo:
        open_network(str(tmp_path / "tv.pt"))
    assert "without weights" in one_line_error(excinfo)


# ---- .pt2 (torch.export) ----

def exported_bytes(net: nn.Module, example_shape=(1, 1, 28, 28), extra: dict | None = None) -> bytes:
    program = torch.export.export(net.eval(), (torch.rand(example_shape),))
    buffer = io.BytesIO()
    torch.export.save(program, buffer, extra_files=extra)
    return buffer.getvalue()


def test_pt2_gives_the_same_whats_and_wheres_as_the_state_dict_route():
    net = trained_like(small_vgg())
    images = torch.rand(4, 1, 28, 28)
    via_pt2 = open_network(exported_bytes(net), input_mean=FASHION_NORM[0], input_std=FASHION_NORM[1])
    via_state = open_network("zoo:small_vgg", weights=saved(net.state_dict()), input_mean=FASHION_NORM[0],
                             input_std=FASHION_NORM[1])
    with torch.no_grad():
        a, b = via_pt2.network.encode(images), via_state.network.encode(images)
    assert len(a.wheres) == 3 and all(torch.equal(x, y) for x, y in zip(a.wheres, b.wheres))
    assert all(torch.allclose(x, y, atol=1e-6) for x, y in zip(a.whats + [a.logits], b.whats + [b.logits]))
    assert via_pt2.network.config.decoder == "deconvnet"
    assert set(via_pt2.network.net.state_dict()) == set(net.state_dict())  # the graph's module names, kept


def test_pt2_after_decompositions_and_its_extra_file(tmp_path):
    """A core-ATen program (convolution, addmm, max_pool2d_with_indices) opens too; mean/std from the extra file."""
    net = trained_like(small_vgg())
    program = torch.export.export(net, (torch.rand(1, 1, 28, 28),)).run_decompositions()
    path = tmp_path / "net.pt2"
    torch.export.save(program, path, extra_files={"pooling-network.json": json.dumps(
        {"input": {"mean": FASHION_NORM[0], "std": FASHION_NORM[1]}, "data_config": {"dataset": "fashion-mnist"}})})
    loaded = open_network(path)
    images = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        expected = net((images - 0.286) / 0.353)
        assert torch.allclose(loaded.network.encode(images).logits, expected, atol=1e-5)
    assert loaded.data_config == {"dataset": "fashion-mnist"} and loaded.network.config.input_std == (0.353,)


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.pool, self.head = nn.Conv2d(1, 4, 3, padding=1), nn.MaxPool2d(2), nn.Linear(4 * 14 * 14, 3)

    def forward(self, x):
        return self.head(self.pool(x + self.conv(x)).flatten(1))


@pytest.mark.parametrize("net, expected", [
    (Residual(), "not a plain chain of layers at conv2d"),  # its input feeds both the conv and the add
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.Sigmoid(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2 * 13 * 13, 3)),
     "the graph uses sigmoid"),
])
def test_pt2_outside_a_chain_of_mapped_ops_names_where(net, expected):
    with pytest.raises(NetworkError) as excinfo:
        open_network(exported_bytes(net))
    assert expected in one_line_error(excinfo)


def rewritten(data: bytes, changes: dict[str, bytes]) -> bytes:
    """The archive with some records (named without the root folder) replaced."""
    source, out = zipfile.ZipFile(io.BytesIO(data)), io.BytesIO()
    root = source.namelist()[0].split("/")[0]
    with zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            target.writestr(info.filename, changes.get(info.filename[len(root) + 1:], source.read(info.filename)))
    return out.getvalue()


def pickled_weight(data: bytes, marker) -> bytes:
    root_json = "data/weights/model_weights_config.json"
    config = json.loads(zipfile.ZipFile(io.BytesIO(data)).read(
        zipfile.ZipFile(io.BytesIO(data)).namelist()[0].split("/")[0] + "/" + root_json))
    config["config"]["features.0.weight"]["use_pickle"] = True
    path = config["config"]["features.0.weight"]["path_name"]
    return rewritten(data, {root_json: json.dumps(config).encode(), f"data/weights/{path}": saved(Marker(marker))})


def pickled_inputs(data: bytes, marker) -> bytes:
    return rewritten(data, {"data/sample_inputs/model.pt": saved((Marker(marker), {}))})


@pytest.mark.parametrize("attack", [pickled_weight, pickled_inputs])
def test_pt2_holding_pickled_code_is_refused_and_never_run(tmp_path, attack):
    data = attack(exported_bytes(small_vgg()), tmp_path / "unscreened")
    try:
        torch.export.load(io.BytesIO(data))
    except Exception:
        pass
    assert (tmp_path / "unscreened").exists()  # torch.export.load by itself runs the file's pickle
    data = attack(exported_bytes(small_vgg()), tmp_path / "screened")
    with pytest.raises(NetworkError) as excinfo:
        open_network(data)
    assert "refused, not run" in one_line_error(excinfo) and not (tmp_path / "screened").exists()


def dynamic_batch_program() -> tuple[bytes, str]:
    """A .pt2 of small_vgg with a dynamic batch dimension, and its models/model.json."""
    program = torch.export.export(small_vgg().eval(), (torch.rand(2, 1, 28, 28),),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    data = buffer.getvalue()
    root = zipfile.ZipFile(io.BytesIO(data)).namelist()[0].split("/")[0]
    return data, zipfile.ZipFile(io.BytesIO(data)).read(f"{root}/models/model.json").decode()


def test_pt2_shape_expression_with_code_is_refused_unevaluated(tmp_path):
    data, text = dynamic_batch_program()
    assert open_network(data).network.config.in_channels == 1  # a dynamic batch is fine

    def injected(marker) -> bytes:  # sympify evaluates the expression: a call to open() creates the marker
        return rewritten(data, {"models/model.json": text.replace("Symbol(", f"open({str(marker)!r}, 'w') and "
                                                                             "Symbol(", 1).encode()})
    try:
        torch.export.load(io.BytesIO(injected(tmp_path / "unscreened")))
    except Exception:
        pass
    assert (tmp_path / "unscreened").exists()  # torch.export.load by itself evaluates it
    with pytest.raises(NetworkError) as excinfo:
        open_network(injected(tmp_path / "screened"))
    assert "not plain arithmetic" in one_line_error(excinfo) and not (tmp_path / "screened").exists()


def test_pt2_with_guard_code_is_refused():
    """ExportedProgram.module() would compile the file's guards_code; such a file is refused outright."""
    data, text = dynamic_batch_program()
    program = json.loads(text)
    program["guards_code"] = ["open('ran', 'w')"]
    with pytest.raises(NetworkError) as excinfo:
        open_network(rewritten(data, {"models/model.json": json.dumps(program).encode()}))
    assert "guard code" in one_line_error(excinfo)


def test_pt2_is_read_by_torch_export_load_and_malformed_ones_give_one_line(monkeypatch, tmp_path):
    data, calls = exported_bytes(small_vgg()), []
    real_load = torch.export.load
    monkeypatch.setattr(torch.export, "load", lambda *a, **k: calls.append(1) or real_load(*a, **k))
    open_network(data)
    assert calls == [1]
    (tmp_path / "cut.pt2").write_bytes(data[: len(data) // 2])
    for source in (tmp_path / "cut.pt2", rewritten(data, {"models/model.json": b"{"})):
        with pytest.raises(NetworkError) as excinfo:
            open_network(source)
        one_line_error(excinfo)


# ---- factories (user code) ----

def test_factory_needs_allow_code_and_a_net_without_max_pool_gives_one_line():
    with pytest.raises(NetworkError) as excinfo:
        open_network("test_network_specs:no_pool_net")
    assert "runs code" in one_line_error(excinfo)
    with pytest.raises(NetworkError) as excinfo:
        open_network("test_network_specs:no_pool_net", allow_code=True, image_size=32)
    assert "no nn.MaxPool2d" in one_line_error(excinfo)
