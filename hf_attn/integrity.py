"""Is this file whole? Cheap structural checks of the files a model folder or a checkpoint is made of.

Each ``check_*`` returns None when the file looks whole, else one short sentence saying what is wrong (the caller
puts the path in front). They read headers and central directories, not every byte, except where the format
carries its own checksums (zip: ``torch.save`` files such as ``optimizer.bin``, every member's CRC is verified).
Checkpoints also record a size + sha256 manifest when written (``hf_attn.training.checkpoint``), which catches
what a structural check cannot (a flipped byte inside tensor data).
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


__all__ = ["check_file", "check_json", "check_safetensors", "check_zip", "sha256"]
