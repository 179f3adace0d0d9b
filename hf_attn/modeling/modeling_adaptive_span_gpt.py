"""AdaptiveSpanGPT: a nanoGPT-style decoder with adaptive attention span (Sukhbaatar et al. 2019) and learnable
triangle-wave (periodic) masking.

Reads top to bottom like nanoGPT's model.py: attention, MLP, block, model, LM. The two learnable distance masks,
ALiBi and the count of the attention entries they keep live beside it, in ``distance_masks.py``.

Both masks depend only on the query-key distance d = i - j and on the head, so each layer folds them (and ALiBi)
into one *distance bias table* [H, L] (see ``layers.py``):

    table[h, d] = log(span_mask[h, d] * triangle_mask[h, d]) - alibi_slope[h] * d      (-inf where the mask is 0)

softmax(a + log m) is attention renormalised over the mask, so every exact backend (eager, sdpa, flex_attention,
hf_blockwise) computes the same function from the same table. L is the current maximum span + R: distances beyond it
have a zero mask in every head, so backends that take the table (hf_blockwise, hf_local) skip those key blocks and
flex_attention gets a BlockMask with the same hard limit.

Differences from the nanoGPT fork of the adaptive-span / periodic-mask proposal (whose code we do not have): the
triangle-wave regulariser is our reading of "its own regulariser" (see ``AdaptiveSpanGPTConfig.triangle_wave_reg``);
the mask is applied as a log-bias before the softmax rather than by multiplying and renormalising after it (same
function, and it reaches fused kernels).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.masking_utils import create_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import can_return_tuple
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .configuration_adaptive_span_gpt import AdaptiveSpanGPTConfig
from .distance_masks import (
    AdaptiveSpanMask,
    TriangleWaveMask,
    alibi_distance_bias,
    alibi_slopes,
    attention_flops,
    distance_limit_mask_function,
    safe_log,
)
from .input_checks import check_forward_kwargs, check_labels, check_model_inputs, is_tracing, resolve_cache
from .layers import attention_bias_kwargs, eager_attention_forward
from .pretrained import HfAttnPreTrainedMixin
from .rotary import RotaryEmbedding, apply_rotary_pos_emb

# transformers renamed the cache argument of its mask functions and output classes from `past_key_values` to `cache`;
# use whichever name the installed version has, so remote code never calls a deprecated spelling.
_MASK_CACHE_ARG = "cache" if "cache" in inspect.signature(create_causal_mask).parameters else "past_key_values"
_OUTPUT_CACHE_FIELD = (
    "cache" if "cache" in {f.name for f in dataclasses.fields(BaseModelOutputWithPast)} else "past_key_values"
)


# ---------------------------------------------------------------------------------------------------------------
# Transformer blocks
# ---------------------------------------------------------------------------------------------------------------


class AdaptiveSpanAttention(nn.Module):
    """Causal self-attention (GQA-capable) whose span / periodic masks and ALiBi reach the backend as one table."""

    def __init__(self, config: AdaptiveSpanGPTConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.num_key_value_heads = config.num_key_value_heads
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = True
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=config.bias)
        self.k_proj = nn.Linear(config.hidden_size, self.num_key_value_heads * self.head_dim, bias=config.bias)
        self.v_proj = nn.Linear(config.hidden_size, self.num_key_value_heads * self.head_dim, bias=config.bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=config.bias)
        self.o_proj.residual_projection = True  # nanoGPT's scaled init

        self.span_mask = None
        self.triangle_mask = None
        if config.use_adaptive_attention:
            self.span_mask = AdaptiveSpanMask(
                self.num_heads, config.max_span, config.softness_span_mask, config.span_init_ratio
            )
        if config.use_triangle_wave_masking:
            self.triangle_mask = TriangleWaveMask(
                self.num_heads,
                config.period_min_triangle_wave_masking,
                config.period_max_triangle_wave_masking,
                config.triangle_wave_fourier_terms,
            )

    def max_distance(self) -> int | None:
        """Distances at or beyond this are masked in every head (None: no limit)."""
        return self.span_mask.max_distance() if self.span_mask is not None else None

    def distance_mask(self, length: int, device: torch.device | None = None) -> torch.Tensor | None:
        """The product of the span and triangle masks for d in [0, length): [H, length] (None when neither is on)."""
        if self.span_mask is None:
            return None
        d = torch.arange(length, device=device, dtype=torch.float)
        mask = self.span_mask(d)
        if self.triangle_mask is not None:
            mask = mask * self.triangle_mask(d)
        return mask

    def distance_bias(self, k_len: int, device: torch.device) -> tuple[torch.Tensor | None, int | None]:
        """(table [H, L] fp32 or None, max_distance) for keys of length `k_len`."""
        max_distance = self.max_distance()
        # while tracing, the whole key length (no guard on a symbolic k_len; the entries past the span are -inf)
        length = k_len if max_distance is None or is_tracing() else max(1, min(k_len, max_distance))
        mask = self.distance_mask(length, device)
        table = safe_log(mask) if mask is not None else None
        if self.config.position_embedding == "alibi":
            alibi = alibi_distance_bias(alibi_slopes(self.num_heads).to(device), length)
            table = alibi if table is None else table + alibi
        return table, max_distance

    def trained_distances(self) -> torch.Tensor | None:
        """[H, 2] (lo, hi): where the distance table depends on trained parameters, for backends that then
        compute its gradient there only (`attention_bias_kwargs`). Only the span is trained: its ramp. The
        triangle wave moves the table at every distance: None (as when nothing is trained)."""
        if self.span_mask is None or self.triangle_mask is not None or not torch.is_grad_enabled():
            return None
        return self.span_mask.ramp() if self.span_mask.span_logit.requires_grad else None

    def regularizer_terms(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(spans [H], spans * kept fraction of the triangle mask over d < max_span [H] or None)."""
        spans = self.span_mask.spans()
        if self.triangle_mask is None:
            return spans, None
        d = torch.arange(self.span_mask.max_span, device=spans.device, dtype=torch.float)
        kept = self.triangle_mask(d).mean(dim=-1)
        return spans, spans * kept

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: Cache | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T, _ = hidden_states.shape
        q = self.q_proj(hidden_states).view(B, T, -1, self.head_dim).transpose(1, 2)  # [B, H, T, D]
        k = self.k_proj(hidden_states).view(B, T, -1, self.head_dim).transpose(1, 2)  # [B, Hkv, T, D]
        v = self.v_proj(hidden_states).view(B, T, -1, self.head_dim).transpose(1, 2)
        if position_embeddings is not None:  # RoPE
            cos, sin = position_embeddings
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        k_len = k.shape[2]

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        table, max_distance = self.distance_bias(k_len, q.device)
        bias_kwargs = attention_bias_kwargs(attention_interface, table, q, k_len, max_distance,
                                            self.trained_distances())
        # config.sliding_window / attention_topk are hf_local's and hf_topk's own settings, which they read from
        # `self.config`; they are not passed as `sliding_window=`, which in transformers is the model's window.

        out, weights = attention_interface(
            self,
            q,
            k,
            v,
            attention_mask,
            dropout=self.config.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
            **bias_kwargs,
            **kwargs,
        )
        out = out.reshape(B, T, -1).contiguous()  # [B, T, H * D]
        return self.o_proj(out), weights


