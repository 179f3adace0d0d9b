"""``hf-attn encode`` and ``hf-attn generate``: run an exported folder (or a shipped model's name) from the shell.

    hf-attn encode MODEL "first text" "second text"        one JSON array per text on stdout
    cat texts.txt | hf-attn encode MODEL --out emb.npy     one text per line from stdin, saved with numpy
    hf-attn generate MODEL "The meaning of life is" --max-new-tokens 40
"""

from __future__ import annotations

import argparse
import json
import sys


def encode_add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="an exported embedder folder, a Hub id, or a name from hf_attn.pretrained()")
    parser.add_argument("texts", nargs="*", help="texts to embed (default: one per line from stdin)")
    parser.add_argument("--backend", choices=["torch", "onnx"], default="torch",
                        help="onnx: run the folder's onnx/ graph with onnxruntime (default: %(default)s)")
    parser.add_argument("--file-name", default=None, help="with --backend onnx: the graph in onnx/, e.g. "
                        "model_qint8_quantized.onnx (default: model.onnx)")
    parser.add_argument("--batch-size", type=int, default=32, help="texts per batch (default: %(default)s)")
    parser.add_argument("--normalize", action="store_true", help="L2-normalise the embeddings")
    parser.add_argument("--out", default=None, help="write a .npy file instead of JSON lines on stdout")


def encode_run(args: argparse.Namespace) -> int:
    from .embedding import load_model

    texts = args.texts or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not texts:
        print("hf-attn encode: no texts: pass them as arguments or one per line on stdin", file=sys.stderr)
        return 2
    try:
        model = load_model(args.model, backend=args.backend, file_name=args.file_name)
    except (FileNotFoundError, ValueError, KeyError, ImportError) as exc:
        print(f"hf-attn encode: {exc}", file=sys.stderr)
        return 2
    embeddings = model.encode(texts, batch_size=args.batch_size, normalize=args.normalize)
    if args.out:
        import numpy as np

        np.save(args.out, embeddings)
        print(f"{len(texts)} embeddings of size {embeddings.shape[1]} -> {args.out}", file=sys.stderr)
    else:
        for row in embeddings:
            print(json.dumps([round(float(x), 6) for x in row]))
    return 0


def generate_add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="an exported language-model folder or a Hub id")
    parser.add_argument("prompt", help="the text to continue")
    parser.add_argument("--max-new-tokens", type=int, default=50, help="tokens to add (default: %(default)s)")
    parser.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=float, default=1.0, help="with --do-sample (default: %(default)s)")
    parser.add_argument("--top-k", type=int, default=50, help="with --do-sample (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")


def generate_run(args: argparse.Namespace) -> int:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(args.model, trust_remote_code=True)
        model = AutoModelForCausalLM.from_pretrained(args.model, trust_remote_code=True).eval()
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"hf-attn generate: cannot load {args.model} as a language model with its tokenizer: {first}",
              file=sys.stderr)
        return 2
    torch.manual_seed(args.seed)
    batch = tokenizer(args.prompt, return_tensors="pt")
    sampling = {"do_sample": True, "temperature": args.temperature, "top_k": args.top_k} if args.do_sample else {
        "do_sample": False}
    with torch.no_grad():
        output = model.generate(**batch, max_new_tokens=args.max_new_tokens, **sampling)
    print(tokenizer.decode(output[0], skip_special_tokens=True))
    return 0


__all__ = ["encode_add_arguments", "encode_run", "generate_add_arguments", "generate_run"]
