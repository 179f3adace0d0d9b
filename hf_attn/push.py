"""``hf-attn push``: upload a folder written by ``hf-attn export`` to the Hugging Face Hub.

`push` is ``HfApi.create_repo`` + ``HfApi.upload_folder``. Every failure a user can fix (not logged in, no network,
offline mode, a repo owned by someone else) becomes a `HubError` with one line saying what to do; the CLI prints
that line, never a traceback.
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from .errors import HfAttnError
from .integrity import write_manifest
from .model_cards import set_model_id

# Files an upload leaves out (editor/OS litter and caches; hidden files are never part of an export).
UPLOAD_IGNORE = [".*", "**/.*", "__pycache__", "**/__pycache__/**", "*.pyc"]


class HubError(HfAttnError, RuntimeError):
    """A failure the user can fix; ``str(error)`` is one line saying what to do."""


# The license identifiers the Hub accepts in a card's metadata (huggingface.co/docs/hub/repositories-licenses).
HUB_LICENSES = (
    "apache-2.0", "mit", "openrail", "bigscience-openrail-m", "creativeml-openrail-m", "bigscience-bloom-rail-1.0",
    "bigcode-openrail-m", "afl-3.0", "artistic-2.0", "bsl-1.0", "bsd", "bsd-2-clause", "bsd-3-clause",
    "bsd-3-clause-clear", "c-uda", "cc", "cc0-1.0", "cc-by-2.0", "cc-by-2.5", "cc-by-3.0", "cc-by-4.0", "cc-by-sa-3.0",
    "cc-by-sa-4.0", "cc-by-nc-2.0", "cc-by-nc-3.0", "cc-by-nc-4.0", "cc-by-nd-4.0", "cc-by-nc-nd-3.0",
    "cc-by-nc-nd-4.0", "cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0", "cc-by-nc-sa-4.0", "cdla-sharing-1.0",
    "cdla-permissive-1.0", "cdla-permissive-2.0", "wtfpl", "ecl-2.0", "epl-1.0", "epl-2.0", "etalab-2.0", "eupl-1.1",
    "eupl-1.2", "agpl-3.0", "gfdl", "gpl", "gpl-2.0", "gpl-3.0", "lgpl", "lgpl-2.1", "lgpl-3.0", "isc", "lppl-1.3c",
    "ms-pl", "mpl-2.0", "odc-by", "odbl", "openrail++", "osl-3.0", "postgresql", "ofl-1.1", "ncsa", "unlicense",
    "zlib", "pddl", "lgpl-lr", "deepfloyd-if-license", "llama2", "llama3", "llama3.1", "llama3.2", "llama3.3",
    "gemma", "unknown", "other",
)


def check_license(license: str) -> str:
    """``license`` if the Hub knows it, else ``ValueError`` naming the closest identifiers."""
    import difflib

    if license in HUB_LICENSES:
        return license
    close = difflib.get_close_matches(str(license).lower(), HUB_LICENSES, n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    raise ValueError(f"--license {license!r} is not a Hub license identifier ({hint}use 'other' for a license the "
                     "Hub does not list; see huggingface.co/docs/hub/repositories-licenses)")


def check_repo_id(repo_id: str) -> str:
    """``repo_id`` if it is a valid Hub model id (NAME or OWNER/NAME), else ``HubError`` saying why
    (``huggingface_hub.utils.validate_repo_id``'s rules)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        if not repo_id or repo_id.strip() != repo_id:
            raise HFValidationError("it is empty or has spaces around it")
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise HubError(f"invalid --repo-id {repo_id!r}: {str(e).splitlines()[0]} (use NAME or YOUR_NAME/NAME with "
                       "letters, digits, '-', '_' and '.')") from None
    return repo_id


def check_export_folder(out_dir: str | Path) -> None:
    """``HubError`` unless ``out_dir`` is a complete export: config.json and README.md present, and every file its
    manifest (``integrity.MODEL_MANIFEST``, written by ``hf-attn export``) lists there with its size and sha256."""
    from .atomic import aside_path, temp_path
    from .integrity import MODEL_MANIFEST, check_manifest

    out_dir = Path(out_dir)
    if not (out_dir / "config.json").is_file() or not (out_dir / "README.md").is_file():
        leftovers = [p.name for p in (temp_path(out_dir), aside_path(out_dir)) if p.exists()]
        hint = (f"; {', '.join(leftovers)} beside it is left from an interrupted export: rerun `hf-attn export` "
                "(it recovers the folder)") if leftovers else ": run `hf-attn export` first"
        raise HubError(f"{out_dir} is not an exported model folder (no config.json / README.md){hint}")
    if not (out_dir / MODEL_MANIFEST).is_file():
        raise HubError(f"{out_dir} has no {MODEL_MANIFEST} (the size and sha256 of each file `hf-attn export` "
                       "wrote), so it cannot be checked before upload: export it again with `hf-attn export`")
    problem = check_manifest(out_dir)
    if problem:
        raise HubError(f"{out_dir} does not match its manifest ({problem}): the folder changed or is incomplete "
                       "since it was exported; export it again with `hf-attn export` before pushing")


def folder_files(folder: str | Path) -> list[tuple[str, int]]:
    """(relative path, size in bytes) of every file an upload sends, sorted."""
    import fnmatch

    folder = Path(folder)
    files = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_file() and not any(part.startswith(".") or part == "__pycache__" for part in Path(rel).parts):
            if not fnmatch.fnmatch(rel, "*.pyc"):
                files.append((rel, p.stat().st_size))
    return files


def human_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _explain(exc: BaseException, repo_id: str) -> str | None:
    """One line saying what to do about a huggingface_hub failure, or None if it is not one we know."""
    from huggingface_hub import errors

    if isinstance(exc, errors.OfflineModeIsEnabled):
        return "the Hub is switched off by HF_HUB_OFFLINE=1: unset it (and check your network) to push"
    if isinstance(exc, errors.LocalTokenNotFoundError):
        return "not logged in to the Hugging Face Hub: run `hf auth login` (or set HF_TOKEN to a write token)"
    if isinstance(exc, errors.HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status == 401:
            return "the Hub rejected your token (401): run `hf auth login` with a valid write token, or set HF_TOKEN"
        if status == 403:
            return (
                f"no write access to {repo_id} (403): it belongs to another user or organisation, or your token is "
                f"read-only; push to a repo under your own name (--repo-id YOUR_NAME/MODEL) with a write token"
            )
        if isinstance(exc, errors.RevisionNotFoundError):
            return f"revision not found in {repo_id}: check --revision"
        if isinstance(exc, errors.RepositoryNotFoundError) or status == 404:
            return (
                f"{repo_id} was not found and could not be created with your token: check the repo id (NAME or "
                f"ORG/NAME you can write to) and run `hf auth login`"
            )
        if status is not None and status >= 500:
            return f"the Hub answered {status} (a server problem): try again later"
        return f"the Hub refused the upload to {repo_id} ({status}): {str(exc).splitlines()[0]}"
    http_error = getattr(errors, "HTTPError", None)  # the HTTP client's base error: connection, timeout, ...
    if (http_error is not None and isinstance(exc, http_error)) or isinstance(exc, (ConnectionError, TimeoutError)):
        return "cannot reach huggingface.co (no network?): check your connection or proxy and run the push again"
    return None


def push(
    out_dir: str | Path,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    dry_run: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
    print_fn=print,
) -> dict:
    """Upload an exported folder to the Hub repo `repo_id` (created if missing) -> ``{"repo_id", "url", "files", ...}``.

    The card's usage snippets are pointed at `repo_id` first. ``dry_run`` prints the files and sizes that would go
    up and the card's metadata, and touches neither the folder nor the network. Failures the user can fix raise
    `HubError` with one line saying what to do.
    """
    from huggingface_hub import ModelCard

    out_dir = Path(out_dir)
    check_repo_id(repo_id)
    check_export_folder(out_dir)
    files = folder_files(out_dir)
    metadata = ModelCard((out_dir / "README.md").read_text(encoding="utf-8")).data.to_dict()
    report = {"repo_id": repo_id, "private": private, "revision": revision, "files": files, "metadata": metadata}

    if dry_run:
        total = sum(size for _, size in files)
        print_fn(
            f"dry run: would upload {len(files)} files ({human_size(total)}) from {out_dir} to "
            f"{'private ' if private else ''}model repo {repo_id}" + (f" (revision {revision})" if revision else "")
        )
        width = max(len(rel) for rel, _ in files)
        for rel, size in files:
            print_fn(f"  {rel:<{width}}  {human_size(size):>9}")
        import yaml

        print_fn("card metadata:")
        print_fn(textwrap.indent(yaml.safe_dump(metadata, sort_keys=False).rstrip(), "  "))
        return {**report, "dry_run": True, "url": None}

    from huggingface_hub import HfApi, constants, errors, get_token

    # Known answers without a round trip: offline mode, then no token at all.
    if constants.HF_HUB_OFFLINE:
        raise HubError(_explain(errors.OfflineModeIsEnabled(), repo_id))
    if token is None and get_token() is None:
        raise HubError(_explain(errors.LocalTokenNotFoundError(), repo_id))
    api = HfApi(token=token)
    try:
        repo_url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        full_id = getattr(repo_url, "repo_id", None) or repo_id
        readme = out_dir / "README.md"
        readme.write_text(set_model_id(readme.read_text(encoding="utf-8"), full_id), encoding="utf-8")
        write_manifest(out_dir)  # the card now names the repo: the manifest vouches for the folder as uploaded
        if revision:
            api.create_branch(full_id, branch=revision, exist_ok=True, repo_type="model")
        commit = api.upload_folder(
            repo_id=full_id,
            folder_path=str(out_dir),
            repo_type="model",
            revision=revision,
            commit_message=commit_message or "Upload hf_attn model",
            ignore_patterns=UPLOAD_IGNORE,
        )
    except Exception as exc:  # noqa: BLE001 - only the hub's own, known failures are translated; others re-raise
        message = _explain(exc, repo_id)
        if message is None:
            raise
        raise HubError(message) from exc
    url = getattr(commit, "commit_url", None) or str(repo_url)
    print_fn(f"pushed {len(files)} files to {repo_url}")
    return {**report, "repo_id": full_id, "dry_run": False, "url": str(repo_url), "commit_url": url}



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", help="a folder written by `hf-attn export`")
    parser.add_argument("--repo-id", required=True, help="NAME or YOUR_NAME/NAME on the Hub")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--revision", default=None, help="branch to push to (created if missing)")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the files, sizes and card metadata; upload nothing"
    )


def run(args: argparse.Namespace) -> int:
    push(args.out_dir, args.repo_id, private=args.private, revision=args.revision, dry_run=args.dry_run)
    return 0


__all__ = ["HUB_LICENSES", "HubError", "UPLOAD_IGNORE", "add_arguments", "check_export_folder", "check_license",
           "check_repo_id", "folder_files", "human_size", "push", "run"]
