"""Is this file whole? Cheap structural checks of the files a model folder or a checkpoint is made of.

Each ``check_*`` returns None when the file looks whole, else one short sentence saying what is wrong (the caller
puts the path in front). They read headers and central directories, not every byte, except where the format
carries its own checksums (zip: ``torch.save`` files such as ``optimizer.bin``, every member's CRC is verified).
Checkpoints (``checkpoint_files.json``) and model folders -- ``best_model/`` and ``hf-attn export`` folders
(``model_files.json``) -- also record a size + sha256 manifest of their files when written (``write_manifest``),
which catches what a structural check cannot (a flipped byte inside tensor data, garbage of the right size).
``check_manifest`` compares a folder with it; ``load_model``, resuming and ``hf-attn push`` check it.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zipfile
from pathlib import Path


def check_json(path: str | Path) -> str | None:
    try:
        json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "missing"
    except UnicodeDecodeError:
        return "not UTF-8 text (corrupt)"
    except json.JSONDecodeError as e:
        return f"not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); the file is truncated or corrupt"
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    return None


def check_safetensors(path: str | Path) -> str | None:
    """Header parses and the file is exactly as long as the header says (catches truncation)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return f"truncated ({size} bytes; a safetensors file starts with an 8-byte header length)"
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                return f"truncated or corrupt (header of {n} bytes announced, file is {size} bytes)"
            header = json.loads(fh.read(n))
    except FileNotFoundError:
        return "missing"
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "corrupt (its safetensors header is not valid JSON)"
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    if not isinstance(header, dict):
        return "corrupt (its safetensors header is not a mapping)"
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            end = max(end, int(info["data_offsets"][1]))
        except (KeyError, TypeError, IndexError, ValueError):
            return f"corrupt (no data offsets for tensor {name!r})"
    expected = 8 + n + end
    if size != expected:
        return f"truncated or corrupt ({size} bytes, its header says {expected})"
    return None


def check_zip(path: str | Path) -> str | None:
    """A ``torch.save`` file (a zip archive): the directory reads and every member's CRC matches."""
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except FileNotFoundError:
        return "missing"
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        return f"truncated or corrupt (not a readable torch.save archive: {e})"
    if bad is not None:
        return f"corrupt (member {bad} fails its checksum)"
    return None


def check_file(path: str | Path) -> str | None:
    """The structural check that fits the file's name (None for kinds without one)."""
    name = Path(path).name
    if name.endswith(".safetensors"):
        return check_safetensors(path)
    if name.endswith(".json"):
        return check_json(path)
    if name.endswith((".bin", ".pt", ".pth")) and zipfile.is_zipfile(path) or name == "optimizer.bin":
        return check_zip(path)
    if not Path(path).exists():
        return "missing"
    return None


def sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


MODEL_MANIFEST = "model_files.json"


# The model card is prose its owner edits before pushing (huggingface_hub.ModelCard rewrites it too): vouching for
# it would make a hand-edited card look like a damaged model.
UNTRACKED_FILES = ("README.md",)


def manifest_files(folder: str | Path, exclude: tuple[str, ...] = ()) -> list[Path]:
    """The files a manifest of ``folder`` lists: every file below it except hidden ones, caches, the model card
    (``UNTRACKED_FILES``) and ``exclude``."""
    folder = Path(folder)
    out = []
    for f in sorted(folder.rglob("*")):
        rel = f.relative_to(folder)
        if f.is_file() and not any(part.startswith(".") or part == "__pycache__" for part in rel.parts) \
                and rel.as_posix() not in (*exclude, *UNTRACKED_FILES):
            out.append(f)
    return out


def write_manifest(folder: str | Path, name: str = MODEL_MANIFEST, exclude: tuple[str, ...] = ()) -> Path:
    """Write ``folder/name``: ``{relative path: {"size": bytes, "sha256": hex}}`` of every file (see
    ``manifest_files``; the manifest itself and ``exclude`` left out). Write it last: it vouches for the rest."""
    folder = Path(folder)
    files = {f.relative_to(folder).as_posix(): {"size": f.stat().st_size, "sha256": sha256(f)}
             for f in manifest_files(folder, exclude=(name, *exclude))}
    path = folder / name
    path.write_text(json.dumps(files, indent=1))
    return path


def check_manifest(folder: str | Path, name: str = MODEL_MANIFEST) -> str | None:
    """None when every file ``folder/name`` lists exists with its recorded size and sha256 (or there is no manifest);
    else "<file>: <what is wrong>" for the first that does not, or what is wrong with the manifest itself."""
    folder = Path(folder)
    path = folder / name
    if not path.exists():
        return None
    problem = check_json(path)
    if problem:
        return f"{name}: {problem}"
    entries = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(entries, dict):
        return f"{name}: damaged (expected a mapping of file names to size and sha256, got a {type(entries).__name__})"
    for rel, info in entries.items():
        if not isinstance(info, dict) or not isinstance(info.get("size"), int) or not isinstance(info.get("sha256"),
                                                                                                    str):
            return f"{name}: damaged (the entry for {rel!r} has no integer 'size' and string 'sha256')"
        f = folder / rel
        if not f.is_file():
            return f"{rel}: missing"
        size = f.stat().st_size
        if size != info["size"]:
            return f"{rel}: truncated or corrupt ({size} bytes, {info['size']} when saved)"
        if sha256(f) != info["sha256"]:
            return f"{rel}: corrupt (its content changed since it was saved: sha256 differs)"
    return None


def prepare_model_folder(folder: str | Path, keep: set[str]) -> None:
    """Before a model is saved into ``folder``: refuse a file there (``NotADirectoryError``: transformers would only
    log it and save nothing), and remove what an earlier, different model left that the new save would not
    overwrite: the remote-code modules its config.json ``auto_map`` named other than those in ``keep`` (the new
    model's module files), and the manifest (which could no longer vouch for the folder)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"save_pretrained: {folder} is a file, not a folder (pass a folder path; it is "
                                 "created if missing)")
    if not folder.is_dir():
        return

    def modules(auto_map) -> set[str]:
        out = set()
        for ref in (auto_map or {}).values():
            for r in ref if isinstance(ref, (list, tuple)) else [ref]:
                if isinstance(r, str) and "." in r and "--" not in r:
                    out.add(r.rsplit(".", 1)[0] + ".py")
        return out

    try:
        old = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        old = {}
    stale = modules(old.get("auto_map") if isinstance(old, dict) else None) - set(keep)
    for name in stale:
        (folder / name).unlink(missing_ok=True)
    (folder / MODEL_MANIFEST).unlink(missing_ok=True)


__all__ = ["MODEL_MANIFEST", "check_file", "check_json", "check_manifest", "check_safetensors", "check_zip",
           "manifest_files", "prepare_model_folder", "sha256", "write_manifest"]
