"""Configuration of AdaptiveSpanGPT: a nanoGPT-style decoder with adaptive attention span (Sukhbaatar et al. 2019)
and learnable triangle-wave (periodic) masking."""

from __future__ import annotations

from transformers import PreTrainedConfig

from .config_checks import (
    HfAttnConfigMixin,
    check_numbers,
    check_rope_parameters,
    check_sizes,
    check_special_token_ids,
)

_DEFAULT_ROPE = {"rope_type": "default", "rope_theta": 10000.0}

POSITION_EMBEDDINGS = ("learned", "sinusoidal", "rope", "alibi")


class AdaptiveSpanGPTConfig(HfAttnConfigMixin, PreTrainedConfig):
    r"""Configuration for [`AdaptiveSpanGPTModel`] / [`AdaptiveSpanGPTForCausalLM`].

    nanoGPT's names `n_embd`, `n_head`, `n_layer`, `block_size` are accepted as aliases (`attribute_map`) of
    `hidden_size`, `num_attention_heads`, `num_hidden_layers`, `max_position_embeddings`.

    Args:
        vocab_size (`int`, 256): vocabulary size (byte level, enwik8).
        hidden_size (`int`, 512): width of the residual stream.
        num_hidden_layers (`int`, 6): decoder blocks.
        num_attention_heads (`int`, 8): query heads.
        num_key_value_heads (`int`, None): key/value heads (grouped-query attention); None = `num_attention_heads`.
        intermediate_size (`int`, None): MLP width; None = 4 * `hidden_size` (nanoGPT).
        max_position_embeddings (`int`, 512): block size: the longest sequence for `learned` and `sinusoidal`
            positions; with `rope` the trained length that `rope_parameters` scaling extends (longer inputs run
            with a warning, see `max_sequence_length`); ALiBi has no limit.
        position_embedding (`str`, "learned"): one of "learned" | "sinusoidal" | "rope" | "alibi".
        rope_parameters (`dict`, None): RoPE settings as transformers reads them (`rope_type`, `rope_theta`, ...);
            None = default RoPE with theta 10000. Every `rope_type` of transformers' `ROPE_INIT_FUNCTIONS` works
            (linear, dynamic, yarn, llama3, longrope, ...), and `partial_rotary_factor` rotates only that fraction
            of each head. A legacy `rope_theta` / `rope_scaling` / `partial_rotary_factor` kwarg is folded in.
        bias (`bool`, True): biases in the linear layers and LayerNorms (nanoGPT's `bias`).
        dropout (`float`, 0.0): residual / embedding dropout (nanoGPT's `dropout`).
        attention_dropout (`float`, 0.0): dropout on attention weights.
        layer_norm_epsilon (`float`, 1e-5): LayerNorm epsilon.
        initializer_range (`float`, 0.02): std of the normal weight init.
        tie_word_embeddings (`bool`, True): share the token embedding with the LM head (nanoGPT).
        use_cache (`bool`, True): return a KV cache from the forward pass.
        use_adaptive_attention (`bool`, False): adaptive attention span (Sukhbaatar et al. 2019): per head a
            learnable span z = sigmoid(p) * max_span and the soft mask m(d) = clamp((R + z - d) / R, 0, 1) over the
            query-key distance d.
        max_span (`int`, None): the largest span z can reach; None = `max_position_embeddings`.
        span_init_ratio (`float`, 0.5): initial z / max_span of every head (0 < ratio < 1).
        softness_span_mask (`float`, 32.0): R, the length of the soft ramp of the span mask (> 0).
        span_reg (`float`, 4e-6): coefficient of the L1 span regulariser span_reg * mean over all heads of z.
        use_triangle_wave_masking (`bool`, False): learnable periodic mask over d, multiplied into the span mask;
            requires `use_adaptive_attention`.
        period_min_triangle_wave_masking, period_max_triangle_wave_masking (`float`, 2.0, 8.0): range of the
            learnable period (through a sigmoid).
        triangle_wave_fourier_terms (`int`, 4): odd harmonics in the truncated Fourier series of the triangle wave.
        triangle_wave_reg (`float`, 4e-6): coefficient of the triangle-wave regulariser
            triangle_wave_reg * mean over heads of (z * kept fraction), where the kept fraction is the mean of the
            triangle mask over d in [0, max_span). It rewards masking more of each head's span (the periodic-mask
            proposal only says the mask has "its own regulariser", combined with the span term; this is our
            reading).
        sliding_window (`int`, None): window passed to the `hf_local` backend (the attention comparison recipe).
        attention_topk (`int`, None): k passed to the `hf_topk` backend (the attention comparison recipe).
        layer_types (`list[str]`, None): every layer is "full_attention" (the default): `sliding_window` is only a
            setting of the hf_local backend here, so transformers must not turn it into a sliding KV cache.
    """

    model_type = "adaptive_span_gpt"
    keys_to_ignore_at_inference = ["past_key_values"]
    attribute_map = {
        "n_embd": "hidden_size",
        "n_head": "num_attention_heads",
        "n_layer": "num_hidden_layers",
        "block_size": "max_position_embeddings",
    }

    vocab_size: int = 256
    hidden_size: int = 512
    num_hidden_layers: int = 6
    num_attention_heads: int = 8
    num_key_value_heads: int | None = None
    intermediate_size: int | None = None
    max_position_embeddings: int = 512
    position_embedding: str = "learned"
    rope_parameters: dict | None = None
    bias: bool = True
    dropout: float = 0.0
    attention_dropout: float = 0.0
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    tie_word_embeddings: bool = True
    use_cache: bool = True
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None

    use_adaptive_attention: bool = False
    max_span: int | None = None
    span_init_ratio: float = 0.5
    softness_span_mask: float = 32.0
    span_reg: float = 4e-6
    use_triangle_wave_masking: bool = False
    period_min_triangle_wave_masking: float = 2.0
    period_max_triangle_wave_masking: float = 8.0
    triangle_wave_fourier_terms: int = 4
    triangle_wave_reg: float = 4e-6

    sliding_window: int | None = None
    attention_topk: int | None = None
    layer_types: list[str] | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)  # the nanoGPT aliases, legacy rope kwargs and the shared defaults first
        if self.intermediate_size is None:
            self.intermediate_size = 4 * self.hidden_size
        if self.max_span is None:
            self.max_span = self.max_position_embeddings
        if self.layer_types is None:
            self.layer_types = ["full_attention"] * self.num_hidden_layers
        if self.position_embedding != "rope":
            # No RoPE, no rope parameters. transformers fills in the default ones; a config saved before this rule
            # carries them too. Anything else was asked for and would be ignored: refuse it.
            if self.rope_parameters not in (None, {}, _DEFAULT_ROPE):
                raise ValueError(
                    f"`rope_parameters` {self.rope_parameters} are set but position_embedding="
                    f"{self.position_embedding!r} uses no RoPE: drop them or set position_embedding='rope'."
                )
            self.rope_parameters = None
        elif not self.rope_parameters:
            self.rope_parameters = dict(_DEFAULT_ROPE)
        self.validate_architecture()

    def validate_architecture(self) -> None:
        """Raise ValueError naming the field and the fix for an impossible setting."""
        check_sizes(self, extra=("max_span", "triangle_wave_fourier_terms"))
        check_special_token_ids(self)
        check_numbers(
            self,
            positive=("layer_norm_epsilon", "softness_span_mask", "period_min_triangle_wave_masking",
                      "period_max_triangle_wave_masking", "span_init_ratio"),
            non_negative=("span_reg", "triangle_wave_reg", "initializer_range"),
            probabilities=("dropout", "attention_dropout"),
        )
        if self.position_embedding not in POSITION_EMBEDDINGS:
            raise ValueError(
                f"`position_embedding` must be one of {POSITION_EMBEDDINGS}, got {self.position_embedding!r}."
            )
        if self.position_embedding == "rope":
            if self.head_dim % 2:
                raise ValueError(f"`position_embedding='rope'` needs an even head dim, got {self.head_dim}.")
            check_rope_parameters(self)
        if not 0.0 < self.span_init_ratio < 1.0:
            raise ValueError(f"`span_init_ratio` must be in (0, 1), got {self.span_init_ratio}.")
        if self.use_triangle_wave_masking and not self.use_adaptive_attention:
            raise ValueError("`use_triangle_wave_masking=True` requires `use_adaptive_attention=True`.")
        if self.period_min_triangle_wave_masking >= self.period_max_triangle_wave_masking:
            raise ValueError(
                f"`period_min_triangle_wave_masking` ({self.period_min_triangle_wave_masking}) must be smaller than "
                f"`period_max_triangle_wave_masking` ({self.period_max_triangle_wave_masking})."
            )
        if list(self.layer_types) != ["full_attention"] * self.num_hidden_layers:
            raise ValueError(
                f"`layer_types` must be ['full_attention'] * num_hidden_layers ({self.num_hidden_layers}), "
                f"got {self.layer_types}."
            )


__all__ = ["AdaptiveSpanGPTConfig"]
