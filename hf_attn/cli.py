"""`hf-attn` command line: one subcommand per entry point, each implemented in the module that owns it.

Every subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int``; they are imported only when
their subcommand runs, so `hf-attn --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import run_entry_point

# name -> (module, function prefix, help)
SUBCOMMANDS = {
    "quickstart": ("hf_attn.quickstart", "", "train, evaluate and export a small embedder end to end"),
    "eval": ("hf_attn.evaluation.mteb_runner", "", "evaluate a sentence-transformers model with MTEB (STS-B)"),
    "export": ("hf_attn.hub", "export_", "write a Hub-ready folder (weights, remote code, tokenizer, card)"),
    "push": ("hf_attn.push", "", "upload an exported folder to the Hugging Face Hub"),
    "encode": ("hf_attn.shell", "encode_", "embed texts with an exported embedder (JSON lines or .npy)"),
    "generate": ("hf_attn.shell", "generate_", "continue a prompt with an exported language model"),
    "bench": ("hf_attn.bench", "", "run a benchmark script from benchmarks/"),
    "toy": ("hf_attn.toy", "", "train the educational self-/multi-head attention models"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-attn", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module_name, prefix, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module_name, _prefix=prefix)
        # Arguments are added lazily (see main) so that `hf-attn --help` imports nothing heavy.
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``hf-attn COMMAND ...``. A user error (a bad value, a missing file, a Hub failure) prints one line,
    ``hf-attn COMMAND: error: ...``, and exits with 2 (``hf_attn.errors``); ``--debug`` or ``HF_ATTN_DEBUG=1`` adds
    the traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    words = [a for a in argv if a != "--debug"]
    parser = build_parser()
    if not words or words[0] in ("-h", "--help") or words[0] not in SUBCOMMANDS:
        parser.parse_args(words)  # prints help or the "invalid choice" error and exits
        return 2
    name = words[0]
    i = argv.index(name)  # only --debug can come before it
    return run_entry_point(f"hf-attn {name}", _run_subcommand, argv[:i] + argv[i + 1:], name)


def _run_subcommand(argv: list[str], name: str) -> int:
    module_name, prefix, help_text = SUBCOMMANDS[name]
    module = importlib.import_module(module_name)
    sub_parser = argparse.ArgumentParser(prog=f"hf-attn {name}", description=help_text,
                                         epilog="--debug (or HF_ATTN_DEBUG=1): show the traceback behind an error")
    getattr(module, f"{prefix}add_arguments")(sub_parser)
    args = sub_parser.parse_args(argv)
    return int(getattr(module, f"{prefix}run")(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
