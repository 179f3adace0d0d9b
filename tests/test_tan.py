"""TAN: config validation, the Chebyshev seam, backends, padding, checkpointing, save/load and remote code."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig

import hf_attn  # noqa: F401  (registers "tan" and the hf_* backends)
from hf_attn import TanConfig, TanModel
from hf_attn.modeling import modeling_tan
from hf_attn.modeling.modeling_tan import chebyshev_expand, chebyshev_project, chebyshev_project_reference

TINY = dict(
    vocab_size=100,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=16,
    chebyshev_degree=16,
    num_token_coordinates=4,
    max_position_embeddings=24,
    embedding_size=24,
)


def tiny_model(attn_implementation: str = "eager", seed: int = 0, **overrides) -> TanModel:
    torch.manual_seed(seed)
    config = TanConfig(**{**TINY, **overrides})
    model = TanModel(config).eval()
    model.set_attn_implementation(attn_implementation)
    return model


def padded_batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """ids [3, 12] and a mask with right padding (row 1), left padding (row 2) and none (row 0)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, TINY["vocab_size"], (3, 12), generator=g)
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[1, 7:] = 0
    mask[2, :4] = 0
    return ids, mask


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


def real_tokens(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return x[mask.bool()]


# ---------------------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields, name",
    [
        (dict(hidden_size=30, num_attention_heads=4), "hidden_size"),
        (dict(num_attention_heads=4, num_key_value_heads=3), "num_key_value_heads"),
        (dict(chebyshev_degree=0), "chebyshev_degree"),
        (dict(hidden_size=0), "hidden_size"),
        (dict(num_hidden_layers=-1), "num_hidden_layers"),
        (dict(vocab_size=0), "vocab_size"),
        (dict(max_position_embeddings=0), "max_position_embeddings"),
        (dict(intermediate_size=0), "intermediate_size"),
        (dict(embedding_size=-3), "embedding_size"),
        (dict(sliding_window=0), "sliding_window"),
        (dict(attention_topk=0), "attention_topk"),
    ],
)
def test_config_rejects_impossible_values(fields, name):
    with pytest.raises(ValueError, match=name):
        TanConfig(**{**TINY, **fields})


def test_config_defaults_and_auto_for_model():
    config = TanConfig()
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (256, 4, 4)
    assert config.num_key_value_heads == 4 and config.embedding_size == 256
    assert config.rope_parameters == {"rope_type": "default", "rope_theta": 10000.0}
    assert config.max_position_embeddings == 512

    built = AutoConfig.for_model("tan", **TINY)
    assert isinstance(built, TanConfig)
    assert all(getattr(built, k) == v for k, v in TINY.items())

    # transformers 5 folds `rope_theta` and a legacy `rope_scaling` into `rope_parameters`.
    legacy = TanConfig(**TINY, rope_theta=500.0, rope_scaling={"rope_type": "linear", "factor": 2.0})
    assert legacy.rope_parameters == {"rope_type": "linear", "factor": 2.0, "rope_theta": 500.0}
    assert legacy.rope_theta == 500.0
    assert TanConfig.from_dict(legacy.to_dict()).rope_parameters == legacy.rope_parameters


# ---------------------------------------------------------------------------------------------------------------
# Chebyshev seam
# ---------------------------------------------------------------------------------------------------------------


def test_chebyshev_expand_matches_closed_form_and_derivative():
    degree = 12
    u = torch.linspace(-0.999, 0.999, 301, dtype=torch.float64, requires_grad=True)
    basis = chebyshev_expand(u, degree)  # [N, K]
    assert basis.shape == (301, degree)
    theta = torch.arccos(u.detach())
    k = torch.arange(degree, dtype=torch.float64)
    torch.testing.assert_close(basis.detach(), torch.cos(k * theta[:, None]), rtol=1e-10, atol=1e-10)

    # dT_k/du = k U_{k-1}(u), with U_{k-1}(cos t) = sin(k t) / sin t.
    expected = k * torch.sin(k * theta[:, None]) / torch.sin(theta)[:, None]
    for j in range(degree):
        (grad,) = torch.autograd.grad(basis[:, j].sum(), u, retain_graph=True)
        torch.testing.assert_close(grad, expected[:, j], rtol=1e-8, atol=1e-8)

    assert torch.equal(chebyshev_expand(torch.tensor([0.3, -0.5]), 1), torch.ones(2, 1))
    with pytest.raises(ValueError, match="degree"):
        chebyshev_expand(u, 0)


