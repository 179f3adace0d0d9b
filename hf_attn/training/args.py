"""Dataclass <-> argparse <-> YAML, shared by the recipes.

Every field of a recipe's arguments dataclass becomes a flag, spelled both ``--foo-bar`` and ``--foo_bar``
(the seeds use both styles). ``--config file.yaml`` supplies defaults (keys are field names, either spelling);
flags given on the command line win over the file. Help text comes from each field's ``option(default, help)``.

Precedence: dataclass defaults < ``--quick`` < ``--config`` < what the user set. "Set by the user" means passed on
the command line (or, from Python, passed to the dataclass constructor: classes decorated with
:func:`track_explicit` remember which fields their caller gave) -- never "differs from the default", so
``--quick --batch-size 32`` trains with 32 even though 32 is also the default.

Why not ``transformers.HfArgumentParser``: it fills every default into the namespace, so which flags were typed is
lost, and that is what the precedence above needs; its booleans have a ``--no-foo`` only when the default is True
(here every boolean has ``--foo`` / ``--no-foo``); its YAML loading replaces the command line instead of sitting
under it, without line numbers or type checks. Here argparse runs with ``default=SUPPRESS``, so the namespace holds
exactly the flags given, and the file is merged under them.

Values are checked after merging (:func:`check_values`): a step count, batch size or learning rate that makes no
sense stops the run before anything is built, naming the flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import sys
import types
import typing
from pathlib import Path

from ..errors import UsageError, cli_errors  # noqa: F401  (hf_attn.training.args.UsageError, as before)


def option(default, help: str, **meta):
    """A field of an arguments dataclass: its default, its ``--help`` text and argparse extras (``choices``,
    ``aliases``). A list default is copied per instance."""
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata={"help": help, **meta})
    return dataclasses.field(default=default, metadata={"help": help, **meta})


@dataclasses.dataclass
class RunArguments:
    """The options every training recipe shares, with the same meaning and default: the YAML file, device and
    precision, checkpoints kept and resumed, logging and the tracker, the Hub repo's visibility. A recipe's
    arguments dataclass subclasses it and adds its own."""

    config: str | None = option(None, "YAML file of option defaults (command-line flags win)")
    cpu: bool = option(False, "force CPU even when an accelerator is present")
    mixed_precision: str = option("no", "Accelerate mixed precision", choices=("no", "fp16", "bf16"))
    save_total_limit: int = option(2, "checkpoints kept")
    resume_from_checkpoint: str | None = option(None, "checkpoint folder, or 'latest'")
    logging_steps: int = option(10, "log every N steps")
    report_to: str = option("none", "Accelerate tracker", choices=("none", "tensorboard", "trackio", "wandb"))
    hub_private: bool = option(False, "create the Hub repo private (with --push-to-hub)")
    _config_applied: bool = False  # set by the parser once --config has been merged


def _base_type(tp):
    """(python type, is_list) for a field annotation such as ``int | None`` or ``list[int] | None``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0])
    if origin in (list, tuple, typing.List):
        inner = typing.get_args(tp)
        return (inner[0] if inner else str), True
    return tp, False


def build_parser(cls, prog: str, description: str, quick: dict | None = None) -> argparse.ArgumentParser:
    """The command line of a recipe: one flag per field of the arguments dataclass ``cls``. ``--help`` shows each
    default, and what ``--quick`` sets (the ``quick`` values) and how ``--config`` applies."""
    epilog = ("--config FILE.yaml sets defaults from its keys (option names, either spelling); flags on the command "
              "line win.")
    if quick:
        epilog += " --quick sets, where not given: " + ", ".join(f"{k}={v}" for k, v in quick.items()) + "."
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog)
    return add_dataclass_arguments(parser, cls)


def _default_of(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls) -> argparse.ArgumentParser:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name.startswith("_"):
            continue
        tp, is_list = _base_type(hints[f.name])
        names = [f"--{f.name.replace('_', '-')}"]
        if "_" in f.name:
            names.append(f"--{f.name}")
        names += [n for n in f.metadata.get("aliases", ()) if n not in names]
        help_text = f.metadata.get("help", "")
        default = _default_of(f)
        if default not in (None, False, [], ()) and "default" not in help_text:  # unset values parse to SUPPRESS
            help_text += f" (default: {' '.join(map(str, default)) if isinstance(default, list) else default})"
        kwargs = {"dest": f.name, "help": help_text.replace("%", "%%"), "default": argparse.SUPPRESS}
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
        if tp is bool and not is_list:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif is_list:
            kwargs.update(nargs="+", type=tp)
        else:
            kwargs["type"] = tp
        parser.add_argument(*names, **kwargs)
    return parser


class ConfigError(UsageError):
    """A ``--config`` file that cannot be used (missing, not YAML, unknown option, wrong type); names file and line."""


