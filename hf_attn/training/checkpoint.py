"""Atomic checkpoints on top of ``accelerator.save_state``.

A checkpoint is written to ``<dir>/.tmp-checkpoint-<step>``, completed with ``trainer_state.json`` (written last),
then renamed to ``checkpoint-<step>`` in one ``os.replace``. A crash at any point leaves either the previous
checkpoints untouched plus a stale ``.tmp-*`` folder (ignored, removed on the next save), or the new complete
checkpoint. ``latest_checkpoint`` only considers folders that contain ``trainer_state.json``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

STATE_FILE = "trainer_state.json"
_CKPT = re.compile(r"^checkpoint-(\d+)$")


def list_checkpoints(checkpoint_dir: str | Path) -> list[Path]:
    """Complete checkpoints in ``checkpoint_dir``, oldest first."""
    d = Path(checkpoint_dir)
    if not d.is_dir():
        return []
    found = []
    for p in d.iterdir():
        m = _CKPT.match(p.name)
        if m and p.is_dir() and (p / STATE_FILE).exists():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def latest_checkpoint(checkpoint_dir: str | Path) -> Path | None:
    ckpts = list_checkpoints(checkpoint_dir)
    return ckpts[-1] if ckpts else None


def resolve_resume(resume: str | None, checkpoint_dir: str | Path) -> Path | None:
    """``--resume-from-checkpoint``: a checkpoint path, or 'latest'/'auto' (None if nothing is saved yet)."""
    if not resume:
        return None
    if resume in ("latest", "auto", "last"):
        return latest_checkpoint(checkpoint_dir)
    p = Path(resume)
    if p.is_dir() and not (p / STATE_FILE).exists():  # the run's output or checkpoints folder
        inner = latest_checkpoint(p) or latest_checkpoint(p / "checkpoints")
        if inner is not None:
            return inner
    if not (p / STATE_FILE).exists():
        raise FileNotFoundError(f"--resume-from-checkpoint {resume}: not a complete checkpoint (no {STATE_FILE})")
    return p


def read_state(checkpoint: str | Path) -> dict:
    return json.loads((Path(checkpoint) / STATE_FILE).read_text())


def save_checkpoint(accelerator, checkpoint_dir: str | Path, step: int, state: dict, keep: int | None = 2) -> Path:
    """Atomically save ``accelerator.save_state`` + ``state`` as ``checkpoint_dir/checkpoint-<step>``.

    Call on every process (save_state writes per-process RNG states). Returns the final path.
    """
    checkpoint_dir = Path(checkpoint_dir)
    final = checkpoint_dir / f"checkpoint-{step}"
    tmp = checkpoint_dir / f".tmp-checkpoint-{step}"
    if accelerator.is_main_process:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        for stale in checkpoint_dir.glob(".tmp-checkpoint-*"):
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=1))
        _fsync_dir(tmp)
        if final.exists():  # the same step saved twice: swap, then drop the old one
            trash = checkpoint_dir / f".tmp-old-{step}"
            os.replace(final, trash)
            os.replace(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(checkpoint_dir)
        if keep is not None and keep > 0:
            for old in list_checkpoints(checkpoint_dir)[:-keep]:
                if old != final:
                    shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def atomic_write_dir(final: str | Path, write_fn) -> Path:
    """Run ``write_fn(tmp_path)`` then move the folder to ``final`` (replacing it) in one rename."""
    final = Path(final)
    tmp = final.parent / f".tmp-{final.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write_fn(tmp)
    if final.exists():
        trash = final.parent / f".old-{final.name}"
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(final, trash)
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)
    return final


def push_best_model(best_dir: str | Path, output_dir: str | Path, repo_id: str, private: bool = False, log=print,
                    **export_kwargs) -> dict:
    """After a finished run: ``hf_attn.hub.export`` the best model to OUTPUT_DIR/export and push it to ``repo_id``.

    A failed upload (no network, no token, no permission) does not fail the run: the trained model is on disk, so
    the error is logged with the command that finishes the upload, and returned as ``{"error": message}``.
    """
    from hf_attn import hub

    export_dir = Path(output_dir) / "export"
    try:
        out = hub.export(best_dir, export_dir, **export_kwargs)
        return hub.push(out, repo_id, private=private)
    except hub.HubError as err:
        log(f"push to the Hub failed: {err} Upload later with: hf-attn push {export_dir} --repo-id {repo_id}")
        return {"error": str(err)}


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
