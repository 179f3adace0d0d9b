"""The suite every registered model runs (in the spirit of transformers' tests/test_modeling_common.py).

Parametrised over `hf_attn.registry.MODELS` and each model type's tiny configurations (`TINY_CONFIGS` in
conftest.py), it checks values, not just shapes:

- exact attention backends (sdpa, hf_blockwise, and hf_local / hf_topk with a window / k covering the sequence)
  equal eager, forward and gradients of every parameter;
- approximate backends (hf_local with a short window, hf_linear, hf_topk with k < T) equal the same model run
  with the backend's dense reference function as its attention, forward and gradients, and differ from eager;
- activation (gradient) checkpointing recomputes the blocks and gives the same loss and gradients;
- save_pretrained / from_pretrained through the model class, AutoModel and the entry's Auto class: same
  weights, same config, identical outputs;
- a saved folder loads through remote code in a Python where `import hf_attn` fails, with the same outputs;
- per kind: an embedder's outputs (pooler_output normalised as the registry declares; left or right padding
  changes nothing; bidirectional), a causal LM's logits (causal; right padding changes nothing) and its loss
  (shifted cross-entropy, plus the span regulariser where the model has one).

Everything is seeded; tiny configs keep the module to seconds.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
import transformers
from conftest import TINY_CONFIGS, TINY_SEQ_LEN
from transformers import AttentionInterface, AutoConfig, AutoModel
from transformers.masking_utils import AttentionMaskInterface
from transformers.modeling_layers import GradientCheckpointingLayer

from hf_attn import registry
from hf_attn.attention import BACKENDS, UnsupportedFeatureError
from hf_attn.hub import run_without_hf_attn

CASES = [(model_type, variant) for model_type in registry.MODELS for variant in TINY_CONFIGS.get(model_type, {})]
CASE_IDS = [model_type if len(TINY_CONFIGS[model_type]) == 1 else f"{model_type}-{variant}"
            for model_type, variant in CASES]
T = TINY_SEQ_LEN
ATOL = RTOL = 1e-5  # fp32
GRAD_ATOL = 3e-5  # of the largest entry of a parameter's gradient (sums over many terms: looser than outputs)
OUTPUT_NAMES = ("logits", "last_hidden_state", "pooler_output")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread is the fastest, and two xdist workers on two cores do not oversubscribe."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def cases(test):
    """Parametrise `test` over every (model_type, variant)."""
    return pytest.mark.parametrize("case", CASES, ids=CASE_IDS)(test)


# ---------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------


def build(case, attn_implementation: str = "eager", **overrides):
    """The registry's export class (the LM head for a language model) on a tiny config, in eval mode.

    Seeded; every 1-D parameter (norm weights, biases, span / period / offset logits, TAN's token maps) gets seeded
    noise on top of its (often constant) initialisation, so that a weight that fails to load, or a head whose span
    does not reach the backend, changes the outputs.
    """
    model_type, variant = case
    entry = registry.get(model_type)
    torch.manual_seed(0)
    config = entry.config_class(**{**TINY_CONFIGS[model_type][variant], **overrides})
    model = entry.export_class(config)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            if p.dim() <= 1:
                p.add_(0.5 * torch.randn(p.shape, generator=g))
    model.set_attn_implementation(attn_implementation)
    assert model.config._attn_implementation == attn_implementation
    return model.eval()


def batch(config):
    """ids [3, T] and mask [3, T] (padding id 0): row 0 full, row 1 right-padded after 11 tokens, row 2 left-padded
    by 5 (a causal model's first queries there see no key at all)."""
    ids = torch.randint(1, config.vocab_size, (3, T), generator=torch.Generator().manual_seed(2))
    mask = torch.ones(3, T, dtype=torch.long)
    mask[1, 11:] = 0
    mask[2, :5] = 0
    return ids.masked_fill(mask == 0, 0), mask


def outputs(out, mask) -> dict[str, torch.Tensor]:
    """The outputs to compare, per-token ones at real tokens only.

    A padded query may see no key at all (a causal model's padding past a short span), and what such a row holds
    is backend-defined (eager and hf_* give zeros, sdpa does not); it never reaches a real token or a pooled vector.
    """
    got = {name: getattr(out, name) for name in OUTPUT_NAMES if getattr(out, name, None) is not None}
    assert got, type(out)
    return at_real_tokens(got, mask)


def at_real_tokens(got: dict[str, torch.Tensor], mask) -> dict[str, torch.Tensor]:
    """Per-token outputs [B, T, ...] cut to the real tokens; per-sequence ones as they are."""
    return {name: value[mask.bool()] if value.dim() == 3 else value for name, value in got.items()}


def probe_loss(got: dict[str, torch.Tensor]) -> torch.Tensor:
    """A scalar reading every output through a fixed random projection (all of it matters to the gradients)."""
    loss = 0.0
    for i, (_, value) in enumerate(sorted(got.items())):
        probe = torch.randn(value.shape, generator=torch.Generator().manual_seed(10 + i))
        loss = loss + (value * probe).sum()
    return loss


def forward_backward(model, ids, mask):
    """(outputs, gradients of `probe_loss` for every parameter), both detached."""
    model.zero_grad(set_to_none=True)
    got = outputs(model(input_ids=ids, attention_mask=mask), mask)
    probe_loss(got).backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in got.items()}, grads


def assert_same_function(fast, ref, rtol=RTOL, atol=ATOL, grad_atol=GRAD_ATOL):
    """Outputs and gradients equal within fp32 tolerance; the gradients exist and are not all zero."""
    (out_fast, grads_fast), (out_ref, grads_ref) = fast, ref
    for label, (out, grads) in (("fast", fast), ("reference", ref)):
        bad = [n for n, t in {**out, **grads}.items() if not torch.isfinite(t).all()]
        assert not bad, f"{label}: NaN/inf in {bad}"
    assert out_fast.keys() == out_ref.keys()
    for name in out_ref:
        torch.testing.assert_close(out_fast[name], out_ref[name], rtol=rtol, atol=atol,
                                   msg=lambda m, n=name: f"{n}: {m}")
    assert grads_fast.keys() == grads_ref.keys() and grads_ref
    assert any(g.abs().sum() > 0 for g in grads_ref.values())
    for name in grads_ref:
        # Relative to the size of the parameter's gradient: gradients range over orders of magnitude.
        scale = max(grads_ref[name].abs().max().item(), 1.0)
        torch.testing.assert_close(grads_fast[name], grads_ref[name], rtol=rtol, atol=grad_atol * scale,
                                   msg=lambda m, n=name: f"grad of {n}: {m}")


def max_diff(a: dict, b: dict) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


# Bugs found by this suite in code it does not own, as strict xfails: the test still runs, and starts failing
# (XPASS) once the bug is fixed, so that the entry is removed. (backend, model kind) -> what is wrong.
# ---------------------------------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------------------------------


def test_every_registry_entry_has_a_tiny_config(tiny_config):
    assert set(TINY_CONFIGS) == set(registry.MODELS), "add a tiny config to tests/conftest.py for each new model"
    for model_type, entry in registry.MODELS.items():
        assert TINY_CONFIGS[model_type], model_type
        assert type(tiny_config(model_type)) is entry.config_class
        assert tiny_config(model_type, num_hidden_layers=1).num_hidden_layers == 1
        assert entry.kind in ("embedder", "causal_lm"), entry.kind
        assert hasattr(transformers, entry.auto_class), entry.auto_class
        for fields in TINY_CONFIGS[model_type].values():
            assert fields["vocab_size"] <= 128 and fields["num_hidden_layers"] <= 2  # tiny stays tiny
            assert fields["max_position_embeddings"] >= T


# ---------------------------------------------------------------------------------------------------------------
# 1. Exact backends equal eager, forward and backward
# ---------------------------------------------------------------------------------------------------------------

# name: (attn_implementation, config overrides that make it exact)
EXACT_BACKENDS = {
    "sdpa": ("sdpa", {}),
    "hf_blockwise": ("hf_blockwise", {}),
    "hf_local_full_window": ("hf_local", {"sliding_window": T}),  # |i - j| < T: every key
    "hf_topk_all_keys": ("hf_topk", {"attention_topk": T}),
}


@cases
@pytest.mark.parametrize("backend", list(EXACT_BACKENDS))
def test_exact_backend_equals_eager(case, backend):
    name, overrides = EXACT_BACKENDS[backend]
    model = build(case, **overrides)
    ids, mask = batch(model.config)
    reference = forward_backward(model, ids, mask)
    model.set_attn_implementation(name)
    assert model.config._attn_implementation == name
    assert_same_function(forward_backward(model, ids, mask), reference)


# ---------------------------------------------------------------------------------------------------------------
# 2. Approximate backends equal their references
# ---------------------------------------------------------------------------------------------------------------

# name: config overrides that make it approximate (the dense reference comes from the backend table)
APPROXIMATE_BACKENDS = {
    "hf_local": {"sliding_window": 3},
    "hf_linear": {},
    "hf_topk": {"attention_topk": 3},
}


def test_the_backend_tables_here_follow_the_backend_table():
    assert set(APPROXIMATE_BACKENDS) == {name for name, e in BACKENDS.items() if not e.exact}
    assert {name for name, _ in EXACT_BACKENDS.values()} >= {name for name, e in BACKENDS.items() if e.exact}


def has_distance_bias(model) -> bool:
    """Whether the model's attention adds a distance bias (ALiBi, a span) that hf_linear cannot honour."""
    return any(m.distance_bias(T, torch.device("cpu"))[0] is not None
               for m in model.modules() if callable(getattr(m, "distance_bias", None)))
REFERENCE_CALLS: dict[str, int] = {}


def reference_backend(backend: str) -> str:
    """Register (once) an attention backend that runs `backend`'s dense reference function, and return its name.

    It gets what `backend` gets: the same mask function (a [B, Tk] key-padding mask) and, when the backend takes
    the distance-bias table itself, the table. Calls are counted in REFERENCE_CALLS.
    """
    name = f"reference_of_{backend}"
    if name not in AttentionInterface().valid_keys():
        reference = BACKENDS[backend].reference

        def attention(*args, **kwargs):
            REFERENCE_CALLS[name] = REFERENCE_CALLS.get(name, 0) + 1
            return reference(*args, **kwargs)

        attention.accepts_distance_bias = getattr(AttentionInterface()[backend], "accepts_distance_bias", False)
        AttentionInterface.register(name, attention)
        AttentionMaskInterface.register(name, AttentionMaskInterface()[backend])
    return name


@cases
@pytest.mark.parametrize("backend", list(APPROXIMATE_BACKENDS))
def test_approximate_backend_equals_its_reference(case, backend):
    model = build(case, **APPROXIMATE_BACKENDS[backend])
    ids, mask = batch(model.config)
    if backend == "hf_linear" and has_distance_bias(model):  # no logits to add it to: refused, by name
        model.set_attn_implementation(backend)
        with pytest.raises(UnsupportedFeatureError, match="distance_bias"):
            model(input_ids=ids, attention_mask=mask)
        return
    eager = forward_backward(model, ids, mask)

    reference_name = reference_backend(backend)
    model.set_attn_implementation(reference_name)
    calls = REFERENCE_CALLS.get(reference_name, 0)
    reference = forward_backward(model, ids, mask)
    assert REFERENCE_CALLS[reference_name] - calls == model.config.num_hidden_layers  # the reference really ran

    model.set_attn_implementation(backend)
    assert model.config._attn_implementation == backend
    fast = forward_backward(model, ids, mask)
    assert_same_function(fast, reference)
    # ... and it is a different function from softmax attention over every key (the setting reached the backend)
    assert max_diff(fast[0], eager[0]) > 1e-3


# ---------------------------------------------------------------------------------------------------------------
# 3. Gradient checkpointing
# ---------------------------------------------------------------------------------------------------------------


def training_loss(model, ids, mask):
    """The LM loss (labels = ids, padding ignored) or the probe loss of an embedder's outputs."""
    if registry.get(model.config.model_type).kind == "causal_lm":
        return model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss
    return probe_loss(outputs(model(input_ids=ids, attention_mask=mask), mask))


@cases
@pytest.mark.parametrize("method", ["gradient_checkpointing_enable", "activation_checkpointing_enable"])
def test_gradient_checkpointing_same_loss_and_gradients(case, method):
    model = build(case).train()
    ids, mask = batch(model.config)
    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    assert len(layers) == model.config.num_hidden_layers
    calls = []
    for layer in layers:  # the recomputation calls the block's forward, so count a module inside it
        next(layer.children()).register_forward_hook(lambda *_: calls.append(1))

    def run():
        model.zero_grad(set_to_none=True)
        calls.clear()
        loss = training_loss(model, ids, mask)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain_loss, plain = run()
    assert len(calls) == len(layers)
    with warnings.catch_warnings():  # transformers 5 deprecates the gradient_ spelling for the activation_ one
        warnings.simplefilter("ignore", FutureWarning)
        getattr(model, method)()
        assert model.is_gradient_checkpointing and model.training
    ckpt_loss, checkpointed = run()
    assert len(calls) == 2 * len(layers)  # every block ran again in the backward pass
    torch.testing.assert_close(ckpt_loss, plain_loss, rtol=0, atol=0)
    assert plain.keys() == checkpointed.keys() and any(g.abs().sum() > 0 for g in plain.values())
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=RTOL, atol=1e-7, msg=name)


