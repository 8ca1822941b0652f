"""Open a `.pt2` file (``torch.export.save``) as layers: the exported graph rebuilt as an ``nn.Sequential``.

`PoolingNetwork` hooks ``nn.MaxPool2d`` modules; an exported program has aten ops instead. When the graph is one plain
chain of mapped ops (conv2d, batch_norm in inference mode, relu, max_pool2d, avg_pool2d, adaptive_avg_pool2d,
flatten / view, linear or addmm, eval-mode dropout), each op becomes the module that computes it, with the program's
weights, nested under the module names the graph remembers (``features.3``), so the rebuilt net keeps the original's
layer names and state_dict keys. Other graphs are refused in one line naming the first op (or branch) that could not
be mapped. The rebuilt net must reproduce the graph's output (run op by op by ``torch.fx.Interpreter``) to be opened.

Safety: ``torch.export.load`` alone is not safe on an untrusted file. It unpickles weights, constants and example
inputs stored as pickles (retrying with ``weights_only=False``), loads AOTInductor libraries, evaluates shape
expressions with ``sympy.sympify`` (an ``eval``), and ``ExportedProgram.module()`` compiles the file's guard code.
So `screen_archive` runs first: only the records a program of raw tensors needs, no pickled payload, example inputs
that ``torch.load(weights_only=True)`` reads, shape expressions of symbols and arithmetic only, no guard code; and
``.module()`` is never called.

Normalisation: the program reads the *normalised* image, as a state dict's net does. Its mean / std may ride in an
extra file (``torch.export.save(ep, f, extra_files={"pooling-network.json": json.dumps({"input": {"mean": [...],
"std": [...]}, "data_config": {...}})})``); core.model.specs decides what applies.
"""
from __future__ import annotations

import io
import json
import operator
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn

from core.model.checkpoint import MAX_PARAMETERS
from core.model.network import NetworkError

__all__ = ["EXTRA_FILE", "ExportedNetwork", "is_pt2_archive", "screen_archive", "open_exported"]

EXTRA_FILE = "pooling-network.json"  # optional: {"input": {"mean": [...], "std": [...]}, "data_config": {...}}
_RECORDS = re.compile(r"(models/model\.json|data/weights/model_weights_config\.json|data/weights/weight_\d+"
                      r"|data/constants/model_constants_config\.json|data/constants/tensor_\d+"
                      r"|data/sample_inputs/model\.pt|extra/[\w.\-]+|archive_format|archive_version|byteorder"
                      r"|\.data/[\w.\-]+)")
_SYMBOL = re.compile(r"[a-z]+\d+")  # s0, s77, u3: the symbols torch.export names dims with
_SYMPY_NAMES = {"Symbol", "Integer", "positive", "integer", "nonnegative", "True", "False", "oo", "Max", "Min",
                "FloorDiv", "CeilDiv", "CleanDiv", "Mod", "PythonMod", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And",
                "Or", "Not"}
_EXPRESSION = re.compile(r"[A-Za-z0-9 +\-*/%(),.=<>!]*")  # after quoted symbol names are removed
VERIFY_TOLERANCE = 1e-4


@dataclass
class ExportedNetwork:
    net: nn.Sequential  # the graph as modules, eval mode, float32 on the CPU
    in_channels: int
    image_size: int
    extra: dict[str, Any] = field(default_factory=dict)  # the parsed pooling-network.json, {} when absent


def is_pt2_archive(data: bytes) -> bool:
    """Whether `data` is a zip whose records include the PT2 archive marker (``<root>/archive_format``)."""
    try:
        names = torch._C.PyTorchFileReader(io.BytesIO(data)).get_all_records()
    except Exception:  # not a zip at all
        return False
    return "archive_format" in names


def _refuse(name: str, why: str) -> NetworkError:
    return NetworkError(f"{name}: {why}")


def screen_archive(data: bytes, name: str) -> None:
    """Refuse (one line) a .pt2 whose loading could run code or would not be a plain exported program. The zip is
    read by the reader torch.export.load uses, so both see the same records."""
    from torch.export.pt2_archive import PT2ArchiveReader
    try:
        reader = PT2ArchiveReader(io.BytesIO(data))
        _screen(reader, reader.get_file_names(), name)
    except NetworkError:
        raise
    except Exception:  # a record missing or unreadable
        raise _refuse(name, "not a readable .pt2 archive (truncated or corrupt?)") from None


