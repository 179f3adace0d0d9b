"""RoPE as transformers does it, in every model that has it (TAN, GQAEmbedder, AdaptiveSpanGPT with rope positions).

- every rope_type of the installed transformers (default, linear, dynamic, yarn, llama3, longrope, proportional)
  gives the same cos / sin as transformers' own `LlamaRotaryEmbedding` for the same parameters, dynamic NTK and
  longrope included past the trained length (their frequencies change in forward, through transformers'
  `dynamic_rope_update`);
- `partial_rotary_factor` rotates only the first features of each head, as GPT-NeoX does, in every model;
- the frequency buffers stay fp32 when a model is cast, so `.to(torch.bfloat16)` equals a bf16 load;
- a folder saved with the legacy config keys (`rope_scaling`, top-level `rope_theta` / `partial_rotary_factor`)
  loads with the same outputs;
- a legacy `config.rope_scaling` set after construction works as in transformers' common model tests.
"""

from __future__ import annotations

import json

import pytest
import torch
from transformers import LlamaConfig
from transformers.models.gpt_neox.modeling_gpt_neox import apply_rotary_pos_emb as neox_apply_rotary_pos_emb
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from hf_attn import registry
from hf_attn.modeling.rotary import RotaryEmbedding, apply_rotary_pos_emb

KINDS = ["tan", "gqa_embedder", "adaptive_span_gpt"]
COMMON = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
              max_position_embeddings=32, vocab_size=50, initializer_range=0.2)
EXTRA = {"tan": dict(intermediate_size=16, chebyshev_degree=8),
         "gqa_embedder": dict(intermediate_size=32, embedding_size=16),
         "adaptive_span_gpt": dict(position_embedding="rope")}
