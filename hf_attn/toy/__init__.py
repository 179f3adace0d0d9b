"""`hf-attn toy`: train the readable attention modules on sequence reversal and look at what they learn.

    hf-attn toy --model selfhead|multihead --embed_dim 64 --num_heads 8 --learning_rate 0.001 \\
                --batch_size 32 --seq_length 10 --epochs 100 [--save_path PATH] [--interactive]
    hf-attn toy --load PATH            # restore a saved model and evaluate it

Prints train / validation accuracy per epoch and saves one attention heatmap per head (PNG) for a validation
example in ``--plot-dir``. The classes to read are `SelfAttention` and `MultiHeadAttention` in
``hf_attn/toy/attention.py``; the README section "Understanding attention" explains them.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

from ..errors import UsageError, check_device
from .attention import MultiHeadAttention, SelfAttention, causal_mask
from .trainer import MODEL_TYPES, AttentionTrainer, ToyConfig

_DEFAULTS = ToyConfig()

# The seed's options, in the order --interactive asks for them: (name, type, help).
INTERACTIVE_OPTIONS = (
    ("model", str, f"model type ({' or '.join(MODEL_TYPES)})"),
    ("embed_dim", int, "embedding dimension"),
    ("num_heads", int, "number of attention heads (multihead only)"),
    ("learning_rate", float, "learning rate"),
    ("batch_size", int, "batch size"),
    ("seq_length", int, "sequence length"),
    ("epochs", int, "training epochs"),
    ("save_path", str, "where to save the trained model (empty: don't save)"),
)

NOT_A_TTY_MESSAGE = (
    "--interactive needs a terminal to prompt on, but stdin is not a TTY; "
    "pass the options as flags instead, e.g. `hf-attn toy --model selfhead --epochs 20`."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", choices=MODEL_TYPES, default=_DEFAULTS.model, help="model type (default: %(default)s)"
    )
    parser.add_argument(
        "--embed_dim", type=int, default=_DEFAULTS.embed_dim, help="embedding dimension (default: %(default)s)"
    )
    parser.add_argument(
        "--num_heads",
        type=int,
        default=_DEFAULTS.num_heads,
        help="attention heads, multihead only (default: %(default)s)",
    )
    parser.add_argument(
        "--learning_rate", type=float, default=_DEFAULTS.learning_rate, help="learning rate (default: %(default)s)"
    )
    parser.add_argument(
        "--batch_size", type=int, default=_DEFAULTS.batch_size, help="batch size (default: %(default)s)"
    )
    parser.add_argument(
        "--seq_length", type=int, default=_DEFAULTS.seq_length, help="sequence length (default: %(default)s)"
    )
    parser.add_argument("--epochs", type=int, default=_DEFAULTS.epochs, help="training epochs (default: %(default)s)")
    parser.add_argument("--save_path", default=None, help="save the trained model (weights + arguments) to this file")
    parser.add_argument("--interactive", action="store_true", help="prompt for each option (needs a terminal)")
    parser.add_argument(
        "--load", default=None, metavar="PATH", help="restore a model saved with --save_path and evaluate it"
    )
    parser.add_argument(
        "--plot-dir",
        dest="plot_dir",
        default="attention_maps",
        help="folder for the per-head attention heatmaps of a validation example ('' to skip; default: %(default)s)",
    )
    parser.add_argument(
        "--seed", type=int, default=_DEFAULTS.seed, help="random seed for data and weights (default: %(default)s)"
    )
    parser.add_argument(
        "--device", default="auto", help="torch device: auto, cpu, cuda, cuda:1, ... (default: %(default)s)"
    )


def _ask(name: str, kind: type, help_text: str, default):
    """Prompt until the answer parses as `kind`; an empty answer keeps `default`."""
    shown = "" if default is None else default
    while True:
        answer = input(f"{name} - {help_text} [{shown}]: ").strip()
        if not answer:
            return default
        if name == "model" and answer not in MODEL_TYPES:
            print(f"  please answer one of: {', '.join(MODEL_TYPES)}")
            continue
        try:
            return kind(answer)
        except ValueError:
            print(f"  {answer!r} is not a valid {kind.__name__}; try again")


def prompt_for_options(args: argparse.Namespace) -> argparse.Namespace:
    """Ask for each of the seed's options, showing the current value as the default. Needs a TTY on stdin."""
    if not sys.stdin.isatty():
        raise UsageError(NOT_A_TTY_MESSAGE)
    print("Press Enter to keep the value in brackets.")
    for name, kind, help_text in INTERACTIVE_OPTIONS:
        if name == "num_heads" and args.model != "multihead":
            continue
        setattr(args, name, _ask(name, kind, help_text, getattr(args, name)))
    return args


