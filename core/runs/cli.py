"""The trainer's command line (`python -m core.train`), its options generated from the config dataclasses.

Each field `name: type = default  # comment` becomes `--name` (underscores as dashes) with the comment as its
help, so every field is settable and documented in --help. Unset options are left out of the parsed namespace,
so callers can tell "given" from "default". Bad input ends in one line on stderr and exit code 2; a failure that
no other input would avoid (a full disk, an I/O error, a non-finite loss) exits with code 1.

`--run-dir` is `--run` under a name torchrun's own parser leaves alone (it reads `--run` as an abbreviation of its
`--run-path`), so `torchrun --nproc_per_node 2 -m core.train ... --run-dir DIR` works.
"""
from __future__ import annotations

import argparse
import errno
import inspect
import os
import re
import sys
import tempfile
from dataclasses import MISSING, fields, replace
from pathlib import Path
from typing import Any

import core.training.loop as loop_module
from core.training import rundir
from core.model import CheckpointError, load_checkpoint
from core.data import DataConfig
from core.runs.launcher import default_run_name
from core.model import ModelConfig
from core.model.network import NetworkError
from core.model.network_file import read_network_file
from core.runs.monitor import runs_root
from core.training import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, TrainConfig, TrainResult, default_model_config, train
from core.training.classifier import NETWORK_FILE_NAME, ClassifierResult, train_classifier
from core.training.fit_decoder import FitResult, fit_decoder

__all__ = ["field_docs", "add_dataclass_arguments", "given_fields", "main"]

_FIELD_COMMENT = re.compile(r"^\s+(\w+)\s*:[^#]*#\s*(.+)$")
_SCALAR_TYPES = {"int": int, "float": float, "str": str}


def field_docs(cls: type) -> dict[str, str]:
    """{field name: its trailing comment} read from the class source (empty when the source is unavailable)."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    return {m.group(1): m.group(2).strip() for m in map(_FIELD_COMMENT.match, source.splitlines()) if m}


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type, title: str) -> None:
    group = parser.add_argument_group(title)
    docs = field_docs(cls)
    for f in fields(cls):
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{docs.get(f.name, '')} (default: {_show(default)})".replace("%", "%%")
        type_name = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        if type_name == "bool":
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                               help=help_text)
        elif type_name.startswith("tuple["):
            item_type = _SCALAR_TYPES[type_name[len("tuple["):].split(",")[0].strip()]
            group.add_argument(flag, nargs="+", type=item_type, default=argparse.SUPPRESS, metavar=item_type.__name__.upper(),
                               help=help_text)
        elif type_name in _SCALAR_TYPES:
            group.add_argument(flag, type=_SCALAR_TYPES[type_name], default=argparse.SUPPRESS,
                               metavar=type_name.upper(), help=help_text)
        else:
            raise TypeError(f"{cls.__name__}.{f.name}: no command-line form for type {type_name}")


def given_fields(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of `cls` set on the command line (tuples as tuples)."""
    values = {}
    for f in fields(cls):
        if hasattr(args, f.name):
            value = getattr(args, f.name)
            values[f.name] = tuple(value) if isinstance(value, list) else value
    return values


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return " ".join(map(str, value))
    return repr(value) if isinstance(value, str) else str(value)


# ---- command line --------------------------------------------------------------------------------------------

