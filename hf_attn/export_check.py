"""Prove that an exported folder works without hf_attn: load it in a fresh Python where ``import hf_attn`` fails.

`run_without_hf_attn` runs code in such a process (offline, with a fresh remote-code cache); `verify_export` loads
the folder there through ``AutoModel``/``AutoModelForCausalLM.from_pretrained(..., trust_remote_code=True)`` and
(embedders) ``SentenceTransformer(..., trust_remote_code=True)``, and compares the outputs with the source model's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Mapping

from .exported import load_exported_model, uses_normalize
from .model_cards import EXAMPLE_SENTENCES, architecture

VERIFY_ATOL = 1e-5


class ExportVerificationError(RuntimeError):
    """The exported folder did not load, or did not reproduce the source model, without hf_attn."""


# ---------------------------------------------------------------------------------------------------------------
# A Python without hf_attn
# ---------------------------------------------------------------------------------------------------------------

_BLOCK_HF_ATTN = textwrap.dedent(
    """
    import importlib.abc, sys
    class _BlockHfAttn(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "hf_attn" or name.startswith("hf_attn."):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked: this process must not use hf_attn)")
            return None
    sys.meta_path.insert(0, _BlockHfAttn())
    """
)


def run_without_hf_attn(
    code: str,
    cwd: str | Path | None = None,
    timeout: int = 300,
    check: bool = True,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Run `code` in a fresh Python where ``import hf_attn`` fails (torch, transformers, sentence-transformers work).

    This is how an export proves it loads through remote code alone; tests use the same helper. The child runs
    offline (``HF_HUB_OFFLINE=1``) with its own remote-code module cache. With ``check`` (default), a non-zero
    exit raises ``RuntimeError`` carrying the child's output.
    """
    child_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    child_env.update(
        HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false"
    )
    with tempfile.TemporaryDirectory(prefix="hf_attn_modules_") as modules_cache:
        child_env.setdefault("HF_MODULES_CACHE", modules_cache)  # remote code copied fresh, never a stale module
        child_env.update(env or {})
        proc = subprocess.run(
            [sys.executable, "-c", _BLOCK_HF_ATTN + "\n" + textwrap.dedent(code)],
            cwd=str(cwd) if cwd else None,
            env=child_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    if check and proc.returncode != 0:
        raise RuntimeError(f"child process failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def _reference_inputs(model, tokenizer, kind: str):
    """A few inputs for the verification: texts (embedders) or token ids (language model)."""
    import torch

    if kind == "embedder":
        return {"texts": list(EXAMPLE_SENTENCES) + ["Attention lets every token look at every other token."]}
    g = torch.Generator().manual_seed(0)
    length = min(16, int(getattr(model.config, "max_position_embeddings", 16) or 16))
    return {"input_ids": torch.randint(0, model.config.vocab_size, (2, length), generator=g)}


def _source_outputs(model, tokenizer, inputs: dict, folder: Path, kind: str) -> dict:
    """What the fresh process must reproduce, computed with the in-memory source model."""
    import torch

    with torch.no_grad():
        if kind != "embedder":
            return {"auto": model(input_ids=inputs["input_ids"]).logits.float()}
        batch = tokenizer(inputs["texts"], padding=True, truncation=True, return_tensors="pt")
        auto = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).pooler_output.float()
        st_config = json.loads((folder / "sentence_bert_config.json").read_text())
        limit = st_config.get("max_seq_length")
        single = []
        for text in inputs["texts"]:  # one text at a time: no padding at all
            enc = tokenizer([text], truncation=limit is not None, max_length=limit, return_tensors="pt")
            single.append(model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).pooler_output[0])
        st = torch.stack(single).float()
        if uses_normalize(folder):
            st = torch.nn.functional.normalize(st, dim=-1)
        return {"auto": auto, "sentence_transformers": st}


_VERIFY_CHILD = """
import json, sys, torch
folder, inputs_file, outputs_file, kind, auto_class = {args}
import transformers
inputs = torch.load(inputs_file)
model = getattr(transformers, auto_class).from_pretrained(folder, trust_remote_code=True).eval()
assert not type(model).__module__.startswith("hf_attn"), type(model).__module__
out = {{}}
with torch.no_grad():
    if kind == "embedder":
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
        batch = tokenizer(inputs["texts"], padding=True, truncation=True, return_tensors="pt")
        out["auto"] = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).pooler_output.float()
        from sentence_transformers import SentenceTransformer
        st = SentenceTransformer(folder, trust_remote_code=True, device="cpu")
        out["sentence_transformers"] = st.encode(inputs["texts"], convert_to_tensor=True, batch_size=8).float().cpu()
    else:
        out["auto"] = model(input_ids=inputs["input_ids"]).logits.float()
torch.save(out, outputs_file)
print("loaded", type(model).__module__, type(model).__name__)
"""


def verify_export(
    out_dir: str | Path, model=None, tokenizer=None, atol: float = VERIFY_ATOL, timeout: int = 600
) -> dict:
    """Load `out_dir` without hf_attn and compare its outputs with `model`'s (default: the folder loaded with hf_attn).

    Returns ``{"auto": max_abs_diff, "sentence_transformers": max_abs_diff (embedders)}``; raises
    `ExportVerificationError` when loading fails or a difference exceeds `atol`.
    """
    import torch

    out_dir = Path(out_dir).resolve()
    if model is None:
        model, tokenizer, _ = load_exported_model(out_dir)
    arch = architecture(model.config.model_type)
    inputs = _reference_inputs(model, tokenizer, arch.kind)
    expected = _source_outputs(model, tokenizer, inputs, out_dir, arch.kind)
    with tempfile.TemporaryDirectory(prefix="hf_attn_verify_") as tmp:
        inputs_file, outputs_file = Path(tmp) / "inputs.pt", Path(tmp) / "outputs.pt"
        torch.save(inputs, inputs_file)
        args = repr([str(out_dir), str(inputs_file), str(outputs_file), arch.kind, arch.auto_class])
        try:
            run_without_hf_attn(_VERIFY_CHILD.format(args=args), cwd=tmp, timeout=timeout)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            raise ExportVerificationError(f"{out_dir} does not load without hf_attn: {exc}") from exc
        got = torch.load(outputs_file)
    diffs = {}
    for key, ref in expected.items():
        if got[key].shape != ref.shape:
            raise ExportVerificationError(
                f"{out_dir}: {key} output has shape {tuple(got[key].shape)}, source {tuple(ref.shape)}"
            )
        diffs[key] = float((got[key] - ref).abs().max())
    bad = {k: d for k, d in diffs.items() if not d <= atol}
    if bad:
        raise ExportVerificationError(
            f"{out_dir}: outputs without hf_attn differ from the source model by {bad} (tolerance {atol})"
        )
    return diffs
