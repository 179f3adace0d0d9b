"""One clear error for every bad configuration field and every bad input, in all three models.

The checks live once: `config_checks` (fields, RoPE, the length limit) and `input_checks.check_model_inputs` (ids,
masks, shapes), shared by TAN, GQAEmbedder and AdaptiveSpanGPT.
"""

from __future__ import annotations

import logging

import pytest
import torch
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.utils import logging as transformers_logging

import hf_attn  # noqa: F401  (registers hf_blockwise)
from hf_attn import registry
from hf_attn.modeling.rotary import RotaryEmbedding

COMMON = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
              max_position_embeddings=32)
CONFIGS = {  # the fields of each registry entry's tiny config (beside COMMON); test_export and the remote-code test
    "tan": dict(vocab_size=50, intermediate_size=16, chebyshev_degree=8),  # build their models here too
    "gqa_embedder": dict(vocab_size=50, intermediate_size=64, embedding_size=16),
    "adaptive_span_gpt": dict(vocab_size=50, position_embedding="rope"),
}
EPS = {"tan": "rms_norm_eps", "gqa_embedder": "rms_norm_eps", "adaptive_span_gpt": "layer_norm_epsilon"}


def make_config(kind, **overrides):
    return registry.get(kind).config_class(**{**COMMON, **CONFIGS[kind], **overrides})


def make_model(kind, attn="eager", **overrides):
    torch.manual_seed(0)
    config = make_config(kind, attn_implementation=attn, **overrides)
    return registry.get(kind).export_class(config).eval()


def rope(**params):
    return {"rope_type": "default", "rope_theta": 10000.0, **params}


@pytest.mark.parametrize("kind", list(CONFIGS))
@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(rope_parameters=rope(rope_theta=-1.0)), "rope_theta"),
        (dict(rope_parameters=rope(rope_theta=0.0)), "rope_theta"),
        (dict(rope_parameters=rope(rope_theta="10000")), "rope_theta.*string"),
        (dict(rope_parameters=rope(rope_type="yarn", factor=1e9, original_max_position_embeddings=32)), "factor"),
        (dict(rope_parameters=rope(rope_type="bogus")), "Unknown.*rope_type.*bogus"),
        (dict(rope_parameters=rope(rope_type="dynamic")), "dynamic RoPE needs .*factor"),
        (dict(rope_parameters=rope(rope_type="yarn", factor=2.0, original_max_position_embeddings="16")),
         "original_max_position_embeddings.*string"),
        (dict(rope_parameters=rope(partial_rotary_factor=0.0)), "partial_rotary_factor"),
        (dict(rope_parameters=rope(partial_rotary_factor=1.5)), "partial_rotary_factor"),
        (dict(rope_parameters=rope(partial_rotary_factor=0.1)), "no position would reach attention"),
        (dict(rope_parameters=rope(rope_type="longrope", short_factor=[1.0] * 3, long_factor=[2.0] * 4,
                                   original_max_position_embeddings=16)), "short_factor.*list of 4"),
        (dict(rope_parameters=rope(rope_type="llama3", factor=2.0, low_freq_factor=4.0, high_freq_factor=1.0,
                                   original_max_position_embeddings=16)), "low_freq_factor"),
        (dict(rope_parameters=rope(rope_type="llama3", factor=2.0, original_max_position_embeddings=16)),
         "low_freq_factor"),
        (dict(pad_token_id=50), "pad_token_id.*vocab_size=50"),
        (dict(pad_token_id=-1), "pad_token_id"),
        (dict(attention_dropout=1.5), "attention_dropout"),
        (dict(attention_dropout=-0.1), "attention_dropout"),
        (dict(initializer_range=-0.02), "initializer_range"),
        (dict(hidden_size="32"), "hidden_size"),
        (dict(num_hidden_layers=0), "num_hidden_layers"),
    ],
)
def test_bad_config_fields_raise_one_value_error_naming_the_field(kind, overrides, match):
    with pytest.raises(ValueError, match=match):
        make_config(kind, **overrides)


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_one_validation_hook_runs_at_construction_and_at_save(kind, tmp_path):
    """Every check of a configuration's own fields lives in `validate_architecture` (transformers' hook name);
    `__post_init__` runs it, and so does transformers' `validate()`, which `save_pretrained` calls."""
    config = make_config(kind)
    config.validate()
    config.num_hidden_layers = 0  # fields set after construction are checked when saving
    with pytest.raises(ValueError, match="num_hidden_layers"):
        config.validate()
    with pytest.raises(ValueError, match="num_hidden_layers"):
        config.save_pretrained(tmp_path)


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_bad_epsilon(kind):
    for value in (0.0, -1e-5, "1e-5"):
        with pytest.raises(ValueError, match=EPS[kind]):
            make_config(kind, **{EPS[kind]: value})


