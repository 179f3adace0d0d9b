"""Atomic checkpoints on top of ``accelerator.save_state``.

A checkpoint is written to ``<dir>/.tmp-checkpoint-<step>``, completed with ``trainer_state.json`` (written last),
then renamed to ``checkpoint-<step>`` in one ``os.replace``. A crash at any point leaves either the previous
checkpoints untouched plus a stale ``.tmp-*`` folder (ignored, removed on the next save), or the new complete
checkpoint. ``latest_checkpoint`` only considers folders that contain ``trainer_state.json``. A step saved again
replaces its folder in ``hf_attn.atomic``'s four steps, and rotation renames an old checkpoint aside before
deleting it, so no half-deleted checkpoint is ever seen under its name. ``best_model/`` is replaced the same way
(``atomic_write_dir``) and carries the manifest too.

A checkpoint also carries the run's tokenizer (``tokenizer/``, when the run has one), so a resumed run uses the
tokenizer its weights were trained with whatever happened to the tokenizer cache, and ``checkpoint_files.json``:
the size and sha256 of every file. ``verify_checkpoint`` checks a folder against it (older checkpoints without it:
header, length and zip-CRC checks), and ``resolve_resume`` resumes from the newest checkpoint that passes, naming
each bad file it skipped; an explicitly named bad checkpoint is refused. A failed write (full disk, read-only
folder) raises ``OutputError`` naming the folder; the previous checkpoint stays intact.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from pathlib import Path

from .. import atomic
from ..integrity import write_manifest
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
    from hf_attn.integrity import check_file, check_json, check_manifest

    p = Path(checkpoint)
    problem = check_json(p / STATE_FILE)
    if problem:
        return f"{STATE_FILE}: {problem}"
    state = json.loads((p / STATE_FILE).read_text())
    if not isinstance(state, dict) or "step" not in state:
        return f"{STATE_FILE}: corrupt (no 'step' entry)"
    step = state["step"]
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        return f"{STATE_FILE}: corrupt (step {step!r} is not a count of optimizer steps)"
    m = _CKPT.match(p.name)
    if m and int(m.group(1)) != step:
        return f"{STATE_FILE}: says step {step}, but its folder is {p.name} (edited or copied from another checkpoint)"
    if (p / MANIFEST_FILE).exists():
        return check_manifest(p, MANIFEST_FILE)
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


@contextlib.contextmanager
def locked_output_dir(path: str | Path, flag: str = "--output-dir", log=None):
    """``check_output_dir``, then hold the folder's lock (``atomic.FolderLock``) for the run: a second run into the
    same folder stops at once with ``FolderLockedError`` naming the running process; a stale lock (dead process on
    this host) is taken over, saying so (``log``, default stderr). The lock is taken by the launch's first process
    only (``RANK`` 0), before the Accelerator exists. A ``best_model/`` replace that a crash interrupted is finished
    or undone first, as are interrupted checkpoint writes (``clean_leftovers``)."""
    path = check_output_dir(path, flag)
    if int(os.environ.get("RANK", "0")) != 0:
        yield path
        return
    with atomic.FolderLock(path, log=log):
        atomic.recover(path / "best_model", log=log)
        if (path / "checkpoints").is_dir():  # before resuming looks for the newest checkpoint
            clean_leftovers(path / "checkpoints", log=log)
        yield path


def check_resume(checkpoint: str | Path, module, settings: dict, total_steps: int | None = None) -> None:
    """Refuse a resume that cannot continue the saved run, naming what differs: another architecture (the weights
    in ``checkpoint`` against ``module``'s state dict: a missing or extra tensor, or another shape), other training
    ``settings`` than those saved with it (e.g. batch size), or ``total_steps`` below the steps already done."""
    from safetensors import safe_open

    checkpoint = Path(checkpoint)
    hint = "resume with the options of the run that wrote it, or pass another --output-dir to start a new run"
    weights = checkpoint / "model.safetensors"
    if weights.is_file():
        def key(k: str) -> str:  # the same tensor, whether saved through DDP or torch.compile wrappers or not
            return k.replace("_orig_mod.", "").removeprefix("module.")

        with safe_open(str(weights), framework="pt") as f:
            saved = {key(k): list(f.get_slice(k).get_shape()) for k in f.keys()}
        here = {key(k): list(v.shape) for k, v in module.state_dict().items()}
        for k in sorted(here):
            if k not in saved:
                raise CheckpointError(f"{checkpoint} holds another architecture: it has no tensor {k!r} that this "
                                      f"model has ({hint})")
            if saved[k] != here[k]:
                raise CheckpointError(f"{checkpoint} holds another architecture: {k} is {saved[k]} there, {here[k]} "
                                      f"here ({hint})")
        extra = sorted(set(saved) - set(here))
        if extra:
            raise CheckpointError(f"{checkpoint} holds another architecture: it has tensors this model lacks "
                                  f"({', '.join(extra[:3])}{', ...' if len(extra) > 3 else ''}) ({hint})")
    state = read_state(checkpoint)
    for name, value in (state.get("settings") or {}).items():
        if name in settings and settings[name] != value:
            flag = f"--{name.replace('_', '-')}"
            raise CheckpointError(f"{checkpoint} was trained with {flag} {value}, this run has {flag} {settings[name]}"
                                  f" (the data order and schedule would not continue the saved run; {hint})")
    done = state.get("step", 0)
    if total_steps is not None and done > total_steps:
        raise CheckpointError(f"{checkpoint} has already done {done} steps, more than the {total_steps} this run "
                              f"trains for (pass a larger --max-steps, or another --output-dir to start over)")


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
            clean_leftovers(checkpoint_dir)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            if tokenizer is not None:
                tokenizer.save_pretrained(str(tmp / TOKENIZER_DIR))
            write_manifest(tmp, MANIFEST_FILE, exclude=(STATE_FILE,))
            (tmp / STATE_FILE).write_text(json.dumps(state, indent=1))
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
        atomic.replace_folder(tmp, final)  # the same step saved again: the old one goes aside, then away
        if keep is not None and keep > 0:
            for old in list_checkpoints(checkpoint_dir)[:-keep]:
                if old != final:
                    atomic.remove_folder(old)
    accelerator.wait_for_everyone()
    return final


def clean_leftovers(checkpoint_dir: Path, log=None) -> None:
    """Remove what an interrupted save left in ``checkpoint_dir`` (``.tmp-checkpoint-*``), and finish or undo an
    interrupted replace or removal of a checkpoint (``atomic.recover``)."""
    for stale in [*checkpoint_dir.glob(".tmp-checkpoint-*"), *checkpoint_dir.glob(".checkpoint-*.del")]:
        shutil.rmtree(stale, ignore_errors=True)
    for aside in checkpoint_dir.glob(".checkpoint-*.old"):
        atomic.recover(checkpoint_dir / aside.name[1:-len(".old")], log=log)


def atomic_write_dir(final: str | Path, write_fn, manifest: bool = True) -> Path:
    """Write a new version of the folder ``final`` with ``write_fn(tmp_path)`` and swap it in (``atomic.write_folder``:
    beside, old aside, new in, old deleted). With ``manifest``, the folder gets the size + sha256 manifest of its
    files (``integrity.write_manifest``), which ``load_model`` checks. A failed write raises ``OutputError``; the
    previous version stays intact."""
    from hf_attn.integrity import write_manifest

    final = Path(final)

    def write(tmp: Path) -> None:
        write_fn(tmp)
        if manifest:
            write_manifest(tmp)

    try:
        return atomic.write_folder(final, write, log=print)
    except (OSError, RuntimeError) as e:
        if not _is_write_failure(e):
            raise
        kept = f"the previous {final} is intact" if final.exists() else f"{final} was not written"
        raise OutputError(f"could not write {final} ({_why(e)}; {_disk_free(final.parent)}); {kept}. "
                          f"{_fix(e)[0].upper() + _fix(e)[1:]}") from e