def load_yaml_config(path: str | Path, cls=None) -> dict:
    """The option values in a ``--config`` YAML file (keys normalised to field names).

    With ``cls`` (the arguments dataclass), unknown keys and values of the wrong type raise ``ConfigError`` naming the
    file and the line. A YAML syntax error names the file, the line and the column.
    """
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: no such file") from None
    except (IsADirectoryError, UnicodeDecodeError, OSError) as e:
        raise ConfigError(f"--config {path}: cannot read it as a text file ({e})") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"--config {path}{where}: not valid YAML ({problem}); fix that line or pass the option as a "
                          "flag instead") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a mapping of option names to values (e.g. 'batch_size: 32'), got "
                          f"a {type(data).__name__}")
    lines = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, _ in node.value:
            lines[str(key_node.value).replace("-", "_")] = key_node.start_mark.line + 1
    out = {str(k).replace("-", "_"): v for k, v in data.items()}
    if cls is not None:
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if not f.name.startswith("_")}
        for key, value in out.items():
            where = f"--config {path} line {lines[key]}" if key in lines else f"--config {path}"
            if key not in fields:
                close = difflib.get_close_matches(key, list(fields), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"{where}: unknown option {key!r}{hint}")
            problem = _type_problem(value, hints[key], fields[key])
            if problem:
                raise ConfigError(f"{where}: {key}: {problem}")
    return out


def recipe_path(name: str) -> Path:
    """The YAML file of a recipe shipped with hf_attn: ``hf_attn/recipes/NAME.yaml`` (in the repository the folder
    is recipes/configs/, which the package links to)."""
    from importlib.resources import files

    return Path(str(files("hf_attn") / "recipes" / f"{name}.yaml"))


def load_recipe(name: str, cls) -> dict:
    """The option values of the shipped recipe ``name`` (``recipe_path``), checked against the arguments dataclass
    ``cls`` like a ``--config`` file. A recipe lives in its YAML file only; the code reads it from there."""
    return load_yaml_config(recipe_path(name), cls)


def _type_problem(value, annotation, f) -> str | None:
    """Why ``value`` (from YAML) does not fit a field annotated ``annotation``; None when it fits."""
    if value is None:
        optional = type(None) in typing.get_args(annotation)
        return None if optional or f.default is None else "may not be empty (null)"
    tp, is_list = _base_type(annotation)
    values = value if is_list and isinstance(value, list) else [value]
    if is_list and not isinstance(value, list):
        return f"expected a list of {tp.__name__}, got {value!r}"
    for v in values:
        ok = (isinstance(v, bool) if tp is bool else
              isinstance(v, int) and not isinstance(v, bool) if tp is int else
              isinstance(v, (int, float)) and not isinstance(v, bool) if tp is float else
              isinstance(v, str) if tp is str else True)
        if not ok:
            return f"expected {'a list of ' if is_list else ''}{_TYPE_WORDS.get(tp, tp.__name__)}, got {v!r}"
        choices = f.metadata.get("choices")
        if choices and v not in choices:
            return f"{v!r} is not one of {list(choices)}"
    return None


_TYPE_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def track_explicit(cls):
    """Class decorator for an arguments dataclass: each instance remembers the fields its constructor was given
    (``explicit_fields``), so ``--quick`` and ``--config`` never override a value the caller chose."""
    init = cls.__init__
    names = [f.name for f in dataclasses.fields(cls) if f.init]

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        object.__setattr__(self, "_explicit", frozenset(names[: len(args)]) | frozenset(kwargs))

    cls.__init__ = __init__
    return cls


def parse_into(cls, parser: argparse.ArgumentParser, argv=None):
    """Parse ``argv``; defaults < ``--config`` YAML < command line. Returns an instance of ``cls``.

    The instance remembers which options the user gave (command line and config file), see ``explicit_fields``.
    """
    ns = parser.parse_args(argv)
    values = {}
    config_path = getattr(ns, "config", None)
    if config_path:
        values.update(load_yaml_config(config_path, cls))
        for key, value in vars(ns).items():
            if key in values and values[key] != value and not key.startswith("_"):
                print(f"note: --config {config_path} sets {key}: {values[key]!r}; the command line's "
                      f"--{key.replace('_', '-')} {value!r} wins", file=sys.stderr)
    values.update(vars(ns))
    if config_path and "_config_applied" in {f.name for f in dataclasses.fields(cls)}:
        values["_config_applied"] = True
    obj = cls(**values)  # load_yaml_config refused any key that is not a field
    object.__setattr__(obj, "_explicit", frozenset(k for k in values if not k.startswith("_")))
    return obj


def explicit_fields(obj) -> set[str]:
    """Fields the user set (command line, config file, or constructor keywords): what ``--quick`` must not override.

    For a dataclass that does not record it (not built by ``parse_into`` nor decorated with ``track_explicit``),
    falls back to the fields whose value differs from the default.
    """
    recorded = getattr(obj, "_explicit", None)
    if recorded is not None:
        return set(recorded)
    out = set()
    for f in dataclasses.fields(obj):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        if getattr(obj, f.name) != default:
            out.add(f.name)
    return out