# ---------------------------------------------------------------------------------------------------------------
# 4. save_pretrained / from_pretrained
# ---------------------------------------------------------------------------------------------------------------


def config_fields(config) -> dict:
    fields = config.to_dict()
    for key in ("transformers_version", "_name_or_path"):  # where and by which version it was saved
        fields.pop(key, None)
    return fields


@cases
def test_save_and_load_round_trip(case, tmp_path):
    model_type, _ = case
    entry = registry.get(model_type)
    model = build(case)
    ids, mask = batch(model.config)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert config_fields(AutoConfig.from_pretrained(tmp_path)) == config_fields(model.config)

    auto_class = getattr(transformers, entry.auto_class)
    with torch.no_grad():
        expected = outputs(model(input_ids=ids, attention_mask=mask), mask)
        expected_base = outputs(model.base_model(input_ids=ids, attention_mask=mask), mask)
    # (loader, the class it must build, the model it must reproduce)
    loaders = [(entry.export_class, entry.export_class, model), (auto_class, entry.export_class, model),
               (AutoModel, entry.model_class, model.base_model)]
    for loader, cls, source in loaders:
        loaded = loader.from_pretrained(tmp_path, attn_implementation="eager").eval()
        assert type(loaded) is cls, (loader, type(loaded))
        assert config_fields(loaded.config) == config_fields(model.config), loader
        state, source_state = loaded.state_dict(), source.state_dict()
        assert state.keys() == source_state.keys(), loader
        for key in state:
            assert torch.equal(state[key], source_state[key]), (loader, key)
        with torch.no_grad():
            got = outputs(loaded(input_ids=ids, attention_mask=mask), mask)
        want = expected if source is model else expected_base
        assert got.keys() == want.keys()
        for key in want:
            assert torch.equal(got[key], want[key]), (loader, key)


