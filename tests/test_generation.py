"""AdaptiveSpanGPT under transformers' generate(): the KV cache must be used, and change nothing.

Every test compares the logits of cached decoding with the same model run without a cache (a full forward over the
whole sequence, or generate(use_cache=False)), to 1e-5, over 16 new tokens: a cache that is dropped or rebuilt each
step makes the step logits differ at once, while argmax tokens can still agree by luck.
"""

from __future__ import annotations

import pytest
import torch

import hf_attn  # noqa: F401  (registers the Auto classes and the hf_* backends)
from hf_attn import AdaptiveSpanGPTConfig, AdaptiveSpanGPTForCausalLM

NEW = 16
PROMPT = 8
ATOL = 1e-5


def tiny_lm(seed: int = 0, **overrides) -> AdaptiveSpanGPTForCausalLM:
    fields = dict(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=64, use_adaptive_attention=True, use_triangle_wave_masking=True, max_span=16,
        softness_span_mask=4.0, attn_implementation="eager",
    )
    fields.update(overrides)
    torch.manual_seed(seed)
    model = AdaptiveSpanGPTForCausalLM(AdaptiveSpanGPTConfig(**fields)).eval()
    with torch.no_grad():  # heads with different spans and periods, short enough to matter within 24 tokens
        for layer in model.model.layers:
            if layer.attn.span_mask is not None:
                layer.attn.span_mask.span_logit.uniform_(-2.0, 0.5)
            if layer.attn.triangle_mask is not None:
                layer.attn.triangle_mask.period_logit.uniform_(-1.0, 2.0)
                layer.attn.triangle_mask.offset_logit.uniform_(-1.0, 1.0)
    return model


def prompt_ids(batch: int = 1, length: int = PROMPT, seed: int = 5) -> torch.Tensor:
    return torch.randint(1, 64, (batch, length), generator=torch.Generator().manual_seed(seed))


def generate(model, input_ids=None, **kwargs):
    kwargs.setdefault("attention_mask", None if input_ids is None else torch.ones_like(input_ids))
    return model.generate(
        input_ids, max_new_tokens=NEW, min_new_tokens=NEW, pad_token_id=0, return_dict_in_generate=True,
        output_logits=True, **kwargs,
    )


def full_forward_logits(model, sequences: torch.Tensor, prompt_len: int) -> torch.Tensor:
    """Logits that predicted each generated token, from one forward over the whole sequence without a cache."""
    with torch.no_grad():
        logits = model(sequences, use_cache=False).logits
    return logits[:, prompt_len - 1 : -1]


@pytest.mark.parametrize("position_embedding", ["learned", "rope"])
def test_greedy_cached_logits_equal_full_forward(position_embedding):
    model = tiny_lm(position_embedding=position_embedding)
    prompt = prompt_ids()
    out = generate(model, prompt, do_sample=False)
    assert out.sequences.shape == (1, PROMPT + NEW)
    torch.testing.assert_close(
        torch.stack(out.logits, dim=1), full_forward_logits(model, out.sequences, PROMPT), rtol=0, atol=ATOL
    )
    uncached = generate(model, prompt, do_sample=False, use_cache=False)
    assert torch.equal(uncached.sequences, out.sequences)


def test_greedy_left_padded_batch_cached_equals_uncached():
    model = tiny_lm(position_embedding="learned")
    prompt = prompt_ids(batch=2)
    mask = torch.ones_like(prompt)
    mask[1, :3] = 0  # left padding
    cached = generate(model, prompt, attention_mask=mask, do_sample=False, use_cache=True)
    uncached = generate(model, prompt, attention_mask=mask, do_sample=False, use_cache=False)
    assert torch.equal(cached.sequences, uncached.sequences)
    torch.testing.assert_close(torch.stack(cached.logits, 1), torch.stack(uncached.logits, 1), rtol=0, atol=ATOL)


def test_sampling_with_fixed_seed_cached_equals_uncached():
    model = tiny_lm()
    prompt = prompt_ids(batch=2)
    runs = []
    for use_cache in (True, False):
        torch.manual_seed(123)
        runs.append(generate(model, prompt, do_sample=True, top_k=0, use_cache=use_cache))
    assert torch.equal(runs[0].sequences, runs[1].sequences)
    torch.testing.assert_close(torch.stack(runs[0].logits, 1), torch.stack(runs[1].logits, 1), rtol=0, atol=ATOL)
    torch.testing.assert_close(
        torch.stack(runs[0].logits, 1), full_forward_logits(model, runs[0].sequences, PROMPT), rtol=0, atol=ATOL
    )