def test_bad_adaptive_span_fields():
    for field, value in (("span_reg", -1.0), ("triangle_wave_reg", -1.0), ("dropout", 1.0), ("span_reg", "4e-6")):
        with pytest.raises(ValueError, match=field):
            make_config("adaptive_span_gpt", **{field: value})


def test_configurations_without_rope_carry_no_rope_parameters():
    for position in ("learned", "sinusoidal", "alibi"):
        config = make_config("adaptive_span_gpt", position_embedding=position)
        assert config.rope_parameters is None
        assert "rope_theta" not in str(config.to_dict().get("rope_parameters"))
    # a config saved before the rule (the default dict) still loads, without them
    legacy = make_config("adaptive_span_gpt", position_embedding="learned", rope_parameters=rope())
    assert legacy.rope_parameters is None
    with pytest.raises(ValueError, match="uses no RoPE"):
        make_config("adaptive_span_gpt", position_embedding="learned", rope_parameters=rope(rope_theta=500.0))
    assert make_config("adaptive_span_gpt").rope_parameters["rope_type"] == "default"


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_rotary_embedding_builds_from_the_config_alone(kind):
    yarn = make_config(kind, rope_parameters=rope(rope_type="yarn", factor=4.0, original_max_position_embeddings=32))
    rotary = RotaryEmbedding(config=yarn)
    expected, scaling = ROPE_INIT_FUNCTIONS["yarn"](yarn, None)
    torch.testing.assert_close(rotary.inv_freq, expected)
    assert rotary.attention_scaling == pytest.approx(scaling) and rotary.inv_freq.shape == (4,)  # head_dim 8
    plain = RotaryEmbedding(config=make_config(kind))
    torch.testing.assert_close(plain.inv_freq, 1.0 / 10000.0 ** (torch.arange(0, 8, 2).float() / 8))
    cos, sin = plain(torch.zeros(1, 3, 8), torch.arange(3)[None])
    assert cos.shape == sin.shape == (1, 3, 8)


@pytest.mark.parametrize("kind", list(CONFIGS))
@pytest.mark.parametrize("scaling, context", [("default", 32), ("linear", 64), ("yarn", 128), ("dynamic", 64)])
def test_rope_models_run_past_the_context_their_scaling_covers_with_a_warning(kind, scaling, context, caplog):
    """As transformers' RoPE models (Llama runs any length): no hard limit, `max_sequence_length` follows the scaling
    factor, and an input longer than it runs with one warning naming the scaling."""
    params = {"default": rope(), "linear": rope(rope_type="linear", factor=2.0),
              "dynamic": rope(rope_type="dynamic", factor=2.0),
              "yarn": rope(rope_type="yarn", factor=4.0, original_max_position_embeddings=32)}[scaling]
    model = make_model(kind, rope_parameters=params)
    assert model.config.max_sequence_length == context
    transformers_logging.warning_once.cache_clear()  # the message may have been shown once already in this process
    with torch.no_grad(), caplog.at_level("WARNING"):
        model(torch.ones(1, context, dtype=torch.long))
        assert "RoPE covers" not in caplog.text
        out = model(torch.ones(1, context + 3, dtype=torch.long))
    assert torch.isfinite(out[0]).all() and out[0].shape[1] == context + 3
    assert f"an input longer than the {context} tokens its RoPE covers" in caplog.text
    assert (scaling if scaling != "default" else "max_position_embeddings=32") in caplog.text


