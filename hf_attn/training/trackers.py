"""``--report-to``: check before a run starts that the tracker's package is installed.

Accelerate drops a tracker whose package is missing with a log line and trains on, so a run asked to report to
wandb would log nothing and say so only in passing. `require_tracker` turns that into an error at start, with the
command that installs the package.
"""

from __future__ import annotations

from .args import UsageError

# --report-to value -> (pip package that provides it, accelerate's availability check)
TRACKERS = {
    "tensorboard": ("tensorboard", "is_tensorboard_available"),
    "trackio": ("trackio", "is_trackio_available"),
    "wandb": ("wandb", "is_wandb_available"),
}


class TrackerNotInstalledError(UsageError):
    """``--report-to X`` where X's package is not installed."""


def tracker_available(name: str) -> bool:
    from accelerate.utils import imports

    return bool(getattr(imports, TRACKERS[name][1])())


def require_tracker(report_to: str | None) -> None:
    """Raise `TrackerNotInstalledError` (with the install command) unless `report_to` is "none" or installed."""
    if report_to in (None, "", "none"):
        return
    if report_to not in TRACKERS:
        raise UsageError(f"--report-to {report_to}: expected one of none, {', '.join(TRACKERS)}")
    if not tracker_available(report_to):
        package = TRACKERS[report_to][0]
        raise TrackerNotInstalledError(
            f"--report-to {report_to}: the {package} package is not installed; install it with "
            f"`pip install {package}` (or run with --report-to none)"
        )