DRY_RUN_STEPS_PER_EPOCH = 2
FAILURE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO}  # the machine failed, not the input
DRY_RUN_VAL_SAMPLES = 64


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m core.train", description=loop_module.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    run = parser.add_argument_group("run")
    run.add_argument("--run", "--run-dir", dest="run", metavar="DIR", help="run directory (config.json, "
                     "metrics.jsonl, status.json, samples/, last.pt, best.pt); default runs/<dataset>-<time>. "
                     "Under torchrun, spell it --run-dir")
    run.add_argument("--resume", action="store_true", help="continue the run in --run from its last.pt; options "
                     "given again override its saved training/data config (e.g. --epochs 20)")
    run.add_argument("--dry-run", action="store_true", help="exercise everything in seconds: 2 epochs of "
                     f"{DRY_RUN_STEPS_PER_EPOCH} steps, the second one resumed from a checkpoint, in a new folder "
                     "(one that holds a run is refused: a dry run never changes a real run)")
    run.add_argument("--export", metavar="PATH", help="at the end, also write the best weights without optimizer "
                     "state to PATH (a small file for the app)")
    run.add_argument("--test", action="store_true", help="once finished, evaluate best.pt (chosen on the validation "
                     "split) on the test split, the only time it is read; printed as 'test accuracy' and kept in "
                     "status.json")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("--network", metavar="zoo:NAME", help="train a plain classifier of the project's zoo (e.g. "
                     "zoo:small_vgg) instead of an SWWAE, on the same data, and write it as a pooling-network file "
                     "to --export (default <run>/network.pt); model (ModelConfig) options do not apply")
    run.add_argument("--encoder", metavar="FILE", help="fit a what-where decoder (core.model.fitted) to the "
                     "classifier in this pooling-network file, frozen (needs --freeze-encoder), with the SWWAE's "
                     "L2rec + lambda_mid * L2M loss; writes the encoder and its decoder to --export (default "
                     "<run>/network.pt); --dataset defaults to the file's")
    run.add_argument("--freeze-encoder", action="store_true", help="keep every weight of --encoder as it is (the "
                     "only kind of fit there is: required with --encoder)")
    run.add_argument("--claim-fd", type=int, metavar="FD", help="(set by core.runs.launcher) the --run folder's lock, "
                     "already claimed by the process that started this one, inherited as descriptor FD")
    add_dataclass_arguments(parser, DataConfig, "data (DataConfig)")
    add_dataclass_arguments(parser, TrainConfig, "training (TrainConfig)")
    add_dataclass_arguments(parser, ModelConfig, "model (ModelConfig; defaults follow the dataset)")
    return parser


def _configs(args: argparse.Namespace) -> tuple[ModelConfig, TrainConfig, DataConfig]:
    model_given, train_given, data_given = (given_fields(args, c) for c in (ModelConfig, TrainConfig, DataConfig))
    if args.resume:
        saved = rundir.read_config(args.run)
        model_config = ModelConfig.from_dict(saved["model"])
        changed = [name for name, value in model_given.items() if getattr(model_config, name) != value]
        if changed:
            raise ValueError(f"cannot change the architecture of a resumed run (--{changed[0].replace('_', '-')})")
        return (model_config, TrainConfig(**{**saved["train"], **train_given}),
                DataConfig(**{**saved["data"], **data_given}))
    data_config = DataConfig(**data_given)
    return default_model_config(data_config.dataset, **model_given), TrainConfig(**train_given), data_config


def _describe(metrics: dict[str, Any], split: str = "val") -> str:
    accuracy = "n/a" if metrics.get("accuracy") is None else f"{100 * metrics['accuracy']:.2f}%"
    rec = "n/a" if metrics.get("rec") is None else f"{metrics['rec']:.5f}"
    return f"{split} accuracy {accuracy}, reconstruction MSE {rec} (epoch {metrics.get('epoch', '?')})"


def _mtime(path: str) -> int | None:
    return os.stat(path).st_mtime_ns if os.path.isfile(path) else None


def _summary(result: TrainResult) -> str:
    lines = [f"{result.state}: {result.message}"]
    if result.last_eval:
        lines.append(f"last: {_describe(result.last_eval)}")
    if result.best_eval:
        lines.append(f"best: {_describe(result.best_eval)}")
    if result.test_eval:
        test = result.test_eval
        lines.append(f"test: {_describe(test, 'test')} of {test['checkpoint']}, {test['images']:,} test images")
    return "\n".join(lines)