def _screen(reader, records: list[str], name: str) -> None:
    version = reader.read_string("archive_version") if "archive_version" in records else None
    if version != "0":
        raise _refuse(name, f"PT2 archive version {version!r}; this program reads version '0', the one "
                            f"torch.export.save of PyTorch {torch.__version__.split('+')[0]} writes")
    for record in records:
        if not _RECORDS.fullmatch(record):
            raise _refuse(name, f"the archive holds {record!r}, which is not part of a plain exported program "
                                "(compiled code, pickled objects or a second model); refused, not loaded")
    for config in ("data/weights/model_weights_config.json", "data/constants/model_constants_config.json"):
        entries = _json(reader.read_string(config), name).get("config")
        for key, entry in entries.items():  # not a dict: AttributeError, "corrupt"
            path = entry.get("path_name", "") if isinstance(entry, dict) else ""
            if not isinstance(entry, dict) or entry.get("use_pickle") is not False or (
                    "constants" in config and not path.startswith("tensor_")):
                raise _refuse(name, f"{key!r} is stored as a pickled object, not a tensor (refused, not run)")
    if "data/sample_inputs/model.pt" in records and (inputs := reader.read_bytes("data/sample_inputs/model.pt")):
        try:
            torch.load(io.BytesIO(inputs), weights_only=True)  # what torch.export.load tries before unpickling
        except Exception:
            raise _refuse(name, "its example inputs hold objects other than tensors (refused, not run)") from None
    _screen_program(_json(reader.read_string("models/model.json"), name), name)


def _json(text: str, name: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise _refuse(name, "a record of the archive is not a JSON object (corrupt?)")
    return value


def _screen_program(program: dict, name: str) -> None:
    """No guard code; every shape expression (sympify evaluates it) made of symbols, numbers and arithmetic."""
    if program.get("guards_code"):
        raise _refuse(name, "the program carries guard code, which would run as Python (refused, not run)")
    stack: list[Any] = [program]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                if key == "expr_str" and not _plain_expression(item):
                    raise _refuse(name, f"shape expression {str(item)[:60]!r} is not plain arithmetic "
                                        "(refused, not run)")
                stack.append(item)
        elif isinstance(value, list):
            stack.extend(value)


def _plain_expression(text: Any) -> bool:
    bare = re.sub(r"'[a-z]+\d+'", "", text) if isinstance(text, str) else "\0"
    return bool(_EXPRESSION.fullmatch(bare)) and all(
        _SYMBOL.fullmatch(word) or word in _SYMPY_NAMES for word in re.findall(r"[A-Za-z_]\w*", bare))


def open_exported(data: bytes, name: str) -> ExportedNetwork:
    """Screen, load (torch.export.load) and rebuild a .pt2 as layers; NetworkError (one line) on any failure."""
    screen_archive(data, name)
    extra_files: dict[str, Any] = {EXTRA_FILE: None}  # filled in place; torch replaces an empty dict by its own
    try:
        program = torch.export.load(io.BytesIO(data), extra_files=extra_files)
    except Exception as exc:
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise _refuse(name, f"torch.export.load could not read it ({detail})") from None
    extra = _json(extra_files[EXTRA_FILE], name) if isinstance(extra_files[EXTRA_FILE], str) else {}
    tensors, example = _program_tensors(program, name)
    net = _assemble(_chain(program, tensors, name)).eval()
    _verify(net, program, tensors, example, name)
    return ExportedNetwork(net=net, in_channels=int(example.shape[1]), image_size=int(example.shape[-1]),
                           extra=extra)


def _program_tensors(program, name: str) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The lifted weights by placeholder name, and an example input (1, C, H, H) of the program's user input."""
    signature = program.graph_signature
    stored = {**program.constants, **program.state_dict}
    lifted = {**signature.inputs_to_parameters, **signature.inputs_to_buffers,
              **signature.inputs_to_lifted_tensor_constants}
    tensors = {node: stored[fqn].detach() for node, fqn in lifted.items() if fqn in stored}
    if sum(t.numel() for t in tensors.values()) > MAX_PARAMETERS:
        raise _refuse(name, f"the program has over the {MAX_PARAMETERS:,} weights this program loads")
    if len(signature.user_inputs) != 1 or len(signature.user_outputs) != 1:
        raise _refuse(name, f"the program takes {len(signature.user_inputs)} inputs and gives "
                            f"{len(signature.user_outputs)} outputs; a classifier takes one image batch, gives logits")
    user_input = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == signature.user_inputs[0])
    value = user_input.meta.get("val")
    examples = [t for t in (program.example_inputs or ((), {}))[0] if isinstance(t, torch.Tensor)]
    shape = tuple(examples[0].shape) if examples else tuple(getattr(value, "shape", ()))
    if len(shape) != 4 or not all(isinstance(s, int) for s in shape) or shape[2] != shape[3]:
        raise _refuse(name, f"the program's input is {shape}; expected a square image batch (N, C, H, H)")
    if getattr(value, "dtype", torch.float32) != torch.float32:
        raise _refuse(name, f"the program reads {value.dtype} images; this program runs float32 programs")
    return tensors, torch.randn((1, *shape[1:]), generator=torch.Generator().manual_seed(0))  # (1, C, H, H)