class AdaptiveSpanMLP(nn.Module):
    def __init__(self, config: AdaptiveSpanGPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.bias)
        self.c_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.bias)
        self.c_proj.residual_projection = True
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class AdaptiveSpanBlock(GradientCheckpointingLayer):
    """Pre-norm block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config: AdaptiveSpanGPTConfig, layer_idx: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon, bias=config.bias)
        self.attn = AdaptiveSpanAttention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon, bias=config.bias)
        self.mlp = AdaptiveSpanMLP(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: Cache | None = None,
        **kwargs,
    ) -> torch.Tensor:
        attn_out, _ = self.attn(
            self.ln_1(hidden_states),
            attention_mask=attention_mask,
            position_embeddings=position_embeddings,
            cache=cache,
            **kwargs,
        )
        hidden_states = hidden_states + self.dropout(attn_out)
        return hidden_states + self.mlp(self.ln_2(hidden_states))


# ---------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------


class AdaptiveSpanGPTPreTrainedModel(HfAttnPreTrainedMixin, PreTrainedModel):
    config_class = AdaptiveSpanGPTConfig
    config: AdaptiveSpanGPTConfig
    _no_split_modules = ["AdaptiveSpanBlock"]
    _skip_keys_device_placement = ["cache", "past_key_values"]
    # `output_hidden_states` / `output_attentions`: recorded by transformers' `capture_outputs` from these modules.
    _can_record_outputs = {"hidden_states": AdaptiveSpanBlock, "attentions": AdaptiveSpanAttention}

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # transformers' own: normal(0, initializer_range) linears/embeddings, LayerNorm ones/zeros, RoPE buffers
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, nn.Linear) and getattr(module, "residual_projection", False):
            init.normal_(module.weight, mean=0.0, std=std / math.sqrt(2 * self.config.num_hidden_layers))
        elif isinstance(module, AdaptiveSpanMask):
            init.constant_(module.span_logit, math.log(module.init_ratio / (1 - module.init_ratio)))
        elif isinstance(module, TriangleWaveMask):
            init.zeros_(module.period_logit)
            init.zeros_(module.offset_logit)


def sinusoidal_position_embedding(position_ids: torch.Tensor, dim: int, base: float = 10000.0) -> torch.Tensor:
    """Vaswani et al. (2017) sinusoidal table for `position_ids` [B, T] -> [B, T, dim] (float32)."""
    half = dim // 2
    inv_freq = torch.exp(-math.log(base) * torch.arange(half, dtype=torch.float, device=position_ids.device) / half)
    angles = position_ids[..., None].float() * inv_freq
    emb = torch.cat((angles.sin(), angles.cos()), dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class AdaptiveSpanGPTModel(AdaptiveSpanGPTPreTrainedModel):
    """Token (+ learned / sinusoidal position) embeddings, `num_hidden_layers` blocks, final LayerNorm.

    On request, `hidden_states` and `attentions` are what transformers' `capture_outputs` records: the input of the
    first block, the outputs of blocks 1 .. N-1 and `last_hidden_state` (after the final LayerNorm); one weight
    tensor per block from backends that return weights (eager).
    """

    def __init__(self, config: AdaptiveSpanGPTConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        learned = config.position_embedding == "learned"
        self.embed_positions = nn.Embedding(config.max_position_embeddings, config.hidden_size) if learned else None
        self.rotary_emb = RotaryEmbedding(config) if config.position_embedding == "rope" else None
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList([AdaptiveSpanBlock(config, i) for i in range(config.num_hidden_layers)])
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon, bias=config.bias)
        self.gradient_checkpointing = False
        self.post_init()  # embedding accessors: transformers' defaults find `embed_tokens`

    # -- reports -------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def attention_span_report(self) -> dict[str, torch.Tensor | None]:
        """Per-layer, per-head spans, periods and offsets: {"span", "period", "offset"} each [n_layer, H] (or None)."""
        attns = [layer.attn for layer in self.layers]
        report = {"span": None, "period": None, "offset": None}
        if self.config.use_adaptive_attention:
            report["span"] = torch.stack([a.span_mask.spans() for a in attns]).cpu()
        if self.config.use_triangle_wave_masking:
            report["period"] = torch.stack([a.triangle_mask.periods() for a in attns]).cpu()
            report["offset"] = torch.stack([a.triangle_mask.offsets() for a in attns]).cpu()
        return report

    @torch.no_grad()
    def attention_flops(self, seq_len: int | None = None) -> dict[str, float]:
        """Attention FLOPs of one causal sequence of `seq_len` tokens (default: max_position_embeddings), from
        `distance_masks.attention_flops`: 4 * head_dim per (head, query, key) entry, spent only where the layer's
        combined mask is nonzero, against all T (T + 1) / 2 entries per head of dense causal attention.
        Returns {"attention_flops", "dense_causal_flops", "ratio", "per_layer_ratio"}.
        """
        T = seq_len or self.config.max_position_embeddings
        H, D = self.config.num_attention_heads, self.config.head_dim
        dense_per_layer = float(attention_flops(T, D, num_heads=H))
        spent_per_layer = [float(attention_flops(T, D, layer.attn.distance_mask(T), H)) for layer in self.layers]
        spent, dense = sum(spent_per_layer), dense_per_layer * len(self.layers)
        return {
            "attention_flops": spent,
            "dense_causal_flops": dense,
            "ratio": spent / dense,
            "per_layer_ratio": [s / dense_per_layer for s in spent_per_layer],
        }

    def span_regularizer(self) -> torch.Tensor | None:
        """span_reg * mean span (+ triangle_wave_reg * mean span * kept fraction); None without adaptive span.

        Means run over all heads of all layers, in tokens.
        """
        if not self.config.use_adaptive_attention:
            return None
        spans, masked = zip(*(layer.attn.regularizer_terms() for layer in self.layers), strict=True)
        reg = self.config.span_reg * torch.cat(spans).mean()
        if self.config.use_triangle_wave_masking:
            reg = reg + self.config.triangle_wave_reg * torch.cat(masked).mean()
        return reg

    # -- forward -------------------------------------------------------------------------------------------------

    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        past_key_values: Cache | None = None,
        cache_params: Cache | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        """The KV cache comes as `cache` (transformers' current name) or an old one (`past_key_values`,
        `cache_params`), as transformers' own models accept them."""
        check_forward_kwargs(kwargs, type(self).__name__)
        kwargs.pop("cache_position", None)  # positions come from the cache length; older callers still send it
        past_key_values = resolve_cache(cache, past_key_values, cache_params)
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache(config=self.config)
        past_len = past_key_values.get_seq_length() if past_key_values is not None else 0
        check_model_inputs(
            self.config, input_ids, inputs_embeds, attention_mask, past_length=past_len, position_ids=position_ids,
            dtype=self.norm.weight.dtype, model_name=type(self).__name__,
        )

        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)  # [B, T, C]
        if position_ids is None:
            position_ids = torch.arange(past_len, past_len + inputs_embeds.shape[1], device=inputs_embeds.device)[None]
        hidden_states = inputs_embeds
        if self.embed_positions is not None:
            hidden_states = hidden_states + self.embed_positions(position_ids)
        elif self.config.position_embedding == "sinusoidal":
            pe = sinusoidal_position_embedding(position_ids, self.config.hidden_size)
            hidden_states = hidden_states + pe.to(hidden_states.dtype)
        hidden_states = self.dropout(hidden_states)
        position_embeddings = self.rotary_emb(hidden_states, position_ids) if self.rotary_emb is not None else None

        # The span mask is exactly zero at d >= max span + R in every head of every layer: make that a hard limit
        # of flex_attention's BlockMask too, so it skips those blocks (values are unchanged). Other backends get
        # the limit with the distance table; reading it here (one device sync per layer) would only repeat that.
        and_mask_function = None
        if self.config.use_adaptive_attention and self.config._attn_implementation == "flex_attention":
            limit = max(layer.attn.max_distance() for layer in self.layers)
            and_mask_function = distance_limit_mask_function(torch.tensor(limit, device=inputs_embeds.device))
        causal_mask = create_causal_mask(
            config=self.config,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            and_mask_function=and_mask_function,
            **{_MASK_CACHE_ARG: past_key_values},
        )

        for layer in self.layers:
            hidden_states = layer(
                hidden_states,
                attention_mask=causal_mask,
                position_embeddings=position_embeddings,
                cache=past_key_values,
                **kwargs,
            )
        hidden_states = self.norm(hidden_states)
        return BaseModelOutputWithPast(
            last_hidden_state=hidden_states, **{_OUTPUT_CACHE_FIELD: past_key_values if use_cache else None}
        )