# ---------------------------------------------------------------------------------------------------------------
# 5. Remote code, in a Python without hf_attn
# ---------------------------------------------------------------------------------------------------------------

_REMOTE_CHILD = """
import sys, torch, transformers
from transformers import AutoConfig, AutoModel
jobs = torch.load({jobs!r})
results = {{}}
for job in jobs:
    config = AutoConfig.from_pretrained(job["folder"], trust_remote_code=True)
    assert type(config).__name__ == job["config_class"], type(config)
    got = {{"config": config.to_dict()}}
    for auto_name in job["auto_classes"]:
        model = getattr(transformers, auto_name).from_pretrained(job["folder"], trust_remote_code=True).eval()
        assert type(model).__name__ == job["auto_classes"][auto_name], (auto_name, type(model))
        assert not type(model).__module__.startswith("hf_attn"), type(model).__module__
        with torch.no_grad():
            out = model(input_ids=job["ids"], attention_mask=job["mask"])
        got[auto_name] = {{k: getattr(out, k) for k in job["outputs"] if getattr(out, k, None) is not None}}
    results[job["folder"]] = got
assert not any(name == "hf_attn" or name.startswith("hf_attn.") for name in sys.modules)
torch.save(results, {results!r})
print("remote-code-ok", len(results))
"""


