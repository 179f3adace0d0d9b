"""The hf_* backends inside transformers' own model classes: right in every family, or a clear error.

Tiny random configurations of transformers' Llama, Mistral (a window on every layer), Qwen2 (`max_window_layers`:
windows on some layers), Gemma, Gemma2 (logit soft-capping and alternating windows), gpt-oss (attention sinks and
alternating windows), ModernBERT (`local_attention` on some layers) and BERT, the same weights under each backend,
batch 2 with padding, against transformers' own eager attention of the model:

- settings that make each backend compute the model's own function (hf_local: the model's window, or one
  covering the sequence where the model has none; hf_topk: k above the sequence length, so top-k keeps every key
  of the layer's window) give the same logits on the real tokens, the same greedy continuation with the KV cache
  (decoders) and the same gradients of every parameter;
- hf_linear computes a different function: where the model has nothing it cannot honour it equals its own
  reference, elsewhere it raises `UnsupportedFeatureError` naming the feature;
- every keyword any installed transformers model hands an attention function is one this file has classified
  (`KNOWN_KWARGS`), and every keyword the families here pass at run time too: a model family with a feature
  keyword not seen before fails here, loudly, instead of passing silently.
"""

from __future__ import annotations

import ast
import copy
import pathlib

import pytest
import torch
import transformers
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface

import hf_attn  # noqa: F401  (registers the backends)
from hf_attn.attention import BACKENDS
from hf_attn.attention._common import UNSUPPORTED_KWARGS, UnsupportedFeatureError

T = 12  # prompt length (batch entry 1 is padded by 3)
NEW_TOKENS = 5
WINDOW = 4  # < T: windows matter
BIG = 64  # a window / k that covers every sequence here

# Every keyword transformers' models pass to an attention function, and what the hf_* backends do with it.
KNOWN_KWARGS = {
    # the call itself
    "scaling": "honoured", "dropout": "honoured", "is_causal": "honoured", "attention_mask": "honoured",
    "query": "honoured", "key": "honoured", "value": "honoured",
    # model features (hf_attn.attention._common.layer_features; which backend honours which: BACKENDS)
    "sliding_window": "feature", "softcap": "feature", "s_aux": "feature", "position_bias": "feature",
    # plumbing for other kernels (flash-attention's varlen lengths, its determinism switch), nothing to compute;
    # the varlen boundaries themselves (cu_seq_lens_*) are refused (UNSUPPORTED_KWARGS)
    "max_length_q": "ignored", "max_length_k": "ignored", "deterministic": "ignored", "position_ids": "ignored",
    "output_attentions": "warned",  # as transformers' sdpa: said once, no weights
    **{name: "refused" for name in UNSUPPORTED_KWARGS},
}
# What every model forwards from its caller (transformers' TransformersKwargs), seen at run time only.
CALLER_KWARGS = {"position_ids", "cache_position", "output_attentions", "output_hidden_states", "use_cache",
                 "return_dict", "cache", "past_key_values", "logits_to_keep", "token_type_ids", "output_router_logits",
                 "encoder_hidden_states"}


def _tiny(**fields) -> dict:
    return dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=128, **fields)


def _gpt_oss_sinks(model) -> None:
    with torch.no_grad():  # sinks large enough to matter
        for name, p in model.named_parameters():
            if name.endswith("sinks"):
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(3)) * 2)


# family: (config class, config fields, model class, decoder?, features it has, post-init)
FAMILIES = {
    "llama": ("LlamaConfig", _tiny(), "LlamaForCausalLM", True, set(), None),
    "mistral": ("MistralConfig", _tiny(sliding_window=WINDOW), "MistralForCausalLM", True, {"window"}, None),
    "qwen2": ("Qwen2Config", _tiny(use_sliding_window=True, sliding_window=WINDOW, max_window_layers=1),
              "Qwen2ForCausalLM", True, {"layer_windows"}, None),
    "gemma": ("GemmaConfig", _tiny(head_dim=8), "GemmaForCausalLM", True, set(), None),
    "gemma2": ("Gemma2Config", _tiny(head_dim=8, sliding_window=WINDOW, attn_logit_softcapping=0.5,
                                     query_pre_attn_scalar=8), "Gemma2ForCausalLM", True,
               {"layer_windows", "softcap"}, None),
    "gpt_oss": ("GptOssConfig", _tiny(head_dim=8, sliding_window=WINDOW, num_local_experts=2,
                                      num_experts_per_tok=1), "GptOssForCausalLM", True,
                {"layer_windows", "sinks"}, _gpt_oss_sinks),
    "modernbert": ("ModernBertConfig", dict(vocab_size=64, hidden_size=32, intermediate_size=48,
                                            num_hidden_layers=2, num_attention_heads=4, local_attention=2 * WINDOW,
                                            global_attn_every_n_layers=2, pad_token_id=0, max_position_embeddings=128),
                   "ModernBertForMaskedLM", False, {"layer_windows"}, None),
    "bert": ("BertConfig", dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                num_attention_heads=4, max_position_embeddings=128), "BertForMaskedLM", False,
             set(), None),
}
FEATURE_OF_FAMILY = {name: spec[4] for name, spec in FAMILIES.items()}


