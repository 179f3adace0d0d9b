"""GQAEmbedder configuration: a compact sentence-embedding encoder with grouped-query attention.

Imports only transformers, so the file travels with a saved model as remote code.
"""

from __future__ import annotations

from transformers import PreTrainedConfig

from .config_checks import (
    HfAttnConfigMixin,
    check_numbers,
    check_rope_parameters,
    check_sizes,
    check_special_token_ids,
)


class GQAEmbedderConfig(HfAttnConfigMixin, PreTrainedConfig):
    r"""Configuration of a [`GQAEmbedderModel`]: a pre-norm bidirectional encoder with grouped-query attention and
    RoPE (optionally YaRN-scaled), masked mean pooling, a projection to `embedding_size` and L2 normalisation.

    The defaults reproduce the original GQA embedder recipe (30k vocabulary, hidden 512, 6 layers, 8 query / 2
    key-value heads, 512 -> 384 projection): about 39.2M parameters.

    Args:
        vocab_size (`int`, *optional*, defaults to 30000):
            Number of token ids the embedding table holds; ids must lie in `[0, vocab_size)`.
        hidden_size (`int`, *optional*, defaults to 512):
            Width of the residual stream.
        num_hidden_layers (`int`, *optional*, defaults to 6):
            Number of encoder blocks.
        num_attention_heads (`int`, *optional*, defaults to 8):
            Query heads per attention layer; must divide `hidden_size` (head_dim = hidden_size / heads).
        num_key_value_heads (`int`, *optional*, defaults to 2):
            Key/value heads (grouped-query attention); must divide `num_attention_heads`. `None` means equal to
            `num_attention_heads` (plain multi-head attention).
        intermediate_size (`int`, *optional*, defaults to 3200):
            Inner width of the GELU feed-forward. 3200 brings the default model to ~39M parameters, the size of the
            original GQA embedder recipe.
        max_position_embeddings (`int`, *optional*, defaults to 512):
            The trained length (tokens). RoPE scaling extends it: with YaRN to
            `rope_parameters["original_max_position_embeddings"] * rope_parameters["factor"]` (see
            `max_sequence_length`); longer inputs still run, with a warning, as in transformers' RoPE models.
        rope_theta (`float`, *optional*, defaults to 10000.0):
            Legacy keyword for the RoPE base wavelength: stored as `rope_parameters["rope_theta"]` unless that is
            already set, and readable as `config.rope_theta`.
        rope_parameters (`dict`, *optional*):
            transformers' RoPE parameters, e.g. `{"rope_type": "yarn", "factor": 4.0,
            "original_max_position_embeddings": 512}`. The legacy name `rope_scaling` is accepted as a keyword and
            standardised into this field by transformers. Inverse frequencies come from transformers'
            `ROPE_INIT_FUNCTIONS` (every `rope_type` it has: linear, dynamic, yarn, llama3, longrope, ...);
            `partial_rotary_factor` rotates only that fraction of each head. `None` means plain RoPE
            (`{"rope_type": "default"}`).
        sliding_window (`int`, *optional*):
            Window (tokens) of the `hf_local` attention backend; other backends attend to the whole sequence.
            Must be positive when set.
        attention_topk (`int`, *optional*):
            Keys kept per query by the `hf_topk` attention backend; other backends ignore it. Must be positive
            when set.
        attention_dropout (`float`, *optional*, defaults to 0.0):
            Dropout on the attention probabilities (training only).
        hidden_dropout (`float`, *optional*, defaults to 0.0):
            Dropout on the output of each attention and feed-forward sublayer before the residual add (training only).
        rms_norm_eps (`float`, *optional*, defaults to 1e-6):
            Epsilon of every RMSNorm.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal initialisation of linear and embedding weights.
        embedding_size (`int`, *optional*, defaults to 384):
            Width of the sentence embedding (`pooler_output`) after the projection.
        pad_token_id (`int`, *optional*, defaults to 0):
            Padding token id; its embedding row is initialised to zeros. Padding is excluded through
            `attention_mask`, not through this id.

    Example:

    ```python
    >>> from hf_attn import GQAEmbedderConfig, GQAEmbedderModel
    >>> config = GQAEmbedderConfig(rope_scaling={"rope_type": "yarn", "factor": 4.0,
    ...                                          "original_max_position_embeddings": 512})
    >>> model = GQAEmbedderModel(config)  # made for inputs up to 2048 tokens (config.max_sequence_length)
    ```
    """

    model_type = "gqa_embedder"

    vocab_size: int = 30000
    hidden_size: int = 512
    num_hidden_layers: int = 6
    num_attention_heads: int = 8
    num_key_value_heads: int | None = 2
    intermediate_size: int = 3200
    max_position_embeddings: int = 512
    rope_parameters: dict | None = None
    sliding_window: int | None = None
    attention_topk: int | None = None
    attention_dropout: float = 0.0
    hidden_dropout: float = 0.0
    rms_norm_eps: float = 1e-6
    initializer_range: float = 0.02
    embedding_size: int = 384
    pad_token_id: int | None = 0

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)  # transformers' standardisation and the shared defaults
        self.validate_architecture()

    def validate_architecture(self) -> None:
        """Raise ValueError naming the field and the fix for an impossible setting."""
        check_sizes(self, extra=("embedding_size",))
        check_special_token_ids(self)
        check_numbers(self, positive=("rms_norm_eps",), non_negative=("initializer_range",),
                      probabilities=("attention_dropout", "hidden_dropout"))
        if self.head_dim % 2:
            raise ValueError(
                f"RoPE needs an even head dimension: `hidden_size` / `num_attention_heads` = {self.head_dim}."
            )
        check_rope_parameters(self)


__all__ = ["GQAEmbedderConfig"]
