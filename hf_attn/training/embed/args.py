"""The options of ``recipes/train_embed.py`` (``train_embedder``): ``EmbedTrainingArguments``, the ``--quick``
config, the command line, and ``finalize_args`` (``--config`` and ``--quick`` applied, values checked)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ... import registry
from ..args import (
    RunArguments,
    UsageError,
    build_parser,
    explicit_fields,
    load_recipe,
    option,
    parse_into,
    resolve_config_and_quick,
    track_explicit,
)

MODELS = registry.model_types("embedder")


@track_explicit
@dataclass
class EmbedTrainingArguments(RunArguments):
    """Every option of ``recipes/train_embed.py``. Defaults are the GQAEmbedder's T4 recipe (batch 32, grad-accum 8,
    10 epochs); ``quick=True`` swaps in a CPU config that finishes in a couple of minutes (``QUICK``)."""

    # what to train
    model: str = option("gqa_embedder", "architecture", choices=MODELS)
    quick: bool = option(False, "small CPU config that finishes in minutes (overrides options left at default)")
    hidden_size: int | None = option(None, "model width (default: the config class default)")
    num_hidden_layers: int | None = option(None, "model depth")
    num_attention_heads: int | None = option(None, "query heads")
    num_key_value_heads: int | None = option(None, "key/value heads (GQA)")
    intermediate_size: int | None = option(None, "MLP width")
    embedding_size: int | None = option(None, "sentence embedding width (projection output)")
    model_kwargs: str | None = option(None, "extra config fields as JSON, e.g. '{\"chebyshev_degree\": 128}'")
    attn_implementation: str | None = option(None, "attention backend: eager, sdpa, hf_blockwise, hf_local, ...")
    num_hidden_layers_list: list[int] | None = option(None, "size sweep: depths (one model per combination)")
    hidden_size_list: list[int] | None = option(None, "size sweep: widths")
    # data
    data_dir: str | None = option(None, "local folder laid out like ../shared/data, used instead of the Hub")
    dataset: list[str] | None = option(None, "Hub ids or local csv/jsonl/parquet(.gz) files/folders (relative to "
                                              "--data-dir allowed); default: all pair sets in --data-dir, else "
                                              "sentence-transformers/all-nli")
    dataset_config: str | None = option(None, "Hub dataset config (all-nli: triplet, pair, pair-class)")
    max_train_samples: int | None = option(None, "cap on supervised training pairs (after shuffling)")
    unsupervised: str = option("none", "unsupervised positives from Wikipedia text",
                               choices=("none", "dropout", "neighbour"))
    unsupervised_source: str | None = option(None, "text source for --unsupervised/--teacher (default: the Wikipedia "
                                                   "file in --data-dir)")
    unsupervised_samples: int = option(20000, "number of unsupervised pairs")
    max_seq_length: int = option(128, "tokens per text (truncation)")
    # tokenizer
    tokenizer: str | None = option(None, "tokenizer path or Hub id; default: train one on the training text")
    tokenizer_type: str = option("wordpiece", "tokenizer to train", choices=("wordpiece", "bpe"))
    vocab_size: int = option(16384, "vocabulary of the trained tokenizer")
    tokenizer_cache: str | None = option(None, "where the trained tokenizer is cached (default: OUTPUT_DIR/tokenizer)")
    # distillation from a sentence-transformers teacher
    teacher: str | None = option(None, "sentence-transformers teacher path or id: adds a distillation term")
    distill_target: str = option("embedding", "what the student matches: 'embedding' = MSE(projection(student), "
                                 "teacher); 'similarity' = MSE of the in-batch cosine-similarity matrices; 'both' = "
                                 "their sum", choices=("embedding", "similarity", "both"))
    distill_weight: float = option(1.0, "weight of the distillation term")
    init_from_teacher: bool = option(False, "start the student from the teacher's tokens (--teacher-init): its token "
                                     "table, or TAN's token code")
    teacher_init: str = option("static", "with --init-from-teacher: 'static' = the teacher's output for each token "
                               "alone (model2vec-style static vectors; any tokenizer, TAN too); 'input_embeddings' = "
                               "the teacher's input table (needs --tokenizer set to the teacher's); 'tokenlearn' = "
                               "the static vectors by model2vec's recipe (PCA 256, SIF), then trained on the pool's "
                               "cached targets by tokenlearn's (needs --distill-pool)",
                               choices=("static", "input_embeddings", "tokenlearn"))
    static_model: str | None = option(None, "a model2vec / tokenlearn static model folder built on the student's "
                                      "tokenizer: the student starts where it ends (its sentence embeddings at step 0 "
                                      "are the static model's; attention/MLP outputs start at zero)")
    distill_pool: int = option(0, "teacher-target distillation: train on this many unlabelled sentences (Wikipedia "
                               "sentences + every NLI/paraphrase sentence of --data-dir, or --unsupervised-source) "
                               "against teacher embeddings computed once and cached (--teacher-cache); a step costs "
                               "only the student. 0 = off (the teacher runs inside each contrastive step)")
    heldout_targets: int = option(1024, "with --distill-pool: the pool's last N sentences (at most a tenth) are not "
                                  "trained on; checkpoints are selected on them (teacher-similarity agreement) and on "
                                  "STS-B train pairs")
    teacher_cache: str | None = option(None, "folder for cached teacher targets and static token vectors (default: "
                                             "$HF_ATTN_CACHE or ~/.cache/hf_attn)")
    contrastive_weight: float = option(1.0, "weight of the contrastive term")
    # loss
    temperature: float = option(0.05, "initial InfoNCE temperature")
    learnable_temperature: bool = option(True, "learn log-temperature (clamped to [min, max])")
    min_temperature: float = option(0.01, "temperature clamp, low")
    max_temperature: float = option(1.0, "temperature clamp, high")
    symmetric_loss: bool = option(True, "bidirectional loss (anchor->positive and positive->anchor)")
    # optimisation
    optimizer: str = option("adamw", "adamw, or muon (Muon for 2-D hidden weights + AdamW for the rest)",
                            choices=("adamw", "muon"))
    learning_rate: float = option(2e-4, "AdamW learning rate", aliases=("--lr",))
    muon_lr: float = option(0.02, "Muon learning rate")
    weight_decay: float = option(0.01, "weight decay (2-D weights only)")
    lr_schedule: str = option("linear", "decay after warmup", choices=("linear", "cosine"))
    warmup_ratio: float = option(0.1, "fraction of steps of linear warmup")
    warmup_steps: int | None = option(None, "warmup steps (overrides --warmup-ratio)")
    batch_size: int = option(32, "pairs per device per micro-batch")
    grad_accum_steps: int = option(8, "micro-batches per optimizer step, all in one contrastive batch: InfoNCE sees "
                                   "batch_size x grad_accum_steps pairs (gradient caching), the encoder batch_size at "
                                   "a time", aliases=("--gradient-accumulation-steps",))
    num_epochs: int = option(10, "epochs over the training pairs")
    max_steps: int | None = option(None, "stop after this many optimizer steps (overrides --num-epochs)")
    max_train_minutes: float | None = option(None, "wall-clock limit: after the first step past it, stop as if "
                                                   "finished (final dev evaluation, best model, summary); the LR "
                                                   "schedule still follows --max-steps/--num-epochs")
    max_grad_norm: float = option(1.0, "gradient clipping (0 = off)")
    compile: bool = option(False, "torch.compile the encoder")
    seed: int = option(42, "seed for init, data order and dropout")
    num_workers: int = option(0, "DataLoader workers")
    # evaluation, checkpoints, logging
    output_dir: str = option("outputs/train_embed", "where checkpoints, best_model/ and summary.json go")
    eval_steps: int = option(500, "STS-B dev evaluation every N optimizer steps (0 = only at the end)")
    eval_max_rows: int | None = option(None, "evaluate on the first N STS-B dev pairs only")
    save_steps: int = option(500, "checkpoint every N optimizer steps (0 = never)")
    run_name: str | None = option(None, "tracker run name")
    push_to_hub: str | None = option(None, "repo id: export best_model with hf_attn.hub and push it")


# --quick: a 2-core CPU finishes it in about a minute (recipes/configs/train_embed_quick.yaml).
QUICK = load_recipe("train_embed_quick", EmbedTrainingArguments)


def build_arg_parser():
    return build_parser(EmbedTrainingArguments, "train_embed.py",
                        "Train a TAN or GQAEmbedder sentence encoder with InfoNCE (Accelerate).", QUICK)


def parse_args(argv=None) -> EmbedTrainingArguments:
    return parse_into(EmbedTrainingArguments, build_arg_parser(), argv)


def finalize_args(args: EmbedTrainingArguments) -> EmbedTrainingArguments:
    """The options a run trains with: ``--config`` and ``--quick`` applied under what the caller set, values
    checked, combinations that cannot work refused."""
    quick = dict(QUICK)
    if args.data_dir is None:
        quick.pop("dataset")
    args = resolve_config_and_quick(args, quick)
    if args.model not in MODELS:
        raise ValueError(f"--model must be one of {MODELS}, got {args.model!r}")
    if args.init_from_teacher and not args.teacher:
        raise ValueError("--init-from-teacher needs --teacher (the model whose token embeddings to start from)")
    if args.static_model and args.init_from_teacher:
        raise ValueError("--static-model and --init-from-teacher both start the student; pass one of them")
    if args.distill_pool and not args.teacher:
        raise ValueError("--distill-pool needs --teacher (the model whose embeddings are the training targets)")
    if args.init_from_teacher and args.teacher_init == "tokenlearn" and not args.distill_pool:
        raise ValueError("--teacher-init tokenlearn trains the static vectors on the pool's cached targets: it needs "
                         "--distill-pool N")
    model_kwargs(args, registry.get(args.model).config_class)  # refuse a bad --model-kwargs before any data is read
    if not args.tokenizer and args.tokenizer_type == "bpe":  # (wordpiece: checked once trained, see tokenizer.py)
        from ..tokenizer import SPECIAL_TOKENS

        floor = 256 + len(SPECIAL_TOKENS)  # byte-level BPE starts from the 256 byte symbols, plus the special tokens
        if args.vocab_size < floor:
            raise UsageError(f"--vocab-size {args.vocab_size}: expected at least {floor} for --tokenizer-type bpe (it "
                             f"starts with 256 byte symbols and {len(SPECIAL_TOKENS)} special tokens; e.g. 4000-16384)")
    return args


def _note(message: str) -> None:
    import sys

    print(message, file=sys.stderr)


def model_kwargs(args: EmbedTrainingArguments, config_class, log=_note) -> dict:
    """The config fields ``--model-kwargs`` sets, checked: valid JSON, a mapping, every key a field of
    ``config_class`` (else the closest valid name). A field also set by its own flag (``--hidden-size``): the flag
    wins, and a note says so once."""
    import difflib
    import inspect
    import json

    if not args.model_kwargs:
        return {}
    try:
        extra = json.loads(args.model_kwargs)
    except json.JSONDecodeError as e:
        raise UsageError(f"--model-kwargs {args.model_kwargs!r}: not valid JSON ({e.msg} at column {e.colno}) (pass "
                         "an object such as '{\"chebyshev_degree\": 4}')") from None
    if not isinstance(extra, dict):
        raise UsageError(f"--model-kwargs {args.model_kwargs!r}: expected a JSON object of config fields, got a "
                         f"{type(extra).__name__} (e.g. '{{\"chebyshev_degree\": 4}}')")
    valid = set(config_class().to_dict()) | set(inspect.signature(config_class.__init__).parameters) - {"self",
                                                                                                       "kwargs"}
    for key in extra:
        if key not in valid:
            close = difflib.get_close_matches(key, sorted(valid), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"see {config_class.__name__}'s documented fields"
            raise UsageError(f"--model-kwargs: {key!r} is not a field of {config_class.__name__} ({hint})")
    explicit = explicit_fields(args)
    for key in sorted(set(extra) & explicit):
        if getattr(args, key, None) is not None and getattr(args, key) != extra[key]:
            log(f"note: --{key.replace('_', '-')} {getattr(args, key)} and --model-kwargs {key}={extra[key]!r} both "
                f"given: --{key.replace('_', '-')} wins")
            del extra[key]
    return extra


# The options are read here and by the recipe's entry functions only; the pieces of a run take the values they use.
# Each function below hands one piece its options.

SIZE_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size",
               "embedding_size")


def config_fields(args: EmbedTrainingArguments) -> dict:
    """The config fields the options set: the size flags given, then ``--model-kwargs`` (``finalize_args`` has said
    which wins)."""
    fields = {k: getattr(args, k) for k in SIZE_FIELDS if getattr(args, k) is not None}
    fields.update(model_kwargs(args, registry.get(args.model).config_class, log=lambda *a: None))
    return fields


def data_options(args: EmbedTrainingArguments) -> dict:
    """The keywords of ``data.load_training_data`` (and, less ``seed``, ``dataset_config``, ``max_train_samples``
    and ``unsupervised_samples``, of ``data.trained_on``)."""
    return {"dataset": args.dataset, "data_dir": args.data_dir, "seed": args.seed, "distill_pool": args.distill_pool,
            "dataset_config": args.dataset_config, "max_train_samples": args.max_train_samples,
            "unsupervised": args.unsupervised, "unsupervised_source": args.unsupervised_source,
            "unsupervised_samples": args.unsupervised_samples, "distillation_text": bool(args.teacher)}


def teacher_options(args: EmbedTrainingArguments) -> dict:
    """The keywords of ``teacher.setup_teacher``: which teacher, how the student starts from it, where its targets
    are cached."""
    return {"teacher": args.teacher, "static_model": args.static_model, "distill_pool": args.distill_pool,
            "teacher_init": args.teacher_init if args.init_from_teacher else None,
            "max_seq_length": args.max_seq_length, "heldout_targets": args.heldout_targets,
            "teacher_cache": args.teacher_cache}


def tokenizer_options(args: EmbedTrainingArguments) -> dict:
    """The keywords of ``data.get_tokenizer``: ``--tokenizer``, or what to train and where to cache it."""
    return {"name": args.tokenizer, "cache": Path(args.tokenizer_cache or Path(args.output_dir) / "tokenizer"),
            "tokenizer_type": args.tokenizer_type, "vocab_size": args.vocab_size,
            "max_seq_length": args.max_seq_length}


def loss_options(args: EmbedTrainingArguments) -> dict:
    """The keywords of ``loop.build_loss``: InfoNCE's temperature and direction, the distillation target, the
    weights."""
    return {"distill_target": args.distill_target, "temperature": args.temperature,
            "learnable_temperature": args.learnable_temperature, "min_temperature": args.min_temperature,
            "max_temperature": args.max_temperature, "symmetric_loss": args.symmetric_loss,
            "distill_weight": args.distill_weight, "contrastive_weight": args.contrastive_weight}


def selection_options(args: EmbedTrainingArguments) -> dict:
    """The keywords of ``eval.selection_scores`` (and ``eval.DevSelection``)."""
    return {"max_seq_length": args.max_seq_length, "data_dir": args.data_dir, "eval_max_rows": args.eval_max_rows}


def resume_settings(args: EmbedTrainingArguments) -> dict:
    """The options a resumed run must share with the run that wrote its checkpoint (saved in its state): the batch
    composition and the seed decide the data order a resumed run continues."""
    return {"batch_size": args.batch_size, "grad_accum_steps": args.grad_accum_steps, "seed": args.seed}


def recorded_options(args: EmbedTrainingArguments) -> dict:
    """The options a run's summary records (``loop.embed_summary``), the training data it names included."""
    from .data import trained_on

    data = data_options(args)
    return {"model": args.model, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
            "max_seq_length": args.max_seq_length, "unsupervised": args.unsupervised, "teacher": args.teacher,
            "distill_target": args.distill_target if args.teacher else None,
            "init_from_teacher": args.init_from_teacher,
            "teacher_init": args.teacher_init if args.init_from_teacher else None,
            "static_model": args.static_model, "distill_pool": args.distill_pool,
            "dataset": trained_on(data["dataset"], data["data_dir"], data["distill_pool"], data["unsupervised"],
                                  data["unsupervised_source"], data["distillation_text"]),
            "mixed_precision": args.mixed_precision, "optimizer": args.optimizer}


__all__ = ["MODELS", "QUICK", "SIZE_FIELDS", "EmbedTrainingArguments", "build_arg_parser", "config_fields",
           "data_options", "finalize_args", "loss_options", "model_kwargs", "parse_args", "recorded_options",
           "resume_settings", "selection_options", "teacher_options", "tokenizer_options"]
