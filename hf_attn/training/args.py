"""Dataclass <-> argparse <-> YAML, shared by the recipes.

Every field of a recipe's arguments dataclass becomes a flag, spelled both ``--foo-bar`` and ``--foo_bar``
(the seeds use both styles). ``--config file.yaml`` supplies defaults (keys are field names, either spelling);
flags given on the command line win over the file. Help text comes from ``field(metadata={"help": ...})``.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path


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
        kwargs = {"dest": f.name, "help": f.metadata.get("help", ""), "default": argparse.SUPPRESS}
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


def load_yaml_config(path: str | Path) -> dict:
    import yaml

    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of option names to values")
    return {k.replace("-", "_"): v for k, v in data.items()}


def parse_into(cls, parser: argparse.ArgumentParser, argv=None):
    """Parse ``argv``; defaults < ``--config`` YAML < command line. Returns an instance of ``cls``."""
    ns = parser.parse_args(argv)
    values = {}
    config_path = getattr(ns, "config", None)
    if config_path:
        values.update(load_yaml_config(config_path))
    values.update(vars(ns))
    if config_path and "_config_applied" in {f.name for f in dataclasses.fields(cls)}:
        values["_config_applied"] = True
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise SystemExit(f"unknown option(s) in {config_path}: {unknown}")
    return cls(**values)


def explicit_fields(obj) -> set[str]:
    """Fields whose value differs from the dataclass default (what ``--quick`` must not override)."""
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
    args = dataclasses.replace(args)
    if args.config and not args._config_applied:
        apply_overrides(args, load_yaml_config(args.config), explicit_fields(args))
    if args.quick:
        apply_overrides(args, quick_overrides, explicit_fields(args))
    return args


def to_flat_dict(obj) -> dict:
    """Tracker-friendly config: scalars as is, lists/None as strings."""
    out = {}
    for k, v in dataclasses.asdict(obj).items():
        out[k] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out