def test_remote_code_loads_without_hf_attn(tmp_path):
    """Every case saved, then loaded in one fresh process (AutoModel and the entry's Auto class) with
    trust_remote_code and no hf_attn: same config, outputs equal to the source model's."""
    jobs, expected = [], {}
    for case in CASES:
        entry = registry.get(case[0])
        model = build(case)
        ids, mask = batch(model.config)
        folder = str(tmp_path / "-".join(case))
        model.save_pretrained(folder)
        # the Auto class of the export (the LM head for a language model) and AutoModel (the bare model)
        sources = {entry.auto_class: model, "AutoModel": model.base_model}
        with torch.no_grad():
            expected[folder] = {name: outputs(source(input_ids=ids, attention_mask=mask), mask)
                                for name, source in sources.items()}
        expected[folder].update(config=config_fields(model.config), mask=mask)
        jobs.append({"folder": folder, "ids": ids, "mask": mask, "config_class": entry.config_class.__name__,
                     "auto_classes": {name: type(source).__name__ for name, source in sources.items()},
                     "outputs": OUTPUT_NAMES})
    torch.save(jobs, tmp_path / "jobs.pt")
    proc = run_without_hf_attn(
        _REMOTE_CHILD.format(jobs=str(tmp_path / "jobs.pt"), results=str(tmp_path / "results.pt")), cwd=tmp_path,
        env={"OMP_NUM_THREADS": "1"},
    )
    assert f"remote-code-ok {len(CASES)}" in proc.stdout
    results = torch.load(tmp_path / "results.pt")
    assert results.keys() == expected.keys()
    for folder, want in expected.items():
        got = results[folder]
        fields = {k: v for k, v in got.pop("config").items() if k not in ("transformers_version", "_name_or_path")}
        assert fields == want.pop("config"), folder
        mask = want.pop("mask")
        assert got.keys() == want.keys(), folder
        for auto_name, want_outputs in want.items():
            got_outputs = at_real_tokens(got[auto_name], mask)
            assert got_outputs.keys() == want_outputs.keys(), (folder, auto_name)
            for key in want_outputs:
                torch.testing.assert_close(got_outputs[key], want_outputs[key], rtol=RTOL, atol=ATOL,
                                           msg=lambda m, f=folder, a=auto_name, k=key: f"{f} {a} {k}: {m}")


