"""Saved folders of all three models run through remote code alone with transformers' deprecations as errors.

A deprecated call frozen into a saved modeling file (e.g. `create_causal_mask(past_key_values=...)`) warns on every
forward today and breaks when transformers removes the old name; here FutureWarning / DeprecationWarning raised
while loading and running the folder, or a transformers log line saying "deprecated", fail the test.
"""

from __future__ import annotations

import pytest
from conftest import run_without_hf_attn
from test_input_checks import make_model

import hf_attn  # noqa: F401


def save_all(root):
    for kind, folder in (("tan", "tan"), ("gqa_embedder", "gqa"), ("adaptive_span_gpt", "lm")):
        extra = dict(use_adaptive_attention=True, max_span=8, softness_span_mask=4.0) if folder == "lm" else {}
        make_model(kind, **extra).save_pretrained(root / folder)


@pytest.mark.slow
def test_saved_folders_use_no_deprecated_transformers_api(tmp_path):
    save_all(tmp_path)
    run_without_hf_attn(
        f"""
        import logging, warnings
        import torch
        from transformers import AutoModel, AutoModelForCausalLM
        from transformers.utils import logging as hf_logging

        said = []
        class Catch(logging.Handler):
            def emit(self, record):
                if "deprecat" in record.getMessage().lower():
                    said.append(record.getMessage())
        hf_logging.get_logger("transformers").addHandler(Catch())
        warnings.filterwarnings("error", category=FutureWarning)
        warnings.filterwarnings("error", category=DeprecationWarning, module="transformers")
        warnings.filterwarnings("error", category=DeprecationWarning, module="transformers_modules")

        root = {str(tmp_path)!r}
        ids = torch.randint(0, 50, (2, 10))
        mask = torch.ones_like(ids)
        mask[0, 7:] = 0
        for name in ("tan", "gqa"):
            for attn in ("eager", "sdpa"):
                model = AutoModel.from_pretrained(
                    f"{{root}}/{{name}}", trust_remote_code=True, attn_implementation=attn
                )
                assert "hf_attn" not in type(model).__module__
                with torch.no_grad():
                    assert model(input_ids=ids, attention_mask=mask).pooler_output.shape[0] == 2
        lm = AutoModelForCausalLM.from_pretrained(f"{{root}}/lm", trust_remote_code=True).eval()
        with torch.no_grad():
            out = lm(ids, attention_mask=mask, use_cache=True)
            assert out.cache is not None and out.logits.shape == (2, 10, 50)
            gen = lm.generate(ids, attention_mask=mask, max_new_tokens=4, do_sample=False, pad_token_id=0)
        assert gen.shape == (2, 14)
        assert not said, said
        print("ok")
        """,
        timeout=1200,  # three remote-code loads and a generate: slow only on a loaded machine
    )
