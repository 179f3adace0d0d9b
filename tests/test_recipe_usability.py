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