@pytest.mark.parametrize("position_embedding", ["learned", "sinusoidal"])
def test_a_position_table_is_a_hard_limit(position_embedding):
    model = make_model("adaptive_span_gpt", position_embedding=position_embedding)
    model(torch.ones(1, 32, dtype=torch.long))
    with pytest.raises(ValueError, match="limit of 32 tokens"):
        model(torch.ones(1, 33, dtype=torch.long))
    with pytest.raises(ValueError, match=r"position_ids must lie in \[0, 32\)"):
        model(torch.ones(1, 2, dtype=torch.long), position_ids=torch.tensor([[0, 32]]))


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_bad_input_ids(kind):
    model = make_model(kind)
    with pytest.raises(TypeError, match="integer token ids.*long"):
        model(torch.ones(1, 5))  # float ids
    with pytest.raises(ValueError, match=r"add a batch dimension"):
        model(torch.ones(5, dtype=torch.long))  # 1-D
    with pytest.raises(ValueError, match="Empty batch"):
        model(torch.ones(0, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="Zero-length input"):
        model(torch.ones(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match=r"vocab_size=50"):
        model(torch.tensor([[1, 50]]))


@pytest.mark.parametrize("kind", list(CONFIGS))
@pytest.mark.parametrize("attn", ["eager", "sdpa", "hf_blockwise"])
def test_wrong_masks_raise_on_every_backend(kind, attn):
    model = make_model(kind, attn=attn)
    ids = torch.ones(2, 6, dtype=torch.long)
    for mask, match in (
        (torch.ones(2, 5, dtype=torch.long), r"\[2, 6\]"),  # too short
        (torch.ones(2, 7, dtype=torch.long), r"\[2, 6\]"),  # too long
        (torch.ones(3, 6, dtype=torch.long), r"\[2, 6\]"),  # wrong batch
        (-torch.ones(2, 6, dtype=torch.long), "only 1 .* and 0"),
        (torch.full((2, 6), 2.0), "only 1 .* and 0"),
        (torch.ones(2, 1, 6), "shape"),
    ):
        with pytest.raises(ValueError, match=match):
            model(ids, attention_mask=mask)
    with torch.no_grad():  # bool and float 0/1 masks are fine
        model(ids, attention_mask=torch.ones(2, 6, dtype=torch.bool))
        model(ids, attention_mask=torch.ones(2, 6))


def test_lm_mask_must_cover_the_cached_tokens():
    model = make_model("adaptive_span_gpt")
    ids = torch.ones(1, 6, dtype=torch.long)
    with torch.no_grad():
        cache = model(ids[:, :4], use_cache=True).cache
        with pytest.raises(ValueError, match=r"cached 4 \+ new 2"):
            model(ids[:, 4:], cache=cache, attention_mask=torch.ones(1, 2, dtype=torch.long))
        model(ids[:, 4:], cache=cache, attention_mask=torch.ones(1, 6, dtype=torch.long))


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_inputs_of_the_wrong_type_name_the_argument(kind):
    model = make_model(kind)
    ids = torch.ones(2, 6, dtype=torch.long)
    with pytest.raises(TypeError, match=r"`attention_mask` must be a torch.Tensor .* got list"):
        model(ids, attention_mask=[[1] * 6, [1] * 6])
    with pytest.raises(TypeError, match=r"`inputs_embeds` has dtype torch.float16 .* weights are torch.float32"):
        model(inputs_embeds=torch.zeros(2, 6, 32, dtype=torch.float16))
    with pytest.raises(TypeError, match=r"`inputs_embeds` must be floating point"):
        model(inputs_embeds=torch.zeros(2, 6, 32, dtype=torch.long))
    with pytest.raises(TypeError, match=r"`inputs_embeds` must be a torch.Tensor"):
        model(inputs_embeds=[[0.0] * 32])
    for position_ids in (torch.arange(6), torch.arange(7)[None], torch.arange(6)[None].expand(3, 6)):
        with pytest.raises(ValueError, match=r"`position_ids` must be \[batch \(=2\) or 1, seq_len \(=6\)\]"):
            model(ids, position_ids=position_ids)
    with pytest.raises(TypeError, match=r"`position_ids` must hold integer positions"):
        model(ids, position_ids=torch.zeros(1, 6))
    with torch.no_grad():  # the accepted forms give the same output: [1, T] and [B, T] positions; autocast
        ref = model(ids)[0]
        for position_ids in (torch.arange(6)[None], torch.arange(6)[None].expand(2, 6)):
            torch.testing.assert_close(model(ids, position_ids=position_ids)[0], ref, rtol=0, atol=0)
        embeds = torch.randn(2, 6, 32, generator=torch.Generator().manual_seed(0))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.isfinite(model(inputs_embeds=embeds.bfloat16())[0]).all()


def test_lm_labels_outside_the_vocabulary_name_the_fix():
    model = make_model("adaptive_span_gpt")
    ids = torch.ones(2, 6, dtype=torch.long)
    for bad in (50, -5):
        labels = ids.clone()
        labels[1, 3] = bad
        with pytest.raises(ValueError, match=rf"`labels` must be token ids in \[0, vocab_size=50\) or -100 .* {bad}"):
            model(ids, labels=labels)
    with pytest.raises(ValueError, match=r"shape of the input, \[batch, seq_len\] = \[2, 6\], got \(2, 5\)"):
        model(ids, labels=ids[:, :5])
    with pytest.raises(TypeError, match="integer token ids"):
        model(ids, labels=ids.float())
    labels = ids.clone()
    labels[:, :2] = -100  # ignored positions are fine, and ignored
    loss = model(ids, labels=labels).loss
    logits = model(ids).logits
    expected = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 50), labels[:, 1:].reshape(-1))
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_loading_nan_weights_names_the_parameter(kind, tmp_path):
    model = make_model(kind)
    name, param = next((n, p) for n, p in model.named_parameters() if p.dim() == 2)
    with torch.no_grad():
        param[0, 0] = float("nan")
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=rf"NaN or inf values in 1 parameter\(s\): {name}\. The checkpoint"):
        type(model).from_pretrained(tmp_path)
    with torch.no_grad():
        param[0, 0] = 0.0
    model.save_pretrained(tmp_path)
    loaded = type(model).from_pretrained(tmp_path)  # a finite model loads as before
    torch.testing.assert_close(dict(loaded.named_parameters())[name], param, rtol=0, atol=0)


def test_generating_past_the_rope_context_warns_once():
    model = make_model("adaptive_span_gpt", max_position_embeddings=8)
    transformers_logging.warning_once.cache_clear()
    prompt = torch.ones(1, 6, dtype=torch.long)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("hf_attn.modeling.input_checks")
    logger.addHandler(handler)
    try:
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6, do_sample=False,
                             pad_token_id=0)
    finally:
        logger.removeHandler(handler)
    assert out.shape == (1, 12)
    assert [r.getMessage() for r in records if "RoPE covers" in r.getMessage()] == [
        "AdaptiveSpanGPTModel: an input longer than the 8 tokens its RoPE covers (max_position_embeddings=8) runs, "
        "but the model was not made for that length: raise `rope_parameters['factor']` (or add a scaling such as "
        "YaRN) to cover it, or truncate the input."
    ]