def _network_configs(args: argparse.Namespace, mode: str = "--network",
                     data_defaults: dict[str, Any] | None = None) -> tuple[TrainConfig, DataConfig]:
    """The configs of a --network run or an --encoder fit: training and data options only (it is not an SWWAE, nor
    a run to resume)."""
    model_given = given_fields(args, ModelConfig)
    if model_given:
        raise ValueError(f"--{next(iter(model_given)).replace('_', '-')} sets the SWWAE's architecture; it does not "
                         f"apply to {mode}")
    for flag, given in (("--resume", args.resume), ("--claim-fd", args.claim_fd is not None)):
        if given:
            raise ValueError(f"{flag} does not apply to {mode} (a short run, not resumed)")
    train_config = TrainConfig(**given_fields(args, TrainConfig))
    data_config = DataConfig(**{**(data_defaults or {}), **given_fields(args, DataConfig)})
    if args.dry_run:
        data_config = replace(data_config, max_train=DRY_RUN_STEPS_PER_EPOCH * train_config.batch_size,
                              max_val=DRY_RUN_VAL_SAMPLES)
        train_config = replace(train_config, epochs=2, max_steps=0)
    return train_config, data_config


def _print_epoch(record: dict[str, Any]) -> None:
    best = " (best)" if record["best"] else ""
    print(f"epoch {record['epoch']}: train loss {record['train_loss']:.4f} accuracy {100 * record['train_acc']:.2f}%, "
          f"val loss {record['val_loss']:.4f} accuracy {100 * record['val_acc']:.2f}%{best}, lr {record['lr']:.2e}, "
          f"{record['seconds']:.0f} s", flush=True)


def _network_summary(result: ClassifierResult) -> str:
    lines = [f"{result.state}: {result.message}"]
    if result.best_eval:
        lines.append(f"best: val accuracy {100 * result.best_eval['val_acc']:.2f}% (epoch {result.best_eval['epoch']})")
    if result.test_eval:
        lines.append(f"test: accuracy {100 * result.test_eval['test_acc']:.2f}% of the best-on-validation weights, "
                     f"{result.test_eval['test_images']:,} test images")
    if result.path:
        lines.append(f"wrote {result.path} ({os.path.getsize(result.path) / 2**20:.1f} MB, pooling-network file)")
    else:
        lines.append("nothing written: the run ended before its first evaluation")
    return "\n".join(lines)


