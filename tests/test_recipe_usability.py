"""What a user of the recipes sees: --help with defaults and what --quick / --config set; no save-time noise."""

from __future__ import annotations

import logging

import pytest


@pytest.mark.parametrize("module, quick_name", [("lm.args", "LM_QUICK"), ("embed.args", "QUICK")])
def test_help_shows_defaults_and_what_quick_and_config_set(module, quick_name):
    import importlib

    mod = importlib.import_module(f"hf_attn.training.{module}")
    quick = getattr(mod, quick_name)
    parser = mod.build_arg_parser() if hasattr(mod, "build_arg_parser") else None
    if parser is None:
        from hf_attn.training.args import build_parser

        parser = build_parser(mod.LMTrainingArguments, "train_lm.py", "", quick)
    text = " ".join(parser.format_help().split())  # argparse wraps lines
    assert "(default: 1337)" in text or "(default: 42)" in text  # the seed's default
    assert "--config FILE.yaml sets defaults" in text
    for key, value in quick.items():
        assert f"{key}={value}" in text


def test_declared_tied_weights_are_not_reported_at_save(caplog):
    from accelerate.utils.other import clean_state_dict_for_safetensors

    from hf_attn.training.common import quiet_declared_tied_weights

    class Tied:
        _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    import torch
    from accelerate import PartialState

    PartialState(cpu=True)  # Accelerate's logger needs its state
    w = torch.zeros(4, 2)
    quiet_declared_tied_weights(Tied())
    with caplog.at_level(logging.WARNING, logger="accelerate.utils.other"):
        clean_state_dict_for_safetensors({"model.embed_tokens.weight": w, "lm_head.weight": w})
    assert "Removed shared tensor" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="accelerate.utils.other"):  # an undeclared share still warns
        clean_state_dict_for_safetensors({"a.weight": w, "b.weight": w})
    assert "Removed shared tensor {'b.weight'}" in caplog.text


def test_every_shipped_recipe_is_a_valid_config_of_its_recipe():
    """recipes/configs/*.yaml ship inside the package (hf_attn/recipes links to them) and each loads, every key an
    option of its recipe with a value of the right type; the --quick configs and the quickstart read them."""
    from pathlib import Path

    from hf_attn.quickstart import recipe
    from hf_attn.training.args import load_recipe, recipe_path
    from hf_attn.training.embed.args import QUICK, EmbedTrainingArguments
    from hf_attn.training.lm.args import LM_QUICK, LMTrainingArguments
    from hf_attn.training.lm.compare import CompareArguments

    shipped = sorted(p.stem for p in recipe_path("x").parent.glob("*.yaml"))
    assert {"distill_tan_cpu", "quickstart_distill", "quickstart_tiny", "train_embed_quick", "train_lm_quick",
            "compare_attention_quick"} <= set(shipped)
    repo = Path(__file__).resolve().parents[1] / "recipes" / "configs"
    for name in shipped:
        cls = (LMTrainingArguments if name.startswith("train_lm") else
               CompareArguments if name.startswith("compare") else EmbedTrainingArguments)
        values = load_recipe(name, cls)
        assert values and recipe_path(name).read_text() == (repo / f"{name}.yaml").read_text()  # one file
    assert QUICK == load_recipe("train_embed_quick", EmbedTrainingArguments) and QUICK["learning_rate"] == 1e-3
    assert LM_QUICK["max_bytes"] == 2_000_000
    assert recipe("quickstart_distill")["teacher"] == "all-MiniLM-L6-v2"