# ---- the chain: one aten op after another, each mapped to the module that computes it ----

_SKIPPED = {"aten._assert_tensor_metadata", "aten._assert_scalar"}  # checks that return nothing
_IDENTITY = {"aten.clone", "aten.contiguous", "aten.alias", "aten.detach"}  # the activation passes unchanged
_FOLDABLE = {"aten.t", "aten.permute", "aten.transpose"}  # on a weight: decomposed linear's W^T, computed now


def _op_name(target: Any) -> str:
    """aten::conv2d.padding -> 'aten.conv2d'; operator.getitem -> 'getitem'."""
    if isinstance(target, torch._ops.OpOverload):
        return target.name().split(".")[0].replace("::", ".")
    return "getitem" if target is operator.getitem else str(getattr(target, "__name__", target))


def _arguments(node: torch.fx.Node) -> dict[str, Any]:
    """The op's arguments by schema name, defaults filled in."""
    values = {}
    for i, arg in enumerate(node.target._schema.arguments):
        if i < len(node.args):
            values[arg.name] = node.args[i]
        elif arg.name in node.kwargs:
            values[arg.name] = node.kwargs[arg.name]
        else:
            values[arg.name] = arg.default_value if arg.has_default_value() else None
    return values


def _pair(value: Any) -> tuple[int, int]:
    values = [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


def _copy(module: nn.Module, **tensors: torch.Tensor | None) -> nn.Module:
    with torch.no_grad():
        for key, value in tensors.items():
            if value is not None:
                getattr(module, key).copy_(value)
    return module


def _conv(v: dict, w: Callable, node) -> nn.Module:
    weight, bias = w("weight"), w("bias")
    if v.get("transposed") or weight.dim() != 4:
        raise ValueError("a convolution that is not a 2-D forward conv")
    out_channels, group_in, *kernel = weight.shape
    padding = v["padding"] if isinstance(v["padding"], str) else _pair(v["padding"])
    conv = nn.Conv2d(group_in * v["groups"], out_channels, tuple(kernel), stride=_pair(v["stride"]), padding=padding,
                     dilation=_pair(v["dilation"]), groups=v["groups"], bias=bias is not None)
    return _copy(conv, weight=weight, bias=bias)


def _batch_norm(v: dict, w: Callable, node) -> nn.Module:
    if v.get("training"):
        raise ValueError("batch_norm in training mode (the model was exported in train(); export it in eval())")
    weight, bias, mean, var = w("weight"), w("bias"), w("running_mean"), w("running_var")
    kind = {4: nn.BatchNorm2d, 2: nn.BatchNorm1d}.get(node.args[0].meta["val"].dim())
    if mean is None or var is None or kind is None:
        raise ValueError("a batch_norm without running statistics or on a map that is not (N, C) or (N, C, H, W)")
    norm = kind(mean.numel(), eps=float(v["eps"]), momentum=float(v["momentum"]), affine=weight is not None)
    if weight is not None and bias is None:
        bias = torch.zeros_like(weight)
    return _copy(norm, weight=weight, bias=bias, running_mean=mean, running_var=var)


def _max_pool(v: dict, w: Callable, node) -> nn.Module:
    kernel = _pair(v["kernel_size"])  # an empty stride means stride = kernel
    return nn.MaxPool2d(kernel, stride=_pair(v["stride"]) if v["stride"] else kernel, padding=_pair(v["padding"]),
                        dilation=_pair(v["dilation"]), ceil_mode=bool(v["ceil_mode"]))


def _avg_pool(v: dict, w: Callable, node) -> nn.Module:
    kernel = _pair(v["kernel_size"])
    return nn.AvgPool2d(kernel, stride=_pair(v["stride"]) if v["stride"] else kernel, padding=_pair(v["padding"]),
                        ceil_mode=bool(v["ceil_mode"]), count_include_pad=bool(v["count_include_pad"]),
                        divisor_override=v["divisor_override"])


def _reshape(v: dict, w: Callable, node) -> nn.Module:
    before, after = tuple(node.args[0].meta["val"].shape), tuple(node.meta["val"].shape)
    if len(after) != 2 or after[0] != before[0]:
        raise ValueError(f"a reshape from {before} to {after} (only (N, ...) -> (N, features) is a flatten)")
    return nn.Flatten(1)  # (N, C, H, W) -> (N, C * H * W)


def _dropout(kind: type) -> Callable:
    def build(v: dict, w: Callable, node) -> nn.Module:
        if v.get("train"):
            raise ValueError("dropout in training mode (the model was exported in train(); export it in eval())")
        return kind(float(v["p"]))
    return build


def _addmm(v: dict, w: Callable, node) -> nn.Module:
    weight_t, bias = w("mat2"), w("self")  # addmm(bias, x, W^T) = x @ W^T + bias
    if v["beta"] != 1 or v["alpha"] != 1 or weight_t.dim() != 2:
        raise ValueError("an addmm that is not a linear layer")
    return _copy(nn.Linear(*weight_t.shape, bias=True), weight=weight_t.t(), bias=bias)


def _linear(v: dict, w: Callable, node) -> nn.Module:
    weight, bias = w("weight"), w("bias")
    return _copy(nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None), weight=weight, bias=bias)


