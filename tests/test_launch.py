"""`accelerate launch --cpu --num_processes N` starts one process: the recipes stop and name the launch that works.

(The launch that works, `--multi_gpu --num_processes 2` on a CPU machine, is
test_training.test_accelerate_launch_two_processes_agree: both ranks train and end with identical weights.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hf_attn.training.args import UsageError
from hf_attn.training.common import check_launch

REPO = Path(__file__).resolve().parent.parent


def test_one_process_of_a_multi_process_cpu_launch_is_refused():
    # what Accelerate's simple launcher sets for `--cpu --num_processes 2` (and no world size)
    simple_cpu = {"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    with pytest.raises(UsageError, match="--multi_gpu --num_processes N"):
        check_launch(simple_cpu)
    check_launch({**simple_cpu, "WORLD_SIZE": "2"})  # torchrun / --multi_gpu: really two processes
    check_launch({**simple_cpu, "PMI_SIZE": "2"})  # mpirun through --mpirun_hostfile
    check_launch({"ACCELERATE_USE_CPU": "True"})  # `accelerate launch --cpu` with one process
    check_launch({})  # python recipes/train_embed.py


@pytest.mark.slow
def test_accelerate_launch_cpu_two_processes_stops_with_the_flag_to_use(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", str(REPO / "recipes" / "train_embed.py"),
           "--output-dir", str(tmp_path / "out"), "--max-steps", "1"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "train_embed.py: error: `accelerate launch --cpu --num_processes N` starts only one process" in proc.stderr
    assert not (tmp_path / "out" / "summary.json").exists()