def test_beam_search_cached_equals_uncached():
    model = tiny_lm(position_embedding="rope")
    prompt = prompt_ids(batch=2)
    runs = [generate(model, prompt, num_beams=3, do_sample=False, use_cache=c) for c in (True, False)]
    assert torch.equal(runs[0].sequences, runs[1].sequences)
    torch.testing.assert_close(runs[0].sequences_scores, runs[1].sequences_scores, rtol=0, atol=ATOL)
    torch.testing.assert_close(torch.stack(runs[0].logits, 1), torch.stack(runs[1].logits, 1), rtol=0, atol=ATOL)


def test_assisted_decoding_logits_equal_full_forward():
    model, assistant = tiny_lm(seed=0), tiny_lm(seed=1)
    prompt = prompt_ids()
    out = generate(model, prompt, do_sample=False, assistant_model=assistant)
    plain = generate(model, prompt, do_sample=False, use_cache=False)
    assert torch.equal(out.sequences, plain.sequences)  # greedy assisted decoding is exact
    torch.testing.assert_close(
        torch.stack(out.logits, dim=1), full_forward_logits(model, out.sequences, PROMPT), rtol=0, atol=ATOL
    )


def test_continue_from_cache():
    model = tiny_lm(position_embedding="rope")
    prompt = prompt_ids()
    first = model.generate(
        prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6, do_sample=False, pad_token_id=0,
        return_dict_in_generate=True,
    )
    assert first.cache is not None and first.cache.get_seq_length() == PROMPT + 6 - 1
    start = first.sequences.shape[1]
    out = generate(model, first.sequences, cache=first.cache, do_sample=False)
    assert out.sequences.shape == (1, start + NEW)
    torch.testing.assert_close(
        torch.stack(out.logits, dim=1), full_forward_logits(model, out.sequences, start), rtol=0, atol=ATOL
    )


def test_continue_from_inputs_embeds():
    model = tiny_lm(position_embedding="learned")
    prompt = prompt_ids()
    embeds = model.get_input_embeddings()(prompt).detach()
    out = generate(model, inputs_embeds=embeds, attention_mask=torch.ones_like(prompt), do_sample=False)
    assert out.sequences.shape == (1, NEW)  # only the new tokens when the prompt came as embeddings
    full = torch.cat([prompt, out.sequences], dim=1)
    torch.testing.assert_close(
        torch.stack(out.logits, dim=1), full_forward_logits(model, full, PROMPT), rtol=0, atol=ATOL
    )


def test_forward_accepts_old_cache_name_and_refuses_unknown_keywords():
    model = tiny_lm()
    ids = prompt_ids(length=12)
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
        cache = model(ids[:, :8], use_cache=True).cache
        new = model(ids[:, 8:], past_key_values=cache).logits  # the old keywords are still honoured
        cache = model(ids[:, :8], use_cache=True).cache
        from_params = model(ids[:, 8:], cache_params=cache).logits
    torch.testing.assert_close(new, full[:, 8:], rtol=0, atol=ATOL)
    torch.testing.assert_close(from_params, full[:, 8:], rtol=0, atol=ATOL)
    with pytest.raises(TypeError, match="past_key_value"):
        model(ids, past_key_value=cache)  # a misspelt cache must not be dropped silently
    with pytest.raises(TypeError, match="foo"):
        model.model(ids, foo=1)
    with pytest.raises(ValueError, match="once: got `cache` and `past_key_values`"):
        model(ids, cache=cache, past_key_values=model(ids[:, :2]).cache)
    with torch.no_grad():  # transformers' own keywords still pass
        model(ids, cache_position=torch.arange(12), output_attentions=False, num_items_in_batch=3)


def test_output_attentions_during_decoding_see_every_cached_key():
    model = tiny_lm()
    prompt = prompt_ids()
    steps = 4
    out = model.generate(
        prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=steps, do_sample=False, pad_token_id=0,
        return_dict_in_generate=True, output_attentions=True,
    )
    assert len(out.attentions) == steps
    for step, per_layer in enumerate(out.attentions):
        length = PROMPT + step
        for layer, weights in enumerate(per_layer):
            q_len = PROMPT if step == 0 else 1
            assert weights.shape == (1, 4, q_len, length)
            with torch.no_grad():  # the same row as a full forward over the sequence so far
                full = model(out.sequences[:, :length], use_cache=False, output_attentions=True).attentions[layer]
            torch.testing.assert_close(weights[:, :, -1], full[:, :, -1], rtol=0, atol=ATOL)
    assert (out.attentions[-1][0][0, :, 0, :-1].sum(-1) > 0).any()  # cached keys carry weight