_LAYERS: dict[str, tuple[str, Callable]] = {  # op -> (the argument that carries the activation, its module)
    "aten.conv2d": ("input", _conv), "aten.convolution": ("input", _conv),
    "aten.batch_norm": ("input", _batch_norm), "aten._native_batch_norm_legit_no_training": ("input", _batch_norm),
    **{op: ("self", lambda v, w, n: nn.ReLU()) for op in ("aten.relu", "aten.relu_")},
    "aten.max_pool2d": ("self", _max_pool), "aten.max_pool2d_with_indices": ("self", _max_pool),
    "aten.avg_pool2d": ("self", _avg_pool),
    **{op: ("self", lambda v, w, n: nn.AdaptiveAvgPool2d(_pair(v["output_size"])))
       for op in ("aten.adaptive_avg_pool2d", "aten._adaptive_avg_pool2d")},
    "aten.flatten": ("self", lambda v, w, n: nn.Flatten(int(v["start_dim"]), int(v["end_dim"]))),
    **{op: ("self", _reshape) for op in ("aten.view", "aten.reshape", "aten._unsafe_view")},
    "aten.linear": ("input", _linear), "aten.addmm": ("mat1", _addmm),
    "aten.dropout": ("input", _dropout(nn.Dropout)), "aten.feature_dropout": ("input", _dropout(nn.Dropout2d)),
}
MAPPED_OPS = sorted({op.split(".")[1].strip("_") for op in _LAYERS})


def _module_path(node: torch.fx.Node) -> str:
    """The module the op ran in ("features.3"), "" when unknown or not a dotted name of identifiers."""
    stack = node.meta.get("nn_module_stack") or {}
    path = str(list(stack.values())[-1][0]) if stack else ""
    return path if re.fullmatch(r"\w+(\.\w+)*", path) else ""


