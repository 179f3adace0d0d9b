"""The byte-level tokenizer of AdaptiveSpanGPT: ids 0-255 are the bytes of the UTF-8 text, then two specials.

Built with the `tokenizers` library and wrapped as a `PreTrainedTokenizerFast`, so `save_pretrained` writes a
`tokenizer.json` that transformers (pipelines, TextStreamer, the Hub widget) loads without any of our code.

    id 0..255   the byte itself (text -> UTF-8 bytes -> ids; decoding joins the bytes and decodes UTF-8)
    id 256      "<|endoftext|>"  bos / eos
    id 257      "<pad>"          padding

A model trained on raw bytes (vocab_size 256) has no ids for the two specials: its tokenizer
(``byte_level_tokenizer(vocab_size=256)``) pads with byte 0 (padding is masked, so any id in range does) and has
no bos / eos, so generation runs to ``max_new_tokens``. Give a model vocab_size >= 258 to use the specials.
"""

from __future__ import annotations

import functools

BYTE_VOCAB_SIZE = 256
EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<pad>"
EOS_TOKEN_ID = 256
PAD_TOKEN_ID = 257
VOCAB_SIZE_WITH_SPECIALS = 258


def byte_level_tokenizer(model_max_length: int | None = None, vocab_size: int = VOCAB_SIZE_WITH_SPECIALS):
    """A `PreTrainedTokenizerFast` mapping text to its UTF-8 bytes (ids 0-255) plus `<|endoftext|>` (256, bos and
    eos) and `<pad>` (257). Lossless: decode(encode(text)) == text for any string.

    For a model of `vocab_size` < 258 (raw bytes) every id it produces must be one the model has: padding is byte
    0 and there is no bos / eos.
    """
    if vocab_size < BYTE_VOCAB_SIZE:
        raise ValueError(f"a byte-level model needs vocab_size >= {BYTE_VOCAB_SIZE} (one id per byte): {vocab_size}")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import PreTrainedTokenizerFast

    alphabet = ByteLevel.alphabet()  # the 256 printable stand-ins of the bytes, in transformers' GPT-2 mapping
    byte_to_char = _bytes_to_unicode()
    assert sorted(alphabet) == sorted(byte_to_char.values())
    vocab = {byte_to_char[b]: b for b in range(BYTE_VOCAB_SIZE)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))  # no merges: one token per byte
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([EOS_TOKEN, PAD_TOKEN])
    kwargs = {"model_max_length": model_max_length} if model_max_length else {}
    if vocab_size >= VOCAB_SIZE_WITH_SPECIALS:
        kwargs.update(bos_token=EOS_TOKEN, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN)
    else:
        kwargs.update(pad_token=byte_to_char[0])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        model_input_names=["input_ids", "attention_mask"],
        clean_up_tokenization_spaces=False,
        **kwargs,
    )
    assert fast.convert_tokens_to_ids(EOS_TOKEN) == EOS_TOKEN_ID
    assert fast.pad_token_id == (PAD_TOKEN_ID if vocab_size >= VOCAB_SIZE_WITH_SPECIALS else 0)
    fast._decode = functools.partial(_decode_checked, fast)  # this instance only: the saved folder stays plain
    return fast


def _decode_checked(self, token_ids, *args, **kwargs) -> str:
    """``_decode`` refusing ids outside the vocabulary (the Rust decoder drops a too-large id silently and
    overflows on a negative one)."""
    ids = [token_ids] if isinstance(token_ids, int) else token_ids
    bad = [i for i in ids if isinstance(i, int) and not 0 <= i < len(self)]
    if bad:
        raise ValueError(f"decode: token id {bad[0]} is outside this tokenizer's vocabulary (0..{len(self) - 1}): "
                         "expected ids the model produced")
    return type(self)._decode(self, token_ids, *args, **kwargs)



def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table (what tokenizers' ByteLevel uses)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


__all__ = ["byte_level_tokenizer", "EOS_TOKEN_ID", "PAD_TOKEN_ID", "VOCAB_SIZE_WITH_SPECIALS"]