def _device(name: str) -> str:
    import torch

    name = check_device(name)
    if name == "cpu":
        # The toy's matrices are tiny: thread hand-offs cost more than they save (10x slower on a busy 2-core box).
        torch.set_num_threads(1)
    return name


def _finish(trainer: AttentionTrainer, plot_dir: str | None) -> None:
    val = trainer.evaluate()
    print(
        f"validation accuracy {val['accuracy']:.4f} (whole sequences {val['sequence_accuracy']:.4f}, "
        f"loss {val['loss']:.4f}) on {trainer.config.num_val} reversal examples of length {trainer.config.seq_length}"
    )
    if plot_dir:
        paths = trainer.plot_attention(plot_dir)
        print(f"attention heatmaps ({len(paths)} head{'s' if len(paths) > 1 else ''}) saved to {paths[0].parent}/")


def _check_output_paths(save_path: str | None, plot_dir: str | None) -> None:
    """Refuse, before any training, a --save_path or --plot-dir that cannot be written (missing folders are made)."""
    if save_path:
        path = Path(save_path)
        if path.is_dir():
            raise UsageError(f"--save_path {path} is a folder (pass a file name, e.g. {path / 'toy.pt'})")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"--save_path {path}: cannot create its folder {path.parent} ({e.strerror or e}) "
                             "(pass a path you can write to)") from None
    if plot_dir and Path(plot_dir).exists() and not Path(plot_dir).is_dir():
        raise UsageError(f"--plot-dir {plot_dir} is a file, not a folder (pass a folder; it is created if missing)")


def run(args: argparse.Namespace) -> int:
    if args.interactive:
        try:
            args = prompt_for_options(args)
        except EOFError:
            raise UsageError("input ended before all options were answered; nothing was run") from None
    _check_output_paths(args.save_path, args.plot_dir)
    device = _device(args.device)
    if args.load:
        trainer = AttentionTrainer.load(args.load, device=device)
        c = trainer.config
        print(
            f"loaded {args.load}: {c.model}, embed_dim {c.embed_dim}, "
            f"{'num_heads ' + str(c.num_heads) + ', ' if c.model == 'multihead' else ''}"
            f"seq_length {c.seq_length}, trained {len(trainer.history)} epochs"
        )
        _finish(trainer, args.plot_dir)
        return 0
    config = ToyConfig(**{f.name: getattr(args, f.name) for f in fields(ToyConfig) if hasattr(args, f.name)})
    trainer = AttentionTrainer(config, device=device)

    c = trainer.config
    heads = f", num_heads {c.num_heads}" if c.model == "multihead" else ""
    print(
        f"training {c.model} (embed_dim {c.embed_dim}{heads}, {trainer.num_parameters:,} parameters) to reverse "
        f"sequences of {c.seq_length} symbols; lr {c.learning_rate}, batch {c.batch_size}, {c.epochs} epochs, "
        f"device {device}"
    )
    trainer.train()
    _finish(trainer, args.plot_dir)
    if args.save_path:
        print(f"saved to {trainer.save(args.save_path)}")
    return 0


__all__ = [
    "AttentionTrainer",
    "MultiHeadAttention",
    "SelfAttention",
    "ToyConfig",
    "add_arguments",
    "causal_mask",
    "prompt_for_options",
    "run",
]
