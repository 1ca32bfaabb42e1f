"""`blazedistill distill`: train a student to reproduce a teacher's outputs on unlabeled images."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from blazedistill.distill.config import ConfigError, RunConfig, known_keys, load_config
from blazedistill.messages import first_line

#: command-line flag (argparse dest) -> dotted config key
FLAG_KEYS = {
    "teacher": "model.teacher",
    "student": "model.student",
    "loss": "loss.name",
    "data": "data.train",
    "val": "data.val",
    "val_fraction": "data.val_fraction",
    "val_size": "data.val_size",
    "workers": "data.workers",
    "augment": "data.augment",
    "preview": "data.preview",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "max_steps": "train.max_steps",
    "val_every": "train.val_every_steps",
    "time_limit": "train.time_limit",
    "lr": "optim.lr",
    "ema": "optim.ema_decay",
    "out": "train.out",
    "device": "train.device",
    "seed": "train.seed",
    "threads": "train.threads",
}

EXAMPLES = """examples:
  blazedistill distill                                   # the built-in demo (about a minute on a 2-core CPU)
  blazedistill distill --data 'utkface/utkface-{00000..00003}.tar' --val utkface/utkface-00004.tar \\
      --val-size 500 --epochs 4 --out runs/utk
  blazedistill distill --resume runs/utk                 # continue an interrupted run
  blazedistill distill --config runs/utk/config.yaml --out runs/utk2   # repeat a run
  python -m torch.distributed.run --nproc_per_node=2 -m blazedistill distill --data photos/   # DDP
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "distill",
        help="distill a teacher into a student on unlabeled images",
        description="Train a student detector to reproduce a BlazeFace teacher's raw outputs on unlabeled "
        "images (the teacher labels every augmented batch). Without --data it runs a short demo on photos "
        "shipped with the installed packages. Flags override --config values.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", metavar="FILE", help="run config YAML (e.g. a run folder's config.yaml)")
    p.add_argument("--teacher", help="teacher model name (default: front)")
    p.add_argument("--student", help="student architecture from the registry (default: the registry's default)")
    p.add_argument("--loss", choices=("detection", "seed"), help="distillation loss (default: detection)")
    p.add_argument(
        "--data",
        nargs="+",
        action="extend",
        metavar="SRC",
        help="training images: folders, .tar shards (brace patterns), path lists, videos; none = the built-in demo set",
    )
    p.add_argument(
        "--val",
        nargs="+",
        action="extend",
        metavar="SRC",
        help="validation images (default: hold out --val-fraction of --data)",
    )
    p.add_argument("--val-fraction", type=float, help="share of --data held out for validation (default: 0.1)")
    p.add_argument(
        "--val-every", type=int, metavar="STEPS", help="also validate every STEPS steps (default: per epoch)"
    )
    p.add_argument("--val-size", type=int, help="validate on a fixed (seeded) subset of this many images")
    p.add_argument(
        "--preview",
        nargs="+",
        action="extend",
        metavar="SRC",
        help="photos for side_by_side/ (default: the first validation images)",
    )
    p.add_argument("--augment", choices=("default", "seed", "none"), help="augmentation preset (default: default)")
    p.add_argument("--epochs", type=int, help="epochs over the training data (default: 10)")
    p.add_argument("--max-steps", type=int, help="stop after this many optimizer steps (the LR schedule spans them)")
    p.add_argument(
        "--time-limit",
        type=float,
        metavar="MIN",
        help="stop after this many minutes (resumable; the LR schedule does not shrink)",
    )
    p.add_argument("--batch-size", type=int, help="images per step and process (default: 32)")
    p.add_argument("--lr", type=float, help="peak AdamW learning rate (default: 2e-3)")
    p.add_argument("--ema", type=float, metavar="DECAY", help="keep an EMA of the student (e.g. 0.998); off by default")
    p.add_argument("--workers", type=int, help="data loading processes (default: 2)")
    p.add_argument("--out", metavar="DIR", help="run folder (default: runs/<timestamp>)")
    p.add_argument(
        "--resume",
        nargs="?",
        const="",
        metavar="RUN",
        help="continue the run in RUN (a run folder or checkpoint; default: --out), with its config",
    )
    p.add_argument("--device", help="auto (default: cuda, then mps, then cpu), cpu, cuda, cuda:1, mps, ...")
    p.add_argument("--seed", type=int, help="seed for everything (default: 0)")
    p.add_argument("--threads", type=int, help="torch CPU threads per process (default: torch's choice)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"any other config value, e.g. optim.weight_decay=0.05 (keys: {', '.join(known_keys())})",
    )
    p.set_defaults(func=run)


def resolve_config(args: argparse.Namespace) -> RunConfig:
    """Defaults <- --config file (or the resumed run's config.yaml) <- command-line flags."""
    if args.config:
        cfg = load_config(args.config)
    elif args.resume is not None:
        run_dir = _run_dir(args.resume or args.out)
        cfg = load_config(run_dir / "config.yaml")
        cfg.train.out = str(run_dir)
    else:
        cfg = RunConfig()
    for flag, key in FLAG_KEYS.items():
        value = getattr(args, flag)
        if value is not None:
            cfg.set(key, value, source=f"--{flag.replace('_', '-')}")
    for item in args.set:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {key.strip()}: {text!r} is not a valid YAML value ({first_line(exc)})") from None
        cfg.set(key.strip(), value, source=f"--set {key.strip()}")
    return cfg


def run(args: argparse.Namespace) -> int:
    from blazedistill.distill.checkpoint import CheckpointError
    from blazedistill.distill.loop import NonFiniteLossError, train

    try:
        if args.resume is not None and not (args.resume or args.out):
            raise ConfigError("--resume needs a run folder: --resume runs/NAME (or --out runs/NAME)")
        cfg = resolve_config(args)
        resume = None if args.resume is None else (args.resume or cfg.train.out)
        train(cfg, resume=resume)
    except NonFiniteLossError as exc:
        print(f"blazedistill distill: stopped: {exc}", file=sys.stderr)
        return 1
    except (ConfigError, CheckpointError, FileNotFoundError, ValueError) as exc:
        print(f"blazedistill distill: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _run_dir(path: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"--resume {path}: no such run folder or checkpoint")
    return path if path.is_dir() else path.parent
