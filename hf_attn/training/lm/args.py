"""The options of ``recipes/train_lm.py`` (``train_lm``): ``LMTrainingArguments`` (the adaptive-span GPT's
original flags keep their names), the ``--quick`` config, the command line, and ``finalize_args`` (``--config`` and
``--quick`` applied, values checked)."""

from __future__ import annotations

from dataclasses import dataclass

from ..args import (
    RunArguments,
    build_parser,
    load_recipe,
    option,
    parse_into,
    resolve_config_and_quick,
    track_explicit,
)


@track_explicit
@dataclass
class LMTrainingArguments(RunArguments):
    """Options of ``recipes/train_lm.py`` (the adaptive-span GPT's original flags keep their names)."""

    quick: bool = option(False, "tiny CPU config (minutes)")
    data: str | None = option(None, "enwik8 file, any text file, or jsonl(.gz) with a 'text' column")
    data_dir: str | None = option(None, "folder laid out like ../shared/data (default data: its Wikipedia extract)")
    enwik8: bool | None = option(None, "force the enwik8 90M/5M/5M split (default: when the file is named enwik8)")
    max_bytes: int | None = option(None, "read at most this many bytes of a non-enwik8 source")
    output_dir: str = option("outputs/train_lm", "checkpoints, metrics.jsonl, summary.json")
    # model (AdaptiveSpanGPTConfig fields)
    hidden_size: int = option(512, "n_embd")
    num_hidden_layers: int = option(8, "n_layer")
    num_attention_heads: int = option(8, "n_head")
    num_key_value_heads: int | None = option(None, "GQA key/value heads")
    block_size: int = option(512, "sequence length (max_position_embeddings)")
    position_embedding: str = option("learned", "positions", choices=("learned", "sinusoidal", "rope", "alibi"))
    dropout: float = option(0.0, "dropout")
    attn_implementation: str | None = option(None, "eager, sdpa, hf_blockwise, hf_local, hf_linear, hf_topk")
    sliding_window: int | None = option(None, "hf_local window")
    attention_topk: int | None = option(None, "hf_topk k")
    use_adaptive_attention: bool = option(False, "adaptive attention span (Sukhbaatar et al. 2019)")
    use_triangle_wave_masking: bool = option(False, "learnable periodic (triangle-wave) mask; needs adaptive attention")
    softness_span_mask: float = option(32.0, "R, ramp length of the soft span mask")
    span_reg: float = option(4e-6, "L1 coefficient on spans")
    period_min_triangle_wave_masking: float = option(2.0, "min period")
    period_max_triangle_wave_masking: float = option(8.0, "max period")
    max_span: int | None = option(None, "largest span (default: block size)")
    # optimisation
    batch_size: int = option(12, "sequences per micro-batch")
    grad_accum_steps: int = option(5, "micro-batches per step", aliases=("--gradient-accumulation-steps",))
    max_steps: int = option(5000, "optimizer steps")
    learning_rate: float = option(6e-4, "peak LR", aliases=("--lr",))
    warmup_steps: int = option(200, "linear warmup")
    weight_decay: float = option(0.1, "AdamW weight decay")
    max_grad_norm: float = option(1.0, "clipping")
    optimizer: str = option("adamw", "adamw or muon", choices=("adamw", "muon"))
    compile: bool = option(False, "torch.compile the model (the adaptive-span GPT recipe trains with it)")
    seed: int = option(1337, "seed")
    eval_steps: int = option(250, "evaluate every N steps (0 = only at the end)")
    eval_batches: int = option(20, "validation batches per evaluation")
    save_steps: int = option(1000, "checkpoint every N steps (0 = never)")
    push_to_hub: str | None = option(
        None, "repo id: export best_model (lowest validation loss) with hf_attn.hub and push it"
    )


# --quick: a tiny LM in minutes on a CPU (recipes/configs/train_lm_quick.yaml).
LM_QUICK = load_recipe("train_lm_quick", LMTrainingArguments)


def parse_args(argv=None) -> LMTrainingArguments:
    parser = build_parser(LMTrainingArguments, "train_lm.py", "Byte-level AdaptiveSpanGPT language model.", LM_QUICK)
    return parse_into(LMTrainingArguments, parser, argv)


def finalize_args(args: LMTrainingArguments) -> LMTrainingArguments:
    """The options a run trains with: ``--config`` and ``--quick`` applied under what the caller set, values checked."""
    return resolve_config_and_quick(args, LM_QUICK)


# The options that are fields of AdaptiveSpanGPTConfig under the same name.
MODEL_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "position_embedding",
                "dropout", "use_adaptive_attention", "use_triangle_wave_masking", "softness_span_mask", "span_reg",
                "period_min_triangle_wave_masking", "period_max_triangle_wave_masking", "max_span", "sliding_window",
                "attention_topk")


def model_options(args: LMTrainingArguments) -> dict:
    """The config fields the options set: ``MODEL_FIELDS``, and ``--block-size`` as ``max_position_embeddings``."""
    return {**{k: getattr(args, k) for k in MODEL_FIELDS}, "max_position_embeddings": args.block_size}


def resume_settings(args: LMTrainingArguments) -> dict:
    """The options a resumed run must share with the run that wrote its checkpoint (saved in its state): what
    decides the batches it continues with."""
    return {"batch_size": args.batch_size, "block_size": args.block_size, "grad_accum_steps": args.grad_accum_steps,
            "seed": args.seed}


__all__ = ["LM_QUICK", "LMTrainingArguments", "MODEL_FIELDS", "finalize_args", "model_options", "parse_args",
           "resume_settings"]