HEAD_DIM = 8
ROPE = {  # one set of parameters per rope_type; context = the length the scaling covers (max_sequence_length)
    "default": ({"rope_type": "default", "rope_theta": 500.0}, 32),
    "linear": ({"rope_type": "linear", "factor": 2.0}, 64),
    "dynamic": ({"rope_type": "dynamic", "factor": 2.0}, 64),
    "yarn": ({"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 16}, 32),
    "llama3": ({"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16, "rope_theta": 10000.0}, 64),
    "longrope": ({"rope_type": "longrope", "short_factor": [1.0, 1.1, 1.3, 1.5], "long_factor": [1.0, 2.0, 4.0, 8.0],
                  "original_max_position_embeddings": 16, "factor": 2.0}, 32),
    # Gemma's: the first half of the frequencies rotate, the rest are zero (those features pass through)
    "proportional": ({"rope_type": "proportional", "partial_rotary_factor": 0.5, "rope_theta": 10000.0}, 32),
}


def make_config(kind, **overrides):
    return registry.get(kind).config_class(**{**COMMON, **EXTRA[kind], **overrides})


def make_model(kind, **overrides):
    torch.manual_seed(0)
    model = registry.get(kind).export_class(make_config(kind, **overrides)).eval()
    with torch.no_grad():  # noise on the (often constant) 1-D weights, so every parameter shapes the output
        g = torch.Generator().manual_seed(1)
        for _, p in sorted(model.named_parameters()):
            if p.dim() <= 1:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model


def first_output(out) -> torch.Tensor:
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def llama_rotary(params) -> LlamaRotaryEmbedding:
    config = LlamaConfig(hidden_size=32, num_attention_heads=4, head_dim=HEAD_DIM, max_position_embeddings=32,
                         rope_parameters=dict(params))
    return LlamaRotaryEmbedding(config)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("rope_type", list(ROPE))
def test_cos_sin_equal_transformers_llama_rotary_embedding_for_every_rope_type(kind, rope_type):
    """Same frequencies and attention scaling as transformers' own model, within and past the trained length
    (dynamic NTK grows its base past 32 positions and goes back for short inputs; longrope switches factors past
    16), one module reused across the calls as in generation."""
    params, context = ROPE[rope_type]
    ours = RotaryEmbedding(make_config(kind, rope_parameters=dict(params)))
    theirs = llama_rotary(params)
    assert ours.rope_type == theirs.rope_type == rope_type
    x = torch.zeros(1, 1, HEAD_DIM)
    for length in (8, 100, 8):
        positions = torch.arange(length)[None]
        for a, b in zip(ours(x, positions), theirs(x, positions), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert make_config(kind, rope_parameters=dict(params)).max_sequence_length == context


def test_dynamic_and_longrope_frequencies_follow_the_length():
    """The two types whose frequencies change in forward really change them (the comparison above could pass with
    two static tables)."""
    for rope_type, params in (("dynamic", ROPE["dynamic"][0]), ("longrope", ROPE["longrope"][0])):
        rotary = RotaryEmbedding(make_config("gqa_embedder", rope_parameters=dict(params)))
        x = torch.zeros(1, 1, HEAD_DIM)
        short = rotary(x, torch.arange(8)[None])[0]
        long = rotary(x, torch.arange(100)[None])[0][:, :8]
        assert not torch.allclose(short, long), rope_type
        torch.testing.assert_close(rotary(x, torch.arange(8)[None])[0], short, rtol=0, atol=0)  # and back


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("rope_type", list(ROPE))
def test_every_model_runs_every_rope_type_and_it_changes_the_output(kind, rope_type):
    params, context = ROPE[rope_type]
    ids = torch.randint(0, 50, (2, context + 4), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = first_output(make_model(kind, rope_parameters=dict(params))(ids))
        plain = first_output(make_model(kind)(ids))
    assert out.shape[:2] == (2, context + 4) and torch.isfinite(out).all()
    if rope_type != "longrope":  # longrope's short factors (1.0 first) are not all 1: still a change
        assert not torch.allclose(out, plain)


@pytest.mark.parametrize("kind", KINDS)
def test_partial_rotary_rotates_the_first_features_only(kind):
    """`partial_rotary_factor` 0.5 of an 8-wide head: 2 frequencies, features 4..7 pass through, as GPT-NeoX's
    `apply_rotary_pos_emb`; the legacy top-level keyword means the same; the model's output changes."""
    config = make_config(kind, rope_parameters={"rope_type": "default", "partial_rotary_factor": 0.5})
    rotary = RotaryEmbedding(config)
    torch.testing.assert_close(rotary.inv_freq, 1.0 / 10000.0 ** (torch.arange(0, 4, 2).float() / 4))
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 4, 5, HEAD_DIM, generator=g), torch.randn(2, 2, 5, HEAD_DIM, generator=g)
    cos, sin = rotary(q, torch.arange(5)[None].expand(2, 5))
    assert cos.shape == (2, 5, 4)
    rq, rk = apply_rotary_pos_emb(q, k, cos, sin)
    eq, ek = neox_apply_rotary_pos_emb(q, k, cos, sin)
    torch.testing.assert_close(rq, eq, rtol=0, atol=0)
    torch.testing.assert_close(rk, ek, rtol=0, atol=0)
    torch.testing.assert_close(rq[..., 4:], q[..., 4:], rtol=0, atol=0)
    assert not torch.allclose(rq[:, :, 1:, :4], q[:, :, 1:, :4])

    legacy = make_config(kind, partial_rotary_factor=0.5)
    assert legacy.rope_parameters["partial_rotary_factor"] == 0.5
    ids = torch.randint(0, 50, (1, 9), generator=g)
    with torch.no_grad():
        partial = first_output(make_model(kind, partial_rotary_factor=0.5)(ids))
        full = first_output(make_model(kind)(ids))
    assert torch.isfinite(partial).all() and not torch.allclose(partial, full)


@pytest.mark.parametrize("kind", KINDS)
def test_a_cast_model_keeps_fp32_frequencies_and_equals_a_bf16_load(kind, tmp_path):
    model = make_model(kind, rope_parameters=dict(ROPE["yarn"][0]))
    model.save_pretrained(tmp_path)
    cast = model.to(torch.bfloat16)
    rotary = cast.get_submodule("model.rotary_emb" if kind == "adaptive_span_gpt" else "rotary_emb")
    assert rotary.inv_freq.dtype == rotary.original_inv_freq.dtype == torch.float32
    assert cast.get_submodule("model.norm" if kind == "adaptive_span_gpt" else "norm").weight.dtype == torch.bfloat16
    loaded = type(model).from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    ids = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(first_output(cast(ids)), first_output(loaded(ids)), rtol=0, atol=0)
    cast.half()  # every cast, not only .to()
    assert rotary.inv_freq.dtype == torch.float32
    if kind == "tan":  # its token codes are constants too
        assert cast.embeddings.token_coordinates.dtype == torch.float32


LEGACY = {  # the keys a config.json written before transformers' `rope_parameters` carries, and what they mean now
    "yarn": ({"rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16},
              "rope_theta": 500.0},
             {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16, "rope_theta": 500.0}),
    "linear": ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}},
               {"rope_type": "linear", "factor": 2.0}),
    "partial": ({"rope_theta": 500.0, "partial_rotary_factor": 0.5},
                {"rope_type": "default", "rope_theta": 500.0, "partial_rotary_factor": 0.5}),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("legacy", list(LEGACY))
def test_a_folder_with_the_legacy_rope_keys_loads_with_the_same_outputs(kind, legacy, tmp_path):
    old_keys, params = LEGACY[legacy]
    model = make_model(kind, rope_parameters=dict(params))
    model.save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    config = json.loads(path.read_text())
    del config["rope_parameters"]
    path.write_text(json.dumps({**config, **old_keys}))
    loaded = type(model).from_pretrained(tmp_path).eval()
    assert loaded.config.rope_parameters["rope_type"] == params["rope_type"]
    ids = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(first_output(loaded(ids)), first_output(model(ids)), rtol=0, atol=0)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("scaling_type", ["linear", "dynamic", "yarn"])
def test_rope_scaling_set_on_the_config_as_transformers_common_tests_do(kind, scaling_type):
    """transformers' `test_model_rope_scaling_from_config`: the unscaled model runs 1.5 x max_position_embeddings;
    a legacy `config.rope_scaling = {"type": ..., "factor": 10.0}` set after construction takes effect; dynamic NTK
    leaves inputs shorter than max_position_embeddings unchanged and changes longer ones, the others change both."""
    config = make_config(kind)
    short = torch.randint(0, 50, (1, 10), generator=torch.Generator().manual_seed(0))
    long = torch.randint(0, 50, (1, 48), generator=torch.Generator().manual_seed(1))
    model_class = registry.get(kind).export_class
    torch.manual_seed(42)
    original = model_class(config).eval()
    with torch.no_grad(), pytest.warns(FutureWarning, match="rope_scaling"):
        original_short, original_long = first_output(original(short)), first_output(original(long))
        config.rope_scaling = {"type": scaling_type, "factor": 10.0}
    assert config.rope_parameters["rope_type"] == scaling_type
    torch.manual_seed(42)
    scaled = model_class(config).eval()
    with torch.no_grad():
        scaled_short, scaled_long = first_output(scaled(short)), first_output(scaled(long))
    if scaling_type == "dynamic":
        torch.testing.assert_close(scaled_short, original_short, rtol=1e-5, atol=1e-5)
    else:
        assert not torch.allclose(scaled_short, original_short, atol=1e-5)
    assert not torch.allclose(scaled_long, original_long, atol=1e-5)


_REMOTE_CHILD = """
import torch
from transformers import AutoModel
for folder in {folders!r}:
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    assert not type(model).__module__.startswith("hf_attn"), type(model).__module__
    with torch.no_grad():
        out = model(torch.load(folder + "/ids.pt"))
    torch.save(out[0], folder + "/remote.pt")
print("remote-ok")
"""


@pytest.mark.slow  # a fresh Python importing transformers: ~20 s on the shared 2-core CI machine
def test_remote_code_runs_dynamic_partial_and_longrope_without_hf_attn(tmp_path):
    """The rope utilities are transformers' own, so a folder loaded as remote code (no hf_attn) computes the same
    (the common suite's remote-code test covers YaRN in `make test`)."""
    from hf_attn.export_check import run_without_hf_attn

    cases = {
        "lm-dynamic-partial": ("adaptive_span_gpt", {"rope_parameters": {"rope_type": "dynamic", "factor": 2.0,
                                                                          "partial_rotary_factor": 0.5}}),
        "embedder-longrope": ("gqa_embedder", {"rope_parameters": dict(ROPE["longrope"][0])}),
    }
    ids = torch.randint(0, 50, (2, 40), generator=torch.Generator().manual_seed(0))  # past both trained lengths
    expected = {}
    for name, (kind, overrides) in cases.items():
        model = make_model(kind, **overrides)
        folder = tmp_path / name
        model.save_pretrained(folder)
        torch.save(ids, folder / "ids.pt")
        with torch.no_grad():
            expected[name] = model.base_model(ids)[0]
    proc = run_without_hf_attn(_REMOTE_CHILD.format(folders=[str(tmp_path / name) for name in cases]),
                               env={"OMP_NUM_THREADS": "1"})
    assert "remote-ok" in proc.stdout
    for name in cases:
        torch.testing.assert_close(torch.load(tmp_path / name / "remote.pt"), expected[name], rtol=1e-5, atol=1e-5)