def build(family: str, **overrides):
    config_cls, fields, model_cls, _, _, post = FAMILIES[family]
    torch.manual_seed(0)
    config = getattr(transformers, config_cls)(**{**fields, **overrides})
    model = getattr(transformers, model_cls)(config).eval()
    if post is not None:
        post(model)
    model.set_attn_implementation("eager")
    return model


def inputs():
    """Batch 2: entry 1 left-padded by 3 (decoders generate from the left edge; encoders do not mind)."""
    ids = torch.randint(1, 64, (2, T), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, T, dtype=torch.long)
    mask[1, :3] = 0
    ids[1, :3] = 0
    return ids, mask


def on(model, impl: str, **config):
    """A copy of `model` (its own config object: transformers reads `_attn_implementation` at run time) on `impl`,
    with extra config settings for the backend."""
    other = copy.deepcopy(model)
    for name, value in config.items():
        setattr(other.config, name, value)
    other.set_attn_implementation(impl)
    assert other.config._attn_implementation == impl
    return other


def logits_and_grads(model, ids, mask):
    """Logits on the real tokens and the gradient of every parameter of a loss on them."""
    model.zero_grad()
    logits = model(input_ids=ids, attention_mask=mask).logits
    real = logits * mask[..., None]
    weights = torch.randn(real.shape, generator=torch.Generator().manual_seed(2))
    (real * weights).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return real.detach(), grads


def exact_settings(family: str, impl: str) -> dict:
    """Config settings under which `impl` computes the model's own function (see the module docstring)."""
    if impl == "hf_local" and not FEATURE_OF_FAMILY[family] & {"window", "layer_windows"}:
        return {"sliding_window": BIG}  # a model without windows: hf_local's own window, covering everything
    if impl == "hf_topk":
        return {"attention_topk": BIG}
    return {}


EXACT_UNDER_SETTINGS = ["hf_blockwise", "hf_local", "hf_topk"]


@pytest.mark.parametrize("impl", EXACT_UNDER_SETTINGS)
@pytest.mark.parametrize("family", list(FAMILIES))
def test_backend_computes_the_models_function(family, impl):
    eager = build(family)
    ids, mask = inputs()
    ref_logits, ref_grads = logits_and_grads(eager, ids, mask)
    model = on(eager, impl, **exact_settings(family, impl))
    logits, grads = logits_and_grads(model, ids, mask)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=2e-5)
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("impl", EXACT_UNDER_SETTINGS)
@pytest.mark.parametrize("family", [f for f, spec in FAMILIES.items() if spec[3]])
def test_greedy_generation_with_the_kv_cache_is_eagers(family, impl):
    eager = build(family)
    ids, mask = inputs()
    kwargs = dict(attention_mask=mask, max_new_tokens=NEW_TOKENS, do_sample=False, use_cache=True, pad_token_id=0)
    with torch.no_grad():
        want = eager.generate(ids, **kwargs)
        got = on(eager, impl, **exact_settings(family, impl)).generate(ids, **kwargs)
    assert torch.equal(got, want)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_hf_linear_equals_its_reference_or_refuses(family):
    eager = build(family)
    ids, mask = inputs()
    features = FEATURE_OF_FAMILY[family]
    model = on(eager, "hf_linear")
    if features:
        with pytest.raises(UnsupportedFeatureError, match="hf_linear") as err:
            model(input_ids=ids, attention_mask=mask)
        names = {"window": "window", "layer_windows": "window", "softcap": "softcap", "sinks": "sinks"}
        assert any(names[f] in str(err.value) for f in features)
        assert "hf_blockwise" in str(err.value)  # it names the backends that honour the feature
        return
    name = "reference_of_hf_linear"
    AttentionInterface.register(name, BACKENDS["hf_linear"].reference)
    AttentionMaskInterface.register(name, AttentionMaskInterface()["hf_linear"])
    fast, fast_grads = logits_and_grads(model, ids, mask)
    ref, ref_grads = logits_and_grads(on(eager, name), ids, mask)
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=2e-5)
    for n in ref_grads:
        torch.testing.assert_close(fast_grads[n], ref_grads[n], rtol=1e-4, atol=1e-5, msg=n)
    assert (fast - logits_and_grads(eager, ids, mask)[0]).abs().max() > 1e-5  # a different function from eager