@pytest.mark.parametrize("degree", [2, 3, 5, 100, 256])
def test_chebyshev_expand_high_degrees_stay_accurate_in_fp32(degree):
    u = torch.linspace(-0.999, 0.999, 257, dtype=torch.float64)
    closed_form = torch.cos(torch.arange(degree, dtype=torch.float64) * torch.arccos(u)[:, None])
    torch.testing.assert_close(chebyshev_expand(u, degree), closed_form, rtol=1e-9, atol=1e-9)
    # In fp32 the error (rounding of u, amplified by |dT_k/du| <= k^2) is that of the three-term recurrence:
    # the doubling steps add no instability.
    uf = u.float()
    terms = [torch.ones_like(uf), uf]
    for _ in range(2, degree):
        terms.append(2 * uf * terms[-1] - terms[-2])
    recurrence_error = (torch.stack(terms, -1)[:, :degree].double() - closed_form).abs().max()
    doubling_error = (chebyshev_expand(uf, degree).double() - closed_form).abs().max()
    assert doubling_error <= 2 * recurrence_error + 1e-7


@pytest.mark.parametrize("with_bias", [True, False])
def test_chebyshev_project_contract(with_bias):
    g = torch.Generator().manual_seed(0)
    n, hidden, degree = 9, 3, 7
    u = (torch.rand(n, generator=g, dtype=torch.float64) * 1.9 - 0.95).requires_grad_()
    weight = torch.randn(hidden, degree, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(hidden, generator=g, dtype=torch.float64, requires_grad=True) if with_bias else None
    want = chebyshev_expand(u, degree) @ weight.T + (bias if with_bias else 0)
    for fn in (chebyshev_project_reference, chebyshev_project):
        got = fn(u, weight, bias)
        assert got.shape == (n, hidden)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    inputs = (u, weight, bias) if with_bias else (u, weight)
    assert torch.autograd.gradcheck(chebyshev_project_reference, inputs, fast_mode=True)
    # The model goes through `chebyshev_project`; it must give the reference's gradients too.
    grads = torch.autograd.grad(chebyshev_project(u, weight, bias).square().sum(), inputs)
    want_grads = torch.autograd.grad(want.square().sum(), inputs)
    for a, b in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-8)


def test_fast_path_is_resolved_at_import():
    try:
        from hf_attn.kernels.chebyshev import chebyshev_project as fused
    except ImportError:
        fused = None
    assert modeling_tan._fused_chebyshev_project is fused