def _train_network(args: argparse.Namespace) -> int:
    """`--network zoo:NAME`: a plain classifier trained by core.training.classifier, written as a pooling-network
    file to --export (default <run>/network.pt; a dry run's default folder is a new temporary one)."""
    try:
        train_config, data_config = _network_configs(args)
        run = args.run or (tempfile.mkdtemp(prefix="network-dry-run-") if args.dry_run else
                           str(runs_root() / default_run_name(data_config.dataset)))
        path = args.export or str(Path(run) / NETWORK_FILE_NAME)
        result = train_classifier(args.network, train_config, data_config, export_path=path, test=args.test,
                                  progress=not args.quiet, on_epoch=_print_epoch)
    except (ValueError, TypeError, OSError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        return EXIT_FAILED if isinstance(exc, OSError) and exc.errno in FAILURE_ERRNOS else EXIT_BAD_INPUT
    print(_network_summary(result))
    return EXIT_FAILED if result.state == "failed" else EXIT_OK


def _print_fit_epoch(record: dict[str, Any]) -> None:
    best = " (best)" if record["best"] else ""
    print(f"epoch {record['epoch']}: train loss {record['train_loss']:.5f} reconstruction MSE "
          f"{record['train_mse']:.5f}, val reconstruction MSE {record['val_mse']:.5f}{best}, lr {record['lr']:.2e}, "
          f"{record['seconds']:.0f} s", flush=True)


def _fit_summary(result: FitResult) -> str:
    lines = [f"{result.state}: {result.message}"]
    if result.best_eval:
        lines.append(f"best: val reconstruction MSE {result.best_eval['val_mse']:.5f} (epoch {result.best_eval['epoch']})")
    if result.path:
        lines.append(f"wrote {result.path} ({os.path.getsize(result.path) / 2**20:.1f} MB, pooling-network file with "
                     "its fitted decoder)")
    else:
        lines.append("nothing written: the fit ended before its first evaluation")
    return "\n".join(lines)


def _fit_decoder(args: argparse.Namespace) -> int:
    """`--encoder FILE --freeze-encoder`: a what-where decoder fitted to a frozen classifier by
    core.training.fit_decoder, written with it to --export (default <run>/network.pt)."""
    try:
        if not args.freeze_encoder:
            raise ValueError("--encoder needs --freeze-encoder: only frozen-encoder fits exist (the network's weights "
                             "stay as they are)")
        for flag, given in (("--network", args.network is not None), ("--test", args.test)):
            if given:
                raise ValueError(f"{flag} does not apply to --encoder (a decoder fit)")
        try:
            dataset = read_network_file(args.encoder).dataset  # the encoder's own data unless --dataset says
        except NetworkError:
            dataset = None  # fit_decoder says why the file cannot serve
        train_config, data_config = _network_configs(args, "--encoder", {"dataset": dataset} if dataset else None)
        run = args.run or (tempfile.mkdtemp(prefix="fit-dry-run-") if args.dry_run else
                           str(runs_root() / default_run_name(data_config.dataset)))
        path = args.export or str(Path(run) / NETWORK_FILE_NAME)
        result = fit_decoder(args.encoder, train_config, data_config, export_path=path, progress=not args.quiet,
                             on_epoch=_print_fit_epoch)
    except (ValueError, TypeError, OSError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        return EXIT_FAILED if isinstance(exc, OSError) and exc.errno in FAILURE_ERRNOS else EXIT_BAD_INPUT
    print(_fit_summary(result))
    return EXIT_FAILED if result.state == "failed" else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.encoder is not None or args.freeze_encoder:
        if args.encoder is None:
            print("error: --freeze-encoder needs --encoder FILE (the network whose decoder is fitted)",
                  file=sys.stderr)
            return EXIT_BAD_INPUT
        return _fit_decoder(args)
    if args.network is not None:
        return _train_network(args)
    claim = None
    try:
        if args.resume and not args.run:
            raise ValueError("--resume needs --run DIR")
        if args.dry_run and not args.run and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ValueError("--dry-run under torchrun needs --run DIR (every rank must use the same folder)")
        if args.claim_fd is not None and (not args.run or args.dry_run):
            raise ValueError("--claim-fd passes a launcher's claim on --run DIR down to a run, not to a dry run")
        claim = rundir.inherit_claim(args.run, args.claim_fd) if args.claim_fd is not None else None
        model_config, train_config, data_config = _configs(args)
        run = args.run or (tempfile.mkdtemp(prefix="swwae-dry-run-") if args.dry_run else
                           str(runs_root() / default_run_name(data_config.dataset)))
        common = dict(run_dir=run, progress=not args.quiet, export_path=args.export, test=args.test)
        export_before = _mtime(args.export) if args.export else None
        if args.dry_run:
            world = int(os.environ.get("WORLD_SIZE", "1"))
            data_config = replace(data_config, max_train=DRY_RUN_STEPS_PER_EPOCH * train_config.batch_size * world,
                                  max_val=DRY_RUN_VAL_SAMPLES)
            train_config = replace(train_config, epochs=1, log_every=1, max_steps=0)
            # new_only: never into a real run
            result = train(model_config, train_config, data_config, resume=False, new_only=True,
                           **{**common, "export_path": None, "test": False})
            if result.state == "finished":  # a stopped first half ends the dry run
                train_config = replace(train_config, epochs=2)
                result = train(model_config, train_config, data_config, resume=True, **common)
                load_checkpoint(Path(run) / rundir.LAST_CHECKPOINT)  # the file must load back
        else:
            result = train(model_config, train_config, data_config, resume=args.resume, claim=claim, **common)
    except (ValueError, TypeError, OSError, CheckpointError, rundir.RunDirError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        return EXIT_FAILED if isinstance(exc, OSError) and exc.errno in FAILURE_ERRNOS else EXIT_BAD_INPUT
    finally:
        if claim is not None:
            claim.release()
    if int(os.environ.get("RANK", "0")) == 0:
        print(_summary(result))
        print(f"run directory: {run}")
        if args.export and _mtime(args.export) != export_before:
            evaluation = load_checkpoint(args.export).metrics.get("eval")
            print(f"exported to {args.export} ({os.path.getsize(args.export) / 2**20:.1f} MB, weights only)"
                  + (f": {_describe(evaluation)}" if evaluation else ""))
        elif args.export:
            print(f"nothing exported to {args.export}: the run ended {result.state} with no evaluated model")
    return EXIT_FAILED if result.state == "failed" else EXIT_OK