@dataclass
class AdaptiveSpanCausalLMOutput(CausalLMOutputWithPast):
    """CausalLMOutputWithPast plus `span_loss`: the span (+ triangle-wave) regulariser included in `loss`."""

    span_loss: torch.FloatTensor | None = None


class AdaptiveSpanGPTForCausalLM(AdaptiveSpanGPTPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: AdaptiveSpanGPTConfig):
        super().__init__(config)
        self.model = AdaptiveSpanGPTModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()  # embedding accessors: transformers' defaults find `model.embed_tokens` and `lm_head`

    def save_pretrained(self, save_directory, *args, **kwargs):
        """As transformers', and a remote-code folder also maps `AutoModel` (the base model without the LM head)."""
        if getattr(self, "_auto_class", None) is not None:
            auto_map = dict(getattr(self.config, "auto_map", None) or {})
            module = type(self.model).__module__.split(".")[-1]
            auto_map.setdefault("AutoModel", f"{module}.{type(self.model).__name__}")
            self.config.auto_map = auto_map
        return super().save_pretrained(save_directory, *args, **kwargs)

    def attention_span_report(self) -> dict[str, torch.Tensor | None]:
        return self.model.attention_span_report()

    def attention_flops(self, seq_len: int | None = None) -> dict[str, float]:
        return self.model.attention_flops(seq_len)

    def span_regularizer(self) -> torch.Tensor | None:
        return self.model.span_regularizer()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        past_key_values: Cache | None = None,
        cache_params: Cache | None = None,
        **kwargs,
    ) -> AdaptiveSpanCausalLMOutput:
        """Logits [B, T, V]; with `labels`, loss = shifted cross-entropy (ignore -100) + span regulariser.

        The KV cache comes as `cache` (transformers' current name, what generate() passes) or an old name
        (`past_key_values`, `cache_params`); an unknown keyword raises TypeError instead of being ignored. `labels`
        must be ids in [0, vocab_size) or -100 (`check_labels`). `output_hidden_states` /
        `output_attentions` reach the base model, whose `capture_outputs` records them.
        """
        check_forward_kwargs(kwargs, type(self).__name__)
        if labels is not None:  # before any kernel of this step is queued: its read waits only for tiny reductions
            x = input_ids if input_ids is not None else inputs_embeds
            if x is not None:  # without either, the base model names what is missing
                check_labels(self.config, labels, x.shape[0], x.shape[1])
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=resolve_cache(cache, past_key_values, cache_params),
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            return_dict=True,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, keep, :])

        loss = span_loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
            span_loss = self.model.span_regularizer()
            if span_loss is not None:
                loss = loss + span_loss.to(loss.dtype)
        return AdaptiveSpanCausalLMOutput(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            span_loss=span_loss,
            **{_OUTPUT_CACHE_FIELD: outputs.get(_OUTPUT_CACHE_FIELD)},
        )


__all__ = [
    "AdaptiveSpanGPTForCausalLM",
    "AdaptiveSpanGPTModel",
    "AdaptiveSpanGPTPreTrainedModel",
    "AdaptiveSpanMask",
    "TriangleWaveMask",
]