def test_fused_path_matches_the_reference_for_several_coordinates(monkeypatch):
    """The kernel dispatcher (here forced onto the Triton interpreter) sums one fused call per coordinate; values and
    gradients match the model's reference, which the dispatcher receives as an argument."""
    cheb = pytest.importorskip("hf_attn.kernels.chebyshev")
    if not cheb.HAS_TRITON:
        pytest.skip("triton is not installed")
    monkeypatch.setenv("HF_ATTN_FORCE_TRITON", "1")
    g = torch.Generator().manual_seed(0)
    u = (torch.rand(10, 3, generator=g) * 2 - 1).requires_grad_()
    weight = torch.randn(8, 3 * 5, generator=g, requires_grad=True)
    bias = torch.randn(8, generator=g, requires_grad=True)
    got = chebyshev_project(u, weight, bias)
    want = chebyshev_project_reference(u, weight, bias)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for a, b in zip(torch.autograd.grad(got.sum(), (u, weight, bias)),
                    torch.autograd.grad(want.sum(), (u, weight, bias)), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# Forward, padding, inputs
# ---------------------------------------------------------------------------------------------------------------


def test_forward_shapes_and_optional_outputs():
    model = tiny_model("eager")
    ids, mask = padded_batch()
    out = model(ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    assert out.last_hidden_state.shape == (3, 12, TINY["hidden_size"])
    assert out.pooler_output.shape == (3, TINY["embedding_size"])
    assert out.pooler_output.abs().max() < 1  # tanh
    # transformers' convention (`capture_outputs`): the embedding output, each block's output but the last, and
    # last the final output after the final norm, `last_hidden_state`.
    assert len(out.hidden_states) == TINY["num_hidden_layers"] + 1
    with torch.no_grad():
        torch.testing.assert_close(out.hidden_states[0], model.embeddings(ids))
    assert torch.equal(out.hidden_states[-1], out.last_hidden_state)
    assert len(out.attentions) == TINY["num_hidden_layers"]
    assert out.attentions[0].shape == (3, TINY["num_attention_heads"], 12, 12)
    # Padded keys get no attention.
    assert out.attentions[0][1, :, :, 7:].abs().max() == 0
    as_tuple = model(ids, attention_mask=mask, return_dict=False)
    assert torch.equal(as_tuple[0], out.last_hidden_state) and torch.equal(as_tuple[1], out.pooler_output)
    full = model(ids, attention_mask=mask, return_dict=False, output_hidden_states=True, output_attentions=True)
    assert len(full) == 4 and len(full[2]) == len(out.hidden_states) and len(full[3]) == len(out.attentions)


def test_bad_inputs_raise_value_errors_with_the_limit():
    model = tiny_model("eager")
    with pytest.raises(ValueError, match=r"vocab_size=100"):
        model(torch.tensor([[1, 2, 100]]))
    with pytest.raises(ValueError, match=r"\[0, 100\)"):
        model(torch.tensor([[-1, 2, 3]]))
    model(torch.full((1, 24), 99))  # the limits themselves are fine
    assert model.config.max_sequence_length == 24  # RoPE: longer inputs run with a warning (test_input_checks)


def test_embedding_computes_each_distinct_id_once_with_the_same_values_and_gradients():
    torch.manual_seed(3)
    emb = modeling_tan.TanChebyshevEmbedding(TanConfig(**TINY))
    torch.nn.init.normal_(emb.proj_weight, std=0.2)
    ids = torch.tensor([[5, 7, 5, 99], [0, 7, 7, 5]])
    out = emb(ids)
    # the per-token computation, written out
    u = emb.normalized_ids(ids).reshape(8, -1)  # [B * T, M]
    x = chebyshev_project_reference(u, emb.proj_weight, emb.proj_bias)
    expected = emb.norm(x + emb.mix(x)).reshape(2, 4, -1)
    torch.testing.assert_close(out, expected)
    g = torch.randn_like(out)
    grads = torch.autograd.grad((out * g).sum(), list(emb.parameters()))
    grads_expected = torch.autograd.grad((expected * g).sum(), list(emb.parameters()))
    for a, b in zip(grads, grads_expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)  # fp32 sums in another order


def test_inputs_embeds_path_matches_input_ids():
    model = tiny_model("eager")
    ids, mask = padded_batch()
    with torch.no_grad():
        from_ids = model(ids, attention_mask=mask).pooler_output
        from_embeds = model(inputs_embeds=model.embeddings(ids), attention_mask=mask).pooler_output
    torch.testing.assert_close(from_ids, from_embeds)
    assert model.get_input_embeddings() is model.embeddings
    with pytest.raises(ValueError, match="exactly one"):
        model()


# ---------------------------------------------------------------------------------------------------------------
# Attention backends
# ---------------------------------------------------------------------------------------------------------------


def _compare_with_eager(attn_implementation: str) -> None:
    model = tiny_model("eager")
    ids, mask = padded_batch()
    with torch.no_grad():
        ref = model(ids, attention_mask=mask)
        model.set_attn_implementation(attn_implementation)
        out = model(ids, attention_mask=mask)
    assert rel_err(out.pooler_output, ref.pooler_output) < 1e-4
    assert rel_err(real_tokens(out.last_hidden_state, mask), real_tokens(ref.last_hidden_state, mask)) < 1e-4


def test_hf_blockwise_is_selectable_everywhere_transformers_takes_a_name(tmp_path):
    # The exact flash-style backend is deliberately not named "*flash*": transformers routes any such name to its
    # flash-attention kernel loader. Selecting it must work at construction, on a built model and at load time.
    model = tiny_model("hf_blockwise")
    assert model.config._attn_implementation == "hf_blockwise"
    model.save_pretrained(tmp_path)
    loaded = TanModel.from_pretrained(tmp_path, attn_implementation="hf_blockwise")
    assert loaded.config._attn_implementation == "hf_blockwise"
    config = TanConfig(**TINY, attn_implementation="hf_blockwise")
    assert TanModel(config).config._attn_implementation == "hf_blockwise"


@pytest.mark.slow
def test_flex_attention_agrees_with_eager():
    """Slow on CPU: flex_attention compiles its kernel on first use (~30 s here) and has no CPU backward."""
    _compare_with_eager("flex_attention")


# ---------------------------------------------------------------------------------------------------------------
# Training, save/load, remote code
# ---------------------------------------------------------------------------------------------------------------


def test_default_parameter_count():
    model = TanModel(TanConfig())
    total = sum(p.numel() for p in model.parameters())
    by_part = {name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()}
    print(f"TAN default config: {total:,} parameters ({total / 1e6:.2f}M); by part: {by_part}")
    assert 0.5e6 < total < 2e6
    # No embedding table: the token features cost K * hidden + O(hidden^2 / 4), independent of vocab_size.
    assert TanModel(TanConfig(vocab_size=100)).num_parameters() == model.num_parameters()
    assert torch.equal(model.embeddings.input_scale, torch.full((64,), 2.0))


def test_token_codes():
    # "id": the original design, one coordinate = the id rescaled to [-1, 1]
    ids_code = modeling_tan.default_token_coordinates(11, "id", 1)
    torch.testing.assert_close(ids_code[:, 0], torch.linspace(-1, 1, 11))
    # "hashed": every token gets a distinct code; each coordinate is a permutation of the same 11 levels
    hashed = modeling_tan.default_token_coordinates(11, "hashed", 3)
    assert hashed.shape == (11, 3) and len({tuple(r.tolist()) for r in hashed}) == 11
    for j in range(3):
        torch.testing.assert_close(hashed[:, j].sort().values, torch.linspace(-1, 1, 11))
    assert not torch.equal(hashed[:, 0], hashed[:, 1])
    assert torch.equal(hashed, modeling_tan.default_token_coordinates(11, "hashed", 3))  # fixed, not random
    with pytest.raises(ValueError, match="num_token_coordinates=1"):
        TanConfig(token_code="id", num_token_coordinates=4)
    with pytest.raises(ValueError, match="token_code"):
        TanConfig(token_code="embedding")


def test_several_coordinates_project_as_a_sum_of_per_coordinate_projections():
    torch.manual_seed(0)
    u = torch.rand(5, 3) * 2 - 1
    w, b = torch.randn(4, 3 * 6), torch.randn(4)
    expected = b + sum(chebyshev_project_reference(u[:, j], w[:, j * 6:(j + 1) * 6]) for j in range(3))
    torch.testing.assert_close(chebyshev_project_reference(u, w, b), expected)


def test_set_token_coordinates_rescales_validates_and_survives_save_load(tmp_path):
    model = tiny_model("eager")
    v, m = model.embeddings.token_coordinates.shape
    coords = torch.randn(v, m) * 5
    model.set_token_coordinates(coords)
    assert model.config.token_code == "teacher"
    torch.testing.assert_close(model.embeddings.token_coordinates.abs().amax(0), torch.ones(m))
    torch.testing.assert_close(model.embeddings.token_coordinates, coords / coords.abs().amax(0))
    with pytest.raises(ValueError, match=r"\[vocab_size, num_token_coordinates\]"):
        model.set_token_coordinates(torch.randn(v, m + 1))
    with pytest.raises(ValueError, match="NaN"):
        model.set_token_coordinates(torch.full((v, m), float("nan")))
    model.save_pretrained(tmp_path)
    loaded = TanModel.from_pretrained(tmp_path)
    assert loaded.config.token_code == "teacher"
    assert torch.equal(loaded.embeddings.token_coordinates, model.embeddings.token_coordinates)