def apply_overrides(obj, overrides: dict, keep: set[str]):
    """Set each override on ``obj`` unless its field is in ``keep`` (set explicitly by the user)."""
    for k, v in overrides.items():
        if k not in keep:
            setattr(obj, k, v)
    return obj


def resolve_config_and_quick(args, quick_overrides: dict):
    """A copy of ``args`` with its ``--config`` YAML applied (when the dataclass was built directly rather than by
    the parser) and then, with ``args.quick``, ``quick_overrides``; options the user set explicitly always win."""
    keep = explicit_fields(args)
    args = dataclasses.replace(args)
    if args.config and not args._config_applied:
        file_values = load_yaml_config(args.config, type(args))
        apply_overrides(args, file_values, keep)
        keep |= set(file_values)
        args._config_applied = True
    if args.quick:
        apply_overrides(args, quick_overrides, keep)
    object.__setattr__(args, "_explicit", frozenset(keep))
    check_values(args)
    return args


# field name -> (rule, what a sensible value is / what to do). Rules: "pos" > 0, "nonneg" >= 0, "frac" in [0, 1],
# "frac_open" in [0, 1). None is accepted wherever the field allows it (it means "not set").
_VALUE_RULES = {
    "max_steps": ("pos", "a positive number of optimizer steps (leave it out to train for --num-epochs)"),
    "num_epochs": ("pos", "a positive number of epochs"),
    "batch_size": ("pos", "a positive number of examples per batch"),
    "grad_accum_steps": ("pos", "a positive number of micro-batches per step (1 = no accumulation)"),
    "learning_rate": ("pos", "a positive learning rate, e.g. 2e-4"),
    "muon_lr": ("pos", "a positive learning rate, e.g. 0.02"),
    "weight_decay": ("nonneg", "0 or more"),
    "warmup_ratio": ("frac", "a fraction of the steps between 0 and 1"),
    "warmup_steps": ("nonneg", "0 or more steps"),
    "max_grad_norm": ("nonneg", "0 (no clipping) or a positive norm"),
    "max_seq_length": ("pos", "a positive number of tokens"),
    "vocab_size": ("pos", "a positive vocabulary size"),
    "max_train_samples": ("pos", "a positive number of pairs (leave it out to use all)"),
    "unsupervised_samples": ("nonneg", "0 or more"),
    "max_train_minutes": ("nonneg", "0 or more minutes"),
    "temperature": ("pos", "a positive temperature, e.g. 0.05"),
    "min_temperature": ("pos", "a positive temperature"),
    "max_temperature": ("pos", "a positive temperature"),
    "distill_weight": ("nonneg", "0 or more"),
    "contrastive_weight": ("nonneg", "0 or more"),
    "eval_steps": ("nonneg", "0 (evaluate only at the end) or a positive interval"),
    "eval_max_rows": ("pos", "a positive number of rows (leave it out to use all)"),
    "eval_batches": ("pos", "a positive number of batches"),
    "save_steps": ("nonneg", "0 (never) or a positive interval"),
    "save_total_limit": ("nonneg", "0 (keep all) or a positive count"),
    "logging_steps": ("pos", "a positive interval"),
    "num_workers": ("nonneg", "0 or more worker processes"),
    "max_bytes": ("pos", "a positive number of bytes (leave it out to read everything)"),
    "block_size": ("pos", "a positive sequence length"),
    "seq_len": ("pos", "a positive sequence length"),
    "dropout": ("frac_open", "a probability in [0, 1)"),
    "topk": ("pos", "a positive number of keys"),
    "window": ("pos", "a positive window"),
    "distill_pool": ("nonneg", "0 (no pool) or a positive number of sentences"),
    "scaling_seq_lens": ("pos", "positive sequence lengths"),
}


def check_values(args) -> None:
    """Raise ``UsageError`` naming the first option whose value makes no sense (see ``_VALUE_RULES``)."""
    for f in dataclasses.fields(args):
        rule = _VALUE_RULES.get(f.name)
        value = getattr(args, f.name)
        if rule is None or value is None:
            continue
        kind, sensible = rule
        values = value if isinstance(value, list) else [value]
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
                bad = True
            else:
                bad = {"pos": v <= 0, "nonneg": v < 0, "frac": not 0 <= v <= 1, "frac_open": not 0 <= v < 1}[kind]
            if bad:
                raise UsageError(f"--{f.name.replace('_', '-')} {v}: expected {sensible}")
    lo, hi = getattr(args, "min_temperature", None), getattr(args, "max_temperature", None)
    if lo is not None and hi is not None and lo > hi:
        raise UsageError(f"--min-temperature {lo} is above --max-temperature {hi}")
    if getattr(args, "push_to_hub", None):  # before training, not after it
        from hf_attn.push import check_repo_id

        check_repo_id(args.push_to_hub)


def to_flat_dict(obj) -> dict:
    """Tracker-friendly config: scalars as is, lists/None as strings."""
    out = {}
    for k, v in dataclasses.asdict(obj).items():
        out[k] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out
