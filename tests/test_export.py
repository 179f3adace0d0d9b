"""torch.export and torch.compile of the three models: the input checks must not read tensor values while tracing.

The vocabulary check, the mask-value check and AdaptiveSpanMask.max_distance() would need `.item()`; under tracing
they are skipped (or replaced by a static bound), so export works with static and dynamic batch / length and
torch.compile(fullgraph=True) has no graph break from them.
"""

from __future__ import annotations

import pytest
import torch
from test_input_checks import make_model
from torch.export import Dim

import hf_attn  # noqa: F401
from hf_attn.modeling.input_checks import is_tracing
from hf_attn.modeling.modeling_adaptive_span_gpt import AdaptiveSpanMask

LIMIT = 32


# Spans and periods well below the length, so the distance table matters beyond the traced length.
SPAN_MODEL = dict(use_adaptive_attention=True, use_triangle_wave_masking=True, max_span=8, softness_span_mask=4.0,
                  use_cache=False)


def tiny(kind: str):
    return make_model(kind, attn="sdpa", max_position_embeddings=LIMIT,
                      **(SPAN_MODEL if kind == "adaptive_span_gpt" else {}))


class Wrapper(torch.nn.Module):
    """forward(ids, mask) -> the model's main output tensor (export wants tensors out)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        return out.logits if hasattr(out, "logits") else out.pooler_output


def batch(b: int, t: int):
    g = torch.Generator().manual_seed(b * 100 + t)
    ids = torch.randint(0, 50, (b, t), generator=g)
    mask = torch.ones(b, t, dtype=torch.long)
    mask[0, t // 2 :] = 0  # one padded row
    return ids, mask


KINDS = ["tan", "gqa_embedder", "adaptive_span_gpt"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dynamic", [False, True])
def test_torch_export_matches_eager(kind, dynamic):
    model = Wrapper(tiny(kind))
    ids, mask = batch(2, 12)
    shapes = None
    if dynamic:
        b, t = Dim("batch", min=1, max=8), Dim("seq", min=2, max=LIMIT)
        shapes = {"input_ids": {0: b, 1: t}, "attention_mask": {0: b, 1: t}}
    with torch.no_grad():
        program = torch.export.export(model, (ids, mask), dynamic_shapes=shapes)
    cases = [(2, 12)] + ([(3, 7), (1, LIMIT)] if dynamic else [])
    for b, t in cases:
        ids, mask = batch(b, t)
        with torch.no_grad():
            expected = model(ids, mask)
            got = program.module()(ids, mask)
        if kind == "adaptive_span_gpt":  # logits of real tokens: a padded query that sees no key within the span
            got, expected = got[mask.bool()], expected[mask.bool()]  # has backend-defined output (sdpa's here)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_compile_fullgraph_has_no_graph_break(kind):
    model = tiny(kind)
    ids, mask = batch(2, 10)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="eager")  # fullgraph: any graph break raises
    with torch.no_grad():
        out = compiled(input_ids=ids, attention_mask=mask)
        ref = model(input_ids=ids, attention_mask=mask)
    key = "logits" if kind == "adaptive_span_gpt" else "pooler_output"
    torch.testing.assert_close(out[key], ref[key], rtol=1e-4, atol=1e-5)


def test_value_checks_are_skipped_only_while_tracing():
    assert not is_tracing()
    span = AdaptiveSpanMask(num_heads=2, max_span=20, softness=4.0, init_ratio=0.5)
    assert span.max_distance() == 14  # z = 10 + R = 4, read with .item() in eager mode
    seen = {}

    def probe(x):
        seen["tracing"] = is_tracing()
        seen["bound"] = span.max_distance()
        return x + 1

    torch.compile(probe, fullgraph=True, backend="eager")(torch.zeros(2))
    assert seen == {"tracing": True, "bound": 24}  # the static bound ceil(max_span + R), no .item()
    model = tiny("gqa_embedder")
    with pytest.raises(ValueError, match="vocabulary"):  # eager mode still checks values
        model(torch.tensor([[1, 50]]))
