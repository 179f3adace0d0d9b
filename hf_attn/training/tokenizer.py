"""Train a WordPiece or BPE tokenizer on the training text and save it as a ``PreTrainedTokenizerFast``.

``get_or_train_tokenizer`` reuses a tokenizer already saved in ``cache_dir`` when it was trained with the same
settings (``hf_attn_tokenizer.json`` records them), so a second run skips training. Training is deterministic: the
same texts and settings give the same vocabulary, ids included (see ``_train_wordpiece_vocab``). A resumed run
does not rely on the cache: its checkpoint carries the tokenizer (``checkpoint.checkpoint_tokenizer``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable, Sequence

from .. import atomic

SPECIAL_TOKENS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
                  "mask_token": "[MASK]"}
_META = "hf_attn_tokenizer.json"


def train_tokenizer(texts: Iterable[str], kind: str = "wordpiece", vocab_size: int = 8000, min_frequency: int = 2,
                    model_max_length: int = 512):
    """Train a tokenizer on ``texts``; returns a ``transformers.PreTrainedTokenizerFast``.

    wordpiece: BERT-style (lower-cased, accents stripped, ``##`` continuation). bpe: byte-level BPE (no unknowns).
    Both wrap each text as ``[CLS] ... [SEP]``.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = list(SPECIAL_TOKENS.values())
    if kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True, clean_text=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = None  # _train_wordpiece_vocab: tokenizers' WordPieceTrainer is not deterministic
    elif kind == "bpe":
        tok = Tokenizer(models.BPE(unk_token="[UNK]"))
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r}; expected 'wordpiece' or 'bpe'")
    texts = [t for t in texts if t]
    if not texts:
        from .data import DataError

        raise DataError("cannot train a tokenizer: no training text")
    if trainer is None:
        vocab = _train_wordpiece_vocab(tok, texts, vocab_size, min_frequency, specials)
        tok.model = models.WordPiece(vocab, unk_token="[UNK]", continuing_subword_prefix="##")
    else:
        tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=model_max_length, **SPECIAL_TOKENS)


def _train_wordpiece_vocab(tok, texts, vocab_size: int, min_frequency: int, specials) -> dict[str, int]:
    """The WordPiece vocabulary ``WordPieceTrainer`` learns, but the same on every run.

    ``tokenizers.trainers.WordPieceTrainer`` (a BPE trainer with a ``##`` continuation prefix) gives the ``##x``
    symbols their ids in hash-map iteration order, which Rust randomises per process; merges of equal count are then
    broken by those ids, so two runs on the same text learn different vocabularies (single-threaded too: it is not
    the parallelism). The plain BPE trainer is deterministic because it numbers its alphabet in sorted order. So:
    normalise and pre-tokenise here, spell each word with one code point per (character, first-or-continuation)
    -- numbered in sorted character order -- train plain BPE on those words (same counts, same merge rule), and
    spell the learned tokens back (``##`` for a token that starts inside a word).
    """
    from collections import Counter

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    counts: Counter[str] = Counter()
    for text in texts:
        normal = tok.normalizer.normalize_str(text)
        counts.update(word for word, _ in tok.pre_tokenizer.pre_tokenize_str(normal))
    chars = sorted({c for word in counts for c in word})
    if 2 * len(chars) > 0x10FFFD - 0xF0000:
        raise ValueError(f"{len(chars)} distinct characters: too many to train a WordPiece vocabulary")
    first = {c: chr(0xF0000 + 2 * i) for i, c in enumerate(chars)}  # supplementary private use planes
    inner = {c: chr(0xF0000 + 2 * i + 1) for i, c in enumerate(chars)}
    back = {v: (k, False) for k, v in first.items()} | {v: (k, True) for k, v in inner.items()}

    def spell(word: str) -> str:
        return first[word[0]] + "".join(inner[c] for c in word[1:])

    # One line per distinct word, repeated as often as it occurs; sorted, so the input is the same on every run.
    lines = [" ".join([spell(w)] * n) for w, n in sorted(counts.items())]
    bpe = Tokenizer(models.BPE(unk_token="[UNK]"))
    bpe.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials,
                                  show_progress=False)
    bpe.train_from_iterator(lines, trainer=trainer, length=len(lines))
    vocab = {}
    for token, idx in sorted(bpe.get_vocab().items(), key=lambda kv: kv[1]):
        if token in specials:
            vocab[token] = idx
            continue
        decoded = [back[c] for c in token]
        vocab[("##" if decoded[0][1] else "") + "".join(c for c, _ in decoded)] = idx
    return vocab


def _fingerprint(settings: dict, texts: Sequence[str]) -> str:
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    h.update(str(len(texts)).encode())
    for t in texts[:: max(1, len(texts) // 1000)]:  # a sample is enough to tell data sets apart
        h.update(t.encode("utf-8", "replace"))
    return h.hexdigest()[:16]


def get_or_train_tokenizer(texts: Sequence[str], cache_dir: str | Path, kind: str = "wordpiece",
                           vocab_size: int = 8000, model_max_length: int = 512, log=print,
                           require_cached: str | None = None):
    """Load the tokenizer cached in ``cache_dir`` if it matches these settings and texts, else train and save it.

    ``require_cached``: a message; when set, a missing or non-matching cache raises ``UsageError`` with it instead
    of training (a resumed run must not continue with a tokenizer its weights were not trained with).
    """
    from transformers import PreTrainedTokenizerFast

    cache_dir = Path(cache_dir)
    settings = {"kind": kind, "vocab_size": vocab_size, "model_max_length": model_max_length}
    key = _fingerprint(settings, texts)
    meta = cache_dir / _META
    if meta.exists() and (cache_dir / "tokenizer.json").exists():
        try:
            if json.loads(meta.read_text()).get("fingerprint") == key:
                log(f"tokenizer: reusing {cache_dir}")
                return PreTrainedTokenizerFast.from_pretrained(str(cache_dir))
        except (json.JSONDecodeError, OSError):
            pass
    if require_cached:
        from .args import UsageError

        raise UsageError(require_cached)
    log(f"tokenizer: training {kind} (vocab {vocab_size}) on {len(texts)} texts")
    tokenizer = train_tokenizer(texts, kind=kind, vocab_size=vocab_size, model_max_length=model_max_length)
    if len(tokenizer) > vocab_size:  # every character of the data and the special tokens come first
        from .args import UsageError

        raise UsageError(f"--vocab-size {vocab_size}: the smallest {kind} tokenizer of this data has {len(tokenizer)} "
                         f"tokens (one per character it contains, and the special tokens); pass --vocab-size "
                         f"{len(tokenizer)} or more (e.g. 4000-16384)")

    def write(tmp: Path) -> None:
        tokenizer.save_pretrained(str(tmp))
        (tmp / _META).write_text(json.dumps({**settings, "fingerprint": key}, indent=1))

    # Swapped in whole (hf_attn.atomic), one writer at a time: a run reading the cache never sees a new tokenizer.json
    # beside the old fingerprint. Runs sharing a cache wait for each other's write (seconds), not fail.
    lock = atomic.FolderLock(cache_dir, beside=True).acquire(wait=600)
    try:
        atomic.write_folder(cache_dir, write)
    finally:
        lock.release()
    return tokenizer


def load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(name_or_path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    return tok