# ---------------------------------------------------------------------------------------------------------------
# As a text generator: byte-level tokenizer, pipeline, streamer, limits, auto_map
# ---------------------------------------------------------------------------------------------------------------


def byte_lm():
    from hf_attn.modeling.tokenization_bytes import EOS_TOKEN_ID, PAD_TOKEN_ID, VOCAB_SIZE_WITH_SPECIALS

    model = tiny_lm(vocab_size=VOCAB_SIZE_WITH_SPECIALS, bos_token_id=EOS_TOKEN_ID, eos_token_id=EOS_TOKEN_ID,
                    pad_token_id=PAD_TOKEN_ID)
    assert model.generation_config.eos_token_id == EOS_TOKEN_ID and model.generation_config.pad_token_id == PAD_TOKEN_ID
    return model


def test_byte_level_tokenizer_round_trips_any_text():
    from hf_attn.modeling.tokenization_bytes import byte_level_tokenizer

    tok = byte_level_tokenizer()
    text = "héllo wörld\n€ \t<tag>"
    ids = tok(text)["input_ids"]
    assert ids == list(text.encode("utf-8"))  # ids are the UTF-8 bytes
    assert tok.decode(ids) == text
    assert (tok.eos_token_id, tok.pad_token_id, len(tok)) == (256, 257, 258)
    assert tok.decode([104, 105, 256], skip_special_tokens=True) == "hi"


def test_byte_level_tokenizer_of_a_raw_bytes_model_only_uses_its_ids():
    from hf_attn.modeling.tokenization_bytes import byte_level_tokenizer

    tok = byte_level_tokenizer(vocab_size=256)
    assert (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id) == (0, None, None)
    tok.padding_side = "left"
    batch = tok(["a", "abc"], padding=True)
    assert batch["input_ids"] == [[0, 0, 97], [97, 98, 99]] and batch["attention_mask"][0] == [0, 0, 1]
    with pytest.raises(ValueError, match="vocab_size >= 256"):
        byte_level_tokenizer(vocab_size=100)


def test_text_generation_pipeline_and_streamer(tmp_path):
    from transformers import TextStreamer, pipeline

    from hf_attn.modeling.tokenization_bytes import byte_level_tokenizer

    model, tok = byte_lm(), byte_level_tokenizer()
    generator = pipeline("text-generation", model=model, tokenizer=tok, device="cpu")
    out = generator("Hello", max_new_tokens=5, do_sample=False)
    text = out[0]["generated_text"]
    assert isinstance(text, str) and text.startswith("Hello")
    ids = tok("Hello", return_tensors="pt")["input_ids"]
    expected = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=5, do_sample=False)
    assert text == tok.decode(expected[0], skip_special_tokens=True)

    streamed = []

    class Capture(TextStreamer):
        def on_finalized_text(self, text, stream_end=False):
            streamed.append(text)

    model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=5, do_sample=False,
                   streamer=Capture(tok, skip_prompt=True))
    assert "".join(streamed) == tok.decode(expected[0, ids.shape[1]:], skip_special_tokens=True)


def test_generating_past_the_learned_positions_raises_the_models_error():
    model = tiny_lm(position_embedding="learned")  # 64 learned positions
    prompt = prompt_ids(length=60)
    with pytest.raises(ValueError, match="limit of 64 tokens"):
        model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=10, do_sample=False,
                       pad_token_id=0)


def test_saved_lm_maps_automodel_too(tmp_path):
    from transformers import AutoModel

    model = tiny_lm()
    model.save_pretrained(tmp_path)
    import json

    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModel"] == "modeling_adaptive_span_gpt.AdaptiveSpanGPTModel"
    assert auto_map["AutoModelForCausalLM"] == "modeling_adaptive_span_gpt.AdaptiveSpanGPTForCausalLM"
    base = AutoModel.from_pretrained(tmp_path).eval()
    ids = prompt_ids()
    with torch.no_grad():
        torch.testing.assert_close(base(ids).last_hidden_state, model.model(ids).last_hidden_state)
