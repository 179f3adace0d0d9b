"""``hf-attn push``: upload a folder written by ``hf-attn export`` to the Hugging Face Hub.

`push` is ``HfApi.create_repo`` + ``HfApi.upload_folder``. Every failure a user can fix (not logged in, no network,
offline mode, a repo owned by someone else) becomes a `HubError` with one line saying what to do; the CLI prints
that line, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from .model_cards import set_model_id

# Files an upload leaves out (editor/OS litter and caches; hidden files are never part of an export).
UPLOAD_IGNORE = [".*", "**/.*", "__pycache__", "**/__pycache__/**", "*.pyc"]


class HubError(RuntimeError):
    """A failure the user can fix; ``str(error)`` is one line saying what to do."""


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
    if not (out_dir / "config.json").is_file() or not (out_dir / "README.md").is_file():
        raise HubError(
            f"{out_dir} is not an exported model folder (no config.json / README.md): run `hf-attn export` first"
        )
    if not repo_id or repo_id.count("/") > 1 or repo_id.strip() != repo_id:
        raise HubError(f"invalid repo id {repo_id!r}: use NAME or YOUR_NAME/NAME")
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
    try:
        push(args.out_dir, args.repo_id, private=args.private, revision=args.revision, dry_run=args.dry_run)
    except HubError as exc:
        print(f"hf-attn push: {exc}", file=sys.stderr)
        return 1
    return 0


__all__ = ["HubError", "UPLOAD_IGNORE", "add_arguments", "folder_files", "human_size", "push", "run"]
