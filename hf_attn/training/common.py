"""What the training loops share: the run's Accelerator and trackers, the finite-loss check, the progress bar, the
record of how a run went, and its summary file."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .args import UsageError


def use_cpu(flag: bool) -> bool:
    """CPU when asked, or when launched as several processes (torchrun / ``accelerate launch --multi_gpu``) on a
    machine without an accelerator: Accelerate then uses gloo (MULTI_CPU) only if told ``cpu=True``."""
    if flag:
        return True
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return world > 1 and not torch.cuda.is_available()


# What Accelerate, torchrun and MPI set for the size of a multi-process run.
_WORLD_SIZE_VARS = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def check_launch(env=None) -> None:
    """Stop a run that asked for several processes but got one: ``accelerate launch --cpu --num_processes N`` uses
    Accelerate's simple launcher, which starts ONE process (it spawns more only through mpirun, given
    ``--mpirun_hostfile``); it sets MASTER_ADDR for the N processes it never starts, and no world size."""
    env = os.environ if env is None else env
    if env.get("ACCELERATE_USE_CPU", "").lower() == "true" and "MASTER_ADDR" in env and not any(
        v in env for v in _WORLD_SIZE_VARS
    ):
        raise UsageError(
            "`accelerate launch --cpu --num_processes N` starts only one process (Accelerate's --cpu launcher needs "
            "mpirun for more); launch with `accelerate launch --multi_gpu --num_processes N ...` instead (on a "
            "machine without GPUs the recipe runs on CPU with gloo), or `torchrun --nproc_per_node N ...`"
        )


class _DeclaredTiesFilter(logging.Filter):
    """Drops Accelerate's "Removed shared tensor {...} while saving" when every name is a tie the model declares
    (``_tied_weights_keys``): ``from_pretrained`` and ``load_state`` restore those, so the line is noise."""

    def __init__(self, tied: set[str]):
        super().__init__()
        self.tied = tied

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "Removed shared tensor" not in message:  # Accelerate may prefix "[RANK n] "
            return True
        names = set(re.findall(r"'([^']+)'", message.split("Removed shared tensor")[1].split(" while saving")[0]))
        return not names or not names <= self.tied


def quiet_declared_tied_weights(model) -> None:
    """Silence Accelerate's save-time notice about `model`'s declared tied weights (other shared tensors still warn)."""
    tied = set(getattr(model, "_tied_weights_keys", None) or ())
    if tied:
        logging.getLogger("accelerate.utils.other").addFilter(_DeclaredTiesFilter(tied))


def check_run_options(report_to: str, mixed_precision: str, cpu: bool) -> None:
    """What a run's Accelerator could not honour, refused before anything is created: a ``--report-to`` tracker
    that is not installed (Accelerate would skip it silently), ``--mixed-precision fp16`` without a CUDA GPU, a
    multi-process launch that started one process (``check_launch``)."""
    from .trackers import require_tracker

    require_tracker(report_to)
    check_launch()
    if mixed_precision == "fp16" and (use_cpu(cpu) or not torch.cuda.is_available()):
        raise UsageError("--mixed-precision fp16: fp16 autocast needs a CUDA GPU and this run is on the CPU (use "
                         "--mixed-precision bf16 on a CPU, or no)")


def make_accelerator(mixed_precision: str, output_dir, cpu: bool, report_to: str, **kwargs):
    """The run's ``Accelerator`` (the options checked by ``check_run_options``); ``kwargs`` go to the constructor."""
    from accelerate import Accelerator

    return Accelerator(mixed_precision=mixed_precision, project_dir=str(output_dir), cpu=use_cpu(cpu),
                       log_with=None if report_to == "none" else report_to, **kwargs)


def start_trackers(accelerator, run_name: str, config: dict) -> None:
    """``accelerator.init_trackers`` with ``config`` (the run's options, ``args.to_flat_dict``); nothing when the
    Accelerator has no tracker (``--report-to none``)."""
    if accelerator.log_with:
        accelerator.init_trackers(run_name, config=config)


class NonFiniteLoss(Exception):
    """The loss is NaN or infinite on some process; raised before the update, so the weights stay finite."""


def check_finite(accelerator, loss: torch.Tensor, step: int | None = None) -> None:
    """Raise ``NonFiniteLoss`` on every process when the loss is not finite on any of them (all stop together)."""
    bad = (~torch.isfinite(loss.detach())).float().reshape(1)  # stays on the device: one host read below
    if accelerator.num_processes > 1:  # the collective only where there is another process to agree with
        bad = accelerator.reduce(bad, reduction="sum")
    if bad.item() > 0:
        raise NonFiniteLoss(f"non-finite loss ({loss.item()})" + (f" at step {step}" if step is not None else ""))


def progress_bar(accelerator, total: int, initial: int, desc: str):
    """A tqdm bar over optimizer steps, shown by the local main process only."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not accelerator.is_local_main_process, desc=desc,
                dynamic_ncols=True)


@dataclass
class RunRecord:
    """How a run is going, beside the ``state`` its checkpoints carry: its status, the time and the samples (or
    tokens) of its training steps (evaluation and checkpointing excluded), its last checkpoint."""

    status: str = "completed"  # or "non_finite_loss"
    message: str | None = None
    last_checkpoint: str | None = None
    samples: int = 0
    train_time: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    def add_step(self, samples: int, seconds: float) -> None:
        self.samples += samples
        self.train_time += seconds

    def stop(self, status: str, message: str) -> None:
        self.status, self.message = status, message

    @property
    def samples_per_s(self) -> float:
        return self.samples / max(self.train_time, 1e-9)

    @property
    def elapsed(self) -> float:
        """Wall-clock seconds since the run started."""
        return time.perf_counter() - self.started

    def out_of_time(self, minutes: float | None) -> bool:
        """Whether a wall-clock limit of ``minutes`` (None: no limit) has passed."""
        return minutes is not None and self.elapsed > 60 * minutes


def write_summary(accelerator, output_dir: str | Path, summary: dict) -> None:
    """``summary.json`` in the output folder, written by the main process."""
    if accelerator.is_main_process:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        (Path(output_dir) / "summary.json").write_text(json.dumps(summary, indent=1))


def json_copy(state: dict) -> dict:
    """A deep copy of a run state through JSON (what a checkpoint stores)."""
    return json.loads(json.dumps(state))


__all__ = ["NonFiniteLoss", "RunRecord", "check_finite", "check_launch", "check_run_options", "json_copy",
           "make_accelerator", "progress_bar", "quiet_declared_tied_weights", "start_trackers", "use_cpu",
           "write_summary"]