# ---------------------------------------------------------------------------------------------------------------
# 6. Behaviour per kind
# ---------------------------------------------------------------------------------------------------------------


@cases
def test_kind_contract(case):
    model_type, _ = case
    entry = registry.get(model_type)
    model = build(case)
    config = model.config
    ids, mask = batch(config)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask)

    if entry.kind == "embedder":
        pooled = out.pooler_output
        assert pooled.shape == (3, config.embedding_size)
        assert out.last_hidden_state.shape == (3, T, config.hidden_size)
        norms = pooled.norm(dim=-1)
        if entry.normalized_output:
            torch.testing.assert_close(norms, torch.ones(3), rtol=0, atol=1e-5)
        else:  # the registry says sentence-transformers must normalise: the vectors are not unit vectors already
            assert (norms - 1).abs().max() > 1e-3, norms
        # padding changes nothing: each row (right- or left-padded) as its real tokens alone
        for row in range(ids.shape[0]):
            keep = mask[row].bool()
            with torch.no_grad():
                alone = model(input_ids=ids[row, keep][None])
            torch.testing.assert_close(pooled[row], alone.pooler_output[0], rtol=RTOL, atol=ATOL)
            torch.testing.assert_close(out.last_hidden_state[row, keep], alone.last_hidden_state[0], rtol=RTOL,
                                       atol=ATOL)
        # bidirectional: the last token reaches the first position
        changed = ids.clone()
        changed[0, -1] = (changed[0, -1] % (config.vocab_size - 1)) + 1
        with torch.no_grad():
            first = model(input_ids=changed, attention_mask=mask).last_hidden_state[0, 0]
        assert (first - out.last_hidden_state[0, 0]).abs().max() > 1e-4
        return

    assert entry.kind == "causal_lm"
    assert out.logits.shape == (3, T, config.vocab_size)
    # right padding changes nothing at the real tokens
    keep = mask[1].bool()
    with torch.no_grad():
        alone = model(input_ids=ids[1, keep][None]).logits[0]
    torch.testing.assert_close(out.logits[1, keep], alone, rtol=RTOL, atol=ATOL)
    # the loss is the shifted cross-entropy over non-ignored labels (+ the span regulariser where there is one)
    labels = torch.randint(0, config.vocab_size, (3, T), generator=torch.Generator().manual_seed(3))
    labels = labels.masked_fill(mask == 0, -100)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
    ce = F.cross_entropy(out.logits[:, :-1].reshape(-1, config.vocab_size), labels[:, 1:].reshape(-1),
                         ignore_index=-100)
    span_loss = getattr(out, "span_loss", None)
    if getattr(config, "use_adaptive_attention", False):
        assert span_loss is not None and span_loss > 0
    expected = ce if span_loss is None else ce + span_loss
    torch.testing.assert_close(out.loss, expected, rtol=RTOL, atol=ATOL)
    # causal: changing the last token changes no earlier logit, and does change its own
    changed = ids.clone()
    changed[:, -1] = (changed[:, -1] % (config.vocab_size - 1)) + 1
    with torch.no_grad():
        logits = model(input_ids=changed).logits
        reference = model(input_ids=ids).logits
    torch.testing.assert_close(logits[:, :-1], reference[:, :-1], rtol=0, atol=0)
    assert (logits[:, -1] - reference[:, -1]).abs().max() > 1e-4
