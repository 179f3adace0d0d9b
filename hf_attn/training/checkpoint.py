"""Atomic checkpoints on top of ``accelerator.save_state``.

A checkpoint is written to ``<dir>/.tmp-checkpoint-<step>``, completed with ``trainer_state.json`` (written last),
then renamed to ``checkpoint-<step>`` in one ``os.replace``. A crash at any point leaves either the previous
checkpoints untouched plus a stale ``.tmp-*`` folder (ignored, removed on the next save), or the new complete
checkpoint. ``latest_checkpoint`` only considers folders that contain ``trainer_state.json``.

A checkpoint also carries the run's tokenizer (``tokenizer/``, when the run has one), so a resumed run uses the
tokenizer its weights were trained with whatever happened to the tokenizer cache, and ``checkpoint_files.json``:
the size and sha256 of every file. ``verify_checkpoint`` checks a folder against it (older checkpoints without it:
header, length and zip-CRC checks), and ``resolve_resume`` resumes from the newest checkpoint that passes, naming
each bad file it skipped; an explicitly named bad checkpoint is refused. A failed write (full disk, read-only
folder) raises ``OutputError`` naming the folder; the previous checkpoint stays intact.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from .args import UsageError

STATE_FILE = "trainer_state.json"
MANIFEST_FILE = "checkpoint_files.json"
TOKENIZER_DIR = "tokenizer"
_CKPT = re.compile(r"^checkpoint-(\d+)$")


class CheckpointError(UsageError):
    """A checkpoint that cannot be resumed from (a missing, truncated or corrupt file; another tokenizer)."""


class OutputError(UsageError):
    """The output folder cannot be written (a file, read-only, full disk)."""


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


def verify_checkpoint(checkpoint: str | Path) -> str | None:
    """None when ``checkpoint`` is complete and whole, else "<file>: <what is wrong>" for the first bad file.

    With ``checkpoint_files.json`` every listed file must exist with its recorded size and sha256; without it
    (checkpoints written before it existed) the model weights must be there and every known file must pass its
    structural check (``hf_attn.integrity``).
    """
    from hf_attn.integrity import check_file, check_json, sha256

    p = Path(checkpoint)
    problem = check_json(p / STATE_FILE)
    if problem:
        return f"{STATE_FILE}: {problem}"
    state = json.loads((p / STATE_FILE).read_text())
    if not isinstance(state, dict) or "step" not in state:
        return f"{STATE_FILE}: corrupt (no 'step' entry)"
    manifest = p / MANIFEST_FILE
    if manifest.exists():
        problem = check_json(manifest)
        if problem:
            return f"{MANIFEST_FILE}: {problem}"
        for rel, info in json.loads(manifest.read_text()).items():
            f = p / rel
            if not f.is_file():
                return f"{rel}: missing"
            if f.stat().st_size != info["size"]:
                return f"{rel}: truncated or corrupt ({f.stat().st_size} bytes, {info['size']} when saved)"
            if sha256(f) != info["sha256"]:
                return f"{rel}: corrupt (its content changed since it was saved: sha256 differs)"
        return None
    weights = sorted(p.glob("model*.safetensors")) + sorted(p.glob("pytorch_model*.bin"))
    if not weights:
        return "model.safetensors: missing (no model weights in the checkpoint)"
    for f in sorted(p.rglob("*")):
        if f.is_file() and f.name != STATE_FILE:
            problem = check_file(f)
            if problem:
                return f"{f.relative_to(p)}: {problem}"
    return None


def _candidates(checkpoint_dir: Path) -> list[Path]:
    """Every checkpoint-<step> folder, complete or not, newest first."""
    if not checkpoint_dir.is_dir():
        return []
    found = [(int(m.group(1)), q) for q in checkpoint_dir.iterdir() if (m := _CKPT.match(q.name)) and q.is_dir()]
    return [q for _, q in sorted(found, reverse=True)]


def _problem(p: Path) -> str | None:
    if not (p / STATE_FILE).exists():
        return f"{STATE_FILE}: missing (the save did not finish)"
    return verify_checkpoint(p)


def _newest_good(checkpoint_dir: Path, log=print) -> Path | None:
    """The newest checkpoint that verifies; logs each newer one skipped with its bad file. None if there are none;
    CheckpointError if there are checkpoints but none is usable (starting over silently would lose the run)."""
    skipped = []
    for p in _candidates(checkpoint_dir):
        problem = _problem(p)
        if problem is None:
            if skipped:
                log(f"resume: skipped {'; '.join(skipped)}; resuming from {p}, the newest complete checkpoint")
            return p
        skipped.append(f"{p.name} ({problem})")
    if skipped:
        raise CheckpointError(
            f"no complete checkpoint in {checkpoint_dir}: {'; '.join(skipped)}. Remove those folders to start the "
            "run over, or restore the files from a backup")
    return None


def resolve_resume(resume: str | None, checkpoint_dir: str | Path, log=print) -> Path | None:
    """``--resume-from-checkpoint``: a checkpoint path, or 'latest'/'auto' (None if nothing is saved yet).

    'latest' (or a run's output / checkpoints folder) takes the newest checkpoint that passes ``verify_checkpoint``,
    saying which newer ones it skipped and why. A checkpoint named explicitly must pass, or ``CheckpointError``
    names the bad file and the newest complete checkpoint beside it.
    """
    if not resume:
        return None
    if resume in ("latest", "auto", "last"):
        return _newest_good(Path(checkpoint_dir), log)
    p = Path(resume)
    if not p.exists():
        raise CheckpointError(f"--resume-from-checkpoint {resume}: no such folder (pass a checkpoint-<step> folder, "
                              "the run's output folder, or 'latest')")
    if p.is_dir() and not _CKPT.match(p.name) and not (p / STATE_FILE).exists():  # the run's output/checkpoints
        for d in (p, p / "checkpoints"):
            if _candidates(d):
                return _newest_good(d, log)
    problem = _problem(p) if p.is_dir() else "not a folder"
    if problem:
        try:
            alternative = _newest_good(p.parent, log=lambda *a: None)
        except CheckpointError:
            alternative = None
        hint = (f"; the newest complete checkpoint there is {alternative}: pass it, or 'latest'" if alternative
                and alternative != p else "")
        raise CheckpointError(f"--resume-from-checkpoint {resume}: not a complete checkpoint: {problem}{hint}")
    return p


def checkpoint_tokenizer(checkpoint: str | Path) -> Path | None:
    """The tokenizer folder saved in ``checkpoint`` (None for checkpoints of runs without one, or older ones)."""
    p = Path(checkpoint) / TOKENIZER_DIR
    return p if (p / "tokenizer_config.json").is_file() else None


def check_output_dir(path: str | Path, flag: str = "--output-dir") -> Path:
    """Create ``path`` and prove it writable before any training, or raise ``OutputError`` saying why."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{flag} {path} is a file, not a folder; pass a folder (it is created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        with open(probe, "wb") as fh:
            fh.write(b"0" * 4096)
            fh.flush()
            os.fsync(fh.fileno())
        probe.unlink()
    except OSError as e:
        raise OutputError(f"{flag} {path}: cannot write there ({_why(e)}); {_fix(e)}") from e
    return path


def _why(e: BaseException) -> str:
    import errno

    code = getattr(e, "errno", None)
    if code == errno.ENOSPC or "No space left" in str(e):
        return "the disk is full"
    if isinstance(e, RuntimeError):  # torch's zip writer: a short write, as on a full disk
        return "the disk is full (a write came up short)"
    if code in (errno.EROFS, errno.EACCES, errno.EPERM):
        return "read-only or no write permission"
    if code == errno.ENOTDIR:
        return "a part of the path is a file"
    return getattr(e, "strerror", None) or str(e).splitlines()[0]


def _fix(e: BaseException) -> str:
    why = _why(e)
    if why.startswith("the disk is full"):
        return "free some space (or pass another --output-dir) and resume with --resume-from-checkpoint latest"
    return "pass a folder you can write to with --output-dir"


def _is_write_failure(e: BaseException) -> bool:
    """OSError, or the RuntimeError torch's zip writer raises when a write fails (full disk: 'unexpected pos')."""
    if isinstance(e, OSError):
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and any(k in text for k in ("inline_container", "PytorchStreamWriter",
                                                                     "unexpected pos", "file write failed"))


def _disk_free(path: Path) -> str:
    for p in (path, *path.parents):
        try:
            return f"{shutil.disk_usage(p).free / 2**20:.0f} MB free on {p}"
        except OSError:
            continue
    return "free space unknown"


def _write_manifest(folder: Path) -> None:
    from hf_attn.integrity import sha256

    files = {}
    for f in sorted(folder.rglob("*")):
        if f.is_file() and f.name not in (STATE_FILE, MANIFEST_FILE):
            files[str(f.relative_to(folder))] = {"size": f.stat().st_size, "sha256": sha256(f)}
    (folder / MANIFEST_FILE).write_text(json.dumps(files, indent=1))


def read_state(checkpoint: str | Path) -> dict:
    """The run state saved in ``checkpoint`` (``trainer_state.json``)."""
    return json.loads((Path(checkpoint) / STATE_FILE).read_text())


def load_checkpoint(accelerator, checkpoint: str | Path) -> dict:
    """Restore ``checkpoint`` into the prepared objects (``accelerator.load_state``: model, optimizer, registered
    scheduler, RNG states); returns its run state."""
    accelerator.load_state(str(checkpoint))
    return read_state(checkpoint)


def save_checkpoint(accelerator, checkpoint_dir: str | Path, step: int, state: dict, keep: int | None = 2,
                    tokenizer=None) -> Path:
    """Atomically save ``accelerator.save_state`` + ``state`` (+ ``tokenizer``) as ``checkpoint_dir/checkpoint-<step>``.

    Call on every process (save_state writes per-process RNG states). Returns the final path. A failed write (full
    disk, read-only folder) removes the partial folder and raises ``OutputError``; earlier checkpoints are intact.
    """
    checkpoint_dir = Path(checkpoint_dir)
    final = checkpoint_dir / f"checkpoint-{step}"
    tmp = checkpoint_dir / f".tmp-checkpoint-{step}"
    try:
        if accelerator.is_main_process:
            checkpoint_dir.mkdir(parents=True, exist_ok=True)
            for stale in checkpoint_dir.glob(".tmp-checkpoint-*"):
                shutil.rmtree(stale, ignore_errors=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            if tokenizer is not None:
                tokenizer.save_pretrained(str(tmp / TOKENIZER_DIR))
            _write_manifest(tmp)
            (tmp / STATE_FILE).write_text(json.dumps(state, indent=1))
            _fsync_dir(tmp)
    except (OSError, RuntimeError) as e:
        if not _is_write_failure(e):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        previous = latest_checkpoint(checkpoint_dir)
        raise OutputError(
            f"could not write checkpoint {final} ({_why(e)}; {_disk_free(checkpoint_dir)}); "
            f"{'the previous checkpoint ' + str(previous) + ' is intact' if previous else 'no earlier checkpoint'}. "
            f"{_fix(e)[0].upper() + _fix(e)[1:]}") from e
    if accelerator.is_main_process:
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
    try:
        tmp.mkdir(parents=True)
        write_fn(tmp)
    except (OSError, RuntimeError) as e:
        if not _is_write_failure(e):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        kept = f"the previous {final} is intact" if final.exists() else f"{final} was not written"
        raise OutputError(f"could not write {final} ({_why(e)}; {_disk_free(final.parent)}); {kept}. "
                          f"{_fix(e)[0].upper() + _fix(e)[1:]}") from e
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