def _chain(program, tensors: dict[str, torch.Tensor], name: str) -> list[tuple[str, str, nn.Module]]:
    """The graph as (module path, op, module) in forward order; NetworkError unless it is a plain chain."""
    current = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name not in tensors)
    layers: list[tuple[str, str, nn.Module]] = []
    tuple_node = None  # the last op that returned a tuple
    for node in program.graph.nodes:
        op = _op_name(node.target)
        if node.op == "placeholder" or op in _SKIPPED:
            continue
        if node.op == "output":
            if list(node.args[0]) != [current]:
                raise _refuse(name, "the graph's output is not the end of its chain of layers")
            return layers
        if node.op != "call_function":
            raise _refuse(name, f"the graph has a {node.op} node, which this program cannot rebuild as layers")
        if op in _FOLDABLE and all(a.name in tensors for a in node.all_input_nodes):
            tensors[node.name] = node.target(*[tensors[a.name] if isinstance(a, torch.fx.Node) else a
                                               for a in node.args])  # a weight transposed (aten op on a tensor)
            continue
        if op == "getitem" and node.args[0] is tuple_node and (node.args[1] == 0 or not node.users):
            current = node if node.args[1] == 0 else current  # max_pool2d_with_indices / batch norm: output 0
            continue
        if op not in _LAYERS and op not in _IDENTITY:
            raise _refuse(name, f"the graph uses {op.split('.')[-1]}, which this program cannot rebuild as a layer "
                                f"(it maps {', '.join(MAPPED_OPS)})")
        carrier, build = _LAYERS.get(op, ("self", None))
        values = _arguments(node)
        if values.get(carrier) is not current or sum(_op_name(u.target) not in _SKIPPED for u in current.users) != 1:
            raise _refuse(name, f"the graph is not a plain chain of layers at {node.name} (a branch, a residual add "
                                "or a concatenation?)")

        def weight(key: str, values=values) -> torch.Tensor | None:
            value = values.get(key)
            if value is None or not isinstance(value, torch.fx.Node):
                return None
            if value.name not in tensors:
                raise ValueError(f"its {key} is computed in the graph, not stored")
            return tensors[value.name].float()

        if build is not None:
            try:
                layers.append((_module_path(node), op, build(values, weight, node)))
            except (ValueError, TypeError, RuntimeError) as exc:
                raise _refuse(name, f"cannot rebuild {node.name} as a layer: {exc}") from None
        current = tuple_node = node
    raise _refuse(name, "the graph has no output")


def _assemble(layers: list[tuple[str, str, nn.Module]]) -> nn.Sequential:
    """Nested nn.Sequentials under the graph's module names when they nest in order, else one flat Sequential."""
    paths = [path or op.split(".")[-1].strip("_") for path, op, _ in layers]  # an op of the top forward: its name
    if len(set(paths)) == len(paths) and (tree := _nest([(p.split("."), m) for p, (_, _, m) in zip(paths, layers)])):
        return tree
    flat: OrderedDict[str, nn.Module] = OrderedDict()
    for path, (_, _, module) in zip(paths, layers):
        base = path.replace(".", "_")
        flat[base if base not in flat else f"{base}_{len(flat)}"] = module
    return nn.Sequential(flat)


def _nest(entries: list[tuple[list[str], nn.Module]]) -> nn.Sequential | None:
    """[(["features", "0"], conv), (["features", "1"], relu), (["fc"], linear)] -> Sequential(features=
    Sequential(0=conv, 1=relu), fc=linear); None when a name recurs out of order or is both a layer and a parent."""
    children: OrderedDict[str, nn.Module] = OrderedDict()
    start = 0
    while start < len(entries):
        head, end = entries[start][0][0], start
        while end < len(entries) and entries[end][0][0] == head:
            end += 1
        group = entries[start:end]
        if head in children or (len(group) > 1 and any(len(parts) == 1 for parts, _ in group)):
            return None
        child = group[0][1] if len(group[0][0]) == 1 else _nest([(parts[1:], m) for parts, m in group])
        if child is None:
            return None
        children[head] = child
        start = end
    return nn.Sequential(children)


def _verify(net: nn.Module, program, tensors: dict[str, torch.Tensor], example: torch.Tensor, name: str) -> None:
    """The rebuilt layers must give the graph's own output: the graph is run op by op (every op already checked to be
    one of the mapped aten ops) with torch.fx.Interpreter, never through the program's generated module."""
    inputs = [tensors.get(n.name, example) for n in program.graph.nodes if n.op == "placeholder"]
    with torch.no_grad():
        expected = torch.fx.Interpreter(program.graph_module).run(*inputs)[0]  # (1, num_classes)
        rebuilt = net(example)
    scale = 1.0 + float(expected.abs().max()) if expected.numel() else 1.0
    if rebuilt.shape != expected.shape or float((rebuilt - expected).abs().max()) > VERIFY_TOLERANCE * scale:
        raise _refuse(name, "the layers rebuilt from the graph do not reproduce its output; not opened")
