"""Configuration of TAN (Tiny Attention Network), a small bidirectional text encoder with Chebyshev token features.

Imports only transformers: this file is copied next to the weights when a model is saved with remote code.
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

TOKEN_CODES = ("id", "hashed", "teacher")


class TanConfig(HfAttnConfigMixin, PreTrainedConfig):
    r"""Configuration of a [`TanModel`].

    TAN has no learned token-embedding table: each token id has a short fixed *code* of M scalar coordinates in
    [-1, 1] (`num_token_coordinates`); each coordinate passes through a learnable monotone map and is expanded into
    Chebyshev polynomials T_0 .. T_{K-1}, and the M x K features are projected to `hidden_size`.
    Bidirectional pre-norm attention blocks follow; the output is a masked mean over real tokens, projected to
    `embedding_size` and squashed with tanh.

    Args:
        vocab_size (`int`, *optional*, defaults to 16384):
            Number of token ids the model accepts (ids must lie in `[0, vocab_size)`). It costs no parameters (there
            is no embedding table), only the fixed `token_coordinates` buffer of vocab_size x num_token_coordinates
            floats. 16384 is the size the training recipes train their tokenizers to.
        hidden_size (`int`, *optional*, defaults to 256):
            Width of the token representations.
        num_hidden_layers (`int`, *optional*, defaults to 4):
            Number of attention blocks.
        num_attention_heads (`int`, *optional*, defaults to 4):
            Number of query heads; must divide `hidden_size`.
        num_key_value_heads (`int`, *optional*):
            Number of key/value heads (grouped-query attention); must divide `num_attention_heads`. Defaults to
            `num_attention_heads` (plain multi-head attention).
        intermediate_size (`int`, *optional*):
            Width of the bottleneck MLP inside each block (hidden -> intermediate -> SiLU -> hidden, both maps
            `DecomposedLinear`). Defaults to `hidden_size // 2`: the MLP of the Tiny Attention Networks design is a
            bottleneck, narrower than the residual stream.
        chebyshev_degree (`int`, *optional*, defaults to 8):
            K, the number of Chebyshev features T_0 .. T_{K-1} per coordinate. Since T_k(cos t) = cos(k t), the
            features are a band-limited function of the angle t = arccos(u): K sets how many distinct values of one
            coordinate the model can tell apart. With one coordinate (the original design, `token_code="id"`) K is
            the whole "embedding resolution" and should be large (256); with several coordinates each needs little.
            The projection has `hidden_size * num_token_coordinates * K` weights. Must be >= 1.
        token_code (`str`, *optional*, defaults to `"hashed"`):
            How the coordinates of a token are chosen; they are stored in the `token_coordinates` buffer [V, M]
            (saved with the weights, never trained):
            - `"id"`: the original TAN design, one coordinate per token, its id rescaled to [-1, 1]
              (`num_token_coordinates` must be 1). Neighbouring ids get nearly the same features, whatever the
              tokens mean.
            - `"hashed"`: M fixed pseudo-random orderings of the vocabulary (a token's coordinate j is its rank in
              ordering j, rescaled to [-1, 1]); two tokens close in one ordering are far apart in the others, so
              every token gets a distinct code. The default when no teacher is available.
            - `"teacher"`: the top-M principal directions of a teacher's static token vectors (what a model2vec-style
              distillation computes), set by `TanModel.set_token_coordinates` (the training recipe does it with
              `--init-from-teacher`): tokens with similar meanings start with similar codes.
        num_token_coordinates (`int`, *optional*, defaults to 64):
            M, the number of scalar coordinates in each token's code. The defaults (64 coordinates of degree 8) won
            the ablation in docs/RESULTS.md: distilled from all-MiniLM-L6-v2 for 200 steps, STS-B dev 0.746 with a
            teacher code, against 0.731 for 16 x 32 and 0.693 for the original one-coordinate design (1 x 256).
        max_position_embeddings (`int`, *optional*, defaults to 512):
            The trained length (tokens), which RoPE scaling in `rope_parameters` extends (`max_sequence_length`);
            longer inputs still run, with a warning, as in transformers' RoPE models.
        rope_parameters (`dict`, *optional*):
            Rotary embedding parameters in transformers' format (`{"rope_type": "default", "rope_theta": 10000.0}`
            by default; any type of transformers' `ROPE_INIT_FUNCTIONS`, e.g. `"yarn"`, works;
            `partial_rotary_factor` rotates only that fraction of each head). A legacy `rope_scaling` dict is
            accepted and converted to this field.
        rope_theta (`float`, *optional*, defaults to 10000.0):
            Legacy keyword for the RoPE base wavelength: stored as `rope_parameters["rope_theta"]` (transformers 5
            convention, unless `rope_parameters` sets it) and readable as `config.rope_theta`.
        sliding_window (`int`, *optional*):
            Window size (keys on each side) used by the `hf_local` attention backend; ignored by exact backends.
        attention_topk (`int`, *optional*):
            Number of keys kept per query by the `hf_topk` attention backend; ignored by exact backends.
        attention_dropout (`float`, *optional*, defaults to 0.0):
            Dropout on attention probabilities during training.
        rms_norm_eps (`float`, *optional*, defaults to 1e-6):
            Epsilon of every RMSNorm.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal initialisation of linear weights.
        embedding_size (`int`, *optional*):
            Width of the sentence embedding (`pooler_output`). Defaults to `hidden_size`.
        kwargs:
            Passed to [`PreTrainedConfig`] (e.g. `pad_token_id`, `attn_implementation`).

    Example:

    ```python
    >>> from transformers import AutoConfig
    >>> import hf_attn  # registers "tan"
    >>> config = AutoConfig.for_model("tan", hidden_size=64, num_hidden_layers=2)
    ```
    """

    model_type = "tan"

    vocab_size: int = 16384
    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int | None = None
    intermediate_size: int | None = None
    chebyshev_degree: int = 8
    token_code: str = "hashed"
    num_token_coordinates: int = 64
    max_position_embeddings: int = 512
    rope_parameters: dict | None = None
    sliding_window: int | None = None
    attention_topk: int | None = None
    attention_dropout: float = 0.0
    rms_norm_eps: float = 1e-6
    initializer_range: float = 0.02
    embedding_size: int | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)  # transformers' standardisation and the shared defaults
        if self.intermediate_size is None and isinstance(self.hidden_size, int):  # else validation names hidden_size
            self.intermediate_size = self.hidden_size // 2
        if self.embedding_size is None:
            self.embedding_size = self.hidden_size
        self.validate_architecture()

    def validate_architecture(self) -> None:
        """Raise ValueError naming the field and the fix for an impossible setting."""
        check_sizes(self, extra=("embedding_size",))
        check_special_token_ids(self)
        if self.vocab_size < 2:
            raise ValueError(
                f"`vocab_size` must be at least 2 (ids are normalised by vocab_size - 1), got {self.vocab_size}"
            )
        if not isinstance(self.chebyshev_degree, int) or self.chebyshev_degree < 1:
            raise ValueError(f"`chebyshev_degree` must be an integer >= 1, got {self.chebyshev_degree!r}")
        if self.token_code not in TOKEN_CODES:
            raise ValueError(f"`token_code` must be one of {TOKEN_CODES}, got {self.token_code!r}")
        if not isinstance(self.num_token_coordinates, int) or self.num_token_coordinates < 1:
            raise ValueError(f"`num_token_coordinates` must be an integer >= 1, got {self.num_token_coordinates!r}")
        if self.token_code == "id" and self.num_token_coordinates != 1:
            raise ValueError(
                f'`token_code="id"` gives each token one coordinate (its rescaled id); set num_token_coordinates=1 '
                f"(got {self.num_token_coordinates}) or use token_code=\"hashed\""
            )
        if self.head_dim % 2 != 0:
            raise ValueError(
                f"`hidden_size` / `num_attention_heads` = {self.head_dim} must be even "
                "(rotary embeddings rotate pairs of features)"
            )
        check_numbers(self, positive=("rms_norm_eps",), non_negative=("initializer_range",),
                      probabilities=("attention_dropout",))
        check_rope_parameters(self)


__all__ = ["TanConfig"]
