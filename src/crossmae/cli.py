"""`crossmae <command>`: one sub-command per module; user errors print one sentence, exit 2."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys

from crossmae.errors import CrossMAEError, Terminated
from crossmae.train.signals import EXIT_CODES

# Sub-command name -> module with `add_arguments(parser)` and `run(args) -> int | None`.
COMMANDS: dict[str, tuple[str, str]] = {
    "models": ("crossmae.commands.models", "list the registered model configs"),
    "export": ("crossmae.commands.export", "export an encoder or classifier (timm, safetensors)"),
    "pretrain": ("crossmae.commands.pretrain", "pretrain MAE / CrossMAE (demo, 1 GPU, torchrun)"),
    "finetune": ("crossmae.commands.finetune", "fine-tune an encoder as a ViT classifier"),
    "linprobe": ("crossmae.commands.linprobe", "linear probe on frozen features (MAE protocol)"),
    "knn": ("crossmae.commands.knn", "weighted kNN accuracy of frozen features"),
    "evaluate": ("crossmae.commands.evaluate", "top-1 / top-5 of a classifier (fine-tuned, probe)"),
    "visualize": ("crossmae.commands.visualize", "reconstruction / attention / fusion figures"),
    "profile": ("crossmae.commands.profile", "parameters, FLOPs, step speed and memory"),
    "plot": ("crossmae.commands.plot", "loss and learning-rate curves of a run"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crossmae", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module).add_arguments(cmd)
        cmd.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = importlib.import_module(args._module).run(args)
    except CrossMAEError as err:
        print(f"crossmae {args.command}: error: {err}", file=sys.stderr)
        return 2
    except Terminated:
        _said_once(f"crossmae {args.command}: stopped by SIGTERM")
        return EXIT_CODES[signal.SIGTERM]
    except KeyboardInterrupt:
        _said_once(f"crossmae {args.command}: interrupted")
        return EXIT_CODES[signal.SIGINT]
    except OSError as err:  # the file system refused where no sentence of ours explains it
        where = f"{err.filename}: " if err.filename else ""
        print(f"crossmae {args.command}: error: {where}{err.strerror or err}", file=sys.stderr)
        return 2
    return int(code or 0)


def _said_once(text: str) -> None:
    """On stderr, by the first process alone: under torchrun every process gets the signal,
    and the same line from each would only repeat it."""
    if os.environ.get("RANK", "0") == "0":
        print(text, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