@pytest.mark.parametrize("family", [f for f, features in FEATURE_OF_FAMILY.items() if features])
def test_the_features_matter_here(family):
    """Each family's features change its output at these sizes (so the tests above could fail): the same weights
    with the window opened, soft-capping off and the sinks at -inf give different logits."""
    eager = build(family)
    ids, mask = inputs()
    ref = logits_and_grads(eager, ids, mask)[0]
    plain = copy.deepcopy(eager)
    if getattr(plain.config, "sliding_window", None) is not None:  # the masks are built from the config
        plain.config.sliding_window = BIG
    for module in plain.modules():
        if getattr(module, "sliding_window", None) is not None:
            module.sliding_window = BIG
        if getattr(module, "attn_logit_softcapping", None) is not None:
            module.attn_logit_softcapping = None
        if hasattr(module, "sinks") and isinstance(module.sinks, torch.nn.Parameter):
            module.sinks.data.fill_(-1e4)
    plain.config.attn_logit_softcapping = None
    assert (logits_and_grads(plain, ids, mask)[0] - ref).abs().max() > 1e-4


def test_every_keyword_transformers_passes_is_known():
    """Static: the keywords of every `attention_interface(...)` call in the installed transformers' models."""
    root = pathlib.Path(transformers.__file__).parent / "models"
    unknown: dict[str, set[str]] = {}
    for path in root.glob("*/modeling_*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "attention_interface":
                for kw in node.keywords:
                    if kw.arg is not None and kw.arg not in KNOWN_KWARGS:
                        unknown.setdefault(kw.arg, set()).add(path.parent.name)
    assert not unknown, (
        f"transformers models pass attention keywords no one has classified: {unknown}. Decide for each whether "
        "the hf_* backends honour it, may ignore it, or must refuse it (hf_attn/attention/_common.py), then add "
        "it to KNOWN_KWARGS and the family to FAMILIES."
    )


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_keyword_a_family_passes_at_run_time_is_known(family):
    seen: set[str] = set()
    name = "hf_attn_keyword_spy"

    def spy(module, query, key, value, attention_mask, **kwargs):
        seen.update(kwargs)
        return BACKENDS["hf_blockwise"].forward(module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register(name, spy)
    AttentionMaskInterface.register(name, AttentionMaskInterface()["hf_blockwise"])
    ids, mask = inputs()
    with torch.no_grad():
        on(build(family), name)(input_ids=ids, attention_mask=mask)
    assert seen, "the spy never ran"
    assert not seen - set(KNOWN_KWARGS) - CALLER_KWARGS, f"{family} passes unknown keywords"


def test_output_attentions_warns_as_sdpa_does(caplog):
    """`output_attentions=True` is said once (transformers' sdpa behaviour), never an empty tuple in silence."""
    from transformers.utils import logging

    model = on(build("llama"), "hf_blockwise")
    ids, mask = inputs()
    logging.enable_propagation()
    try:
        with caplog.at_level("WARNING"), torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask, output_attentions=True)
    finally:
        logging.disable_propagation()
    assert "does not support `output_attentions=True`" in caplog.text and "hf_blockwise" in caplog.text
    assert not out.attentions  # as sdpa: no weights


def test_refused_keywords_raise_naming_the_feature():
    q = k = v = torch.zeros(1, 2, 3, 4)
    for entry in BACKENDS.values():
        for kw in UNSUPPORTED_KWARGS:
            with pytest.raises(UnsupportedFeatureError, match=kw):
                entry.forward(None, q, k, v, None, **{kw: torch.zeros(1)})
