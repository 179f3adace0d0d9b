"""The educational attention trainer: the readable attention modules, the reversal trainer and `hf-attn toy`."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hf_attn.cli import main as cli_main
from hf_attn.toy import NOT_A_TTY_MESSAGE, AttentionTrainer, MultiHeadAttention, SelfAttention, ToyConfig

REPO_ROOT = Path(__file__).resolve().parent.parent
TINY = dict(seq_length=6, num_train=1000, num_val=200, epochs=4)


@pytest.fixture(autouse=True)
def one_thread():
    # The toy's matrices are tiny; on a busy 2-core machine thread hand-offs make training ~10x slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


# ---- the modules ----------------------------------------------------------------------------------------------


def test_weights_are_distributions_and_causal_mask_hides_the_future():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 16)
    for module in (SelfAttention(16), MultiHeadAttention(16, 4)):
        out, w = module(x)
        assert out.shape == x.shape and w.shape == (2, module.num_heads, 5, 5)
        torch.testing.assert_close(w.sum(-1), torch.ones(2, module.num_heads, 5))
        _, wc = module(x, causal=True)
        assert torch.all(wc.triu(diagonal=1) == 0)
        torch.testing.assert_close(wc.sum(-1), torch.ones(2, module.num_heads, 5))


def test_one_head_multihead_equals_selfattention():
    torch.manual_seed(0)
    single, multi = SelfAttention(12), MultiHeadAttention(12, 1)
    multi.load_state_dict(single.state_dict())
    x = torch.randn(3, 7, 12)
    torch.testing.assert_close(single(x)[0], multi(x)[0])
    torch.testing.assert_close(single(x)[1], multi(x)[1])


def test_multihead_matches_torch_reference():
    """Our step-by-step version computes the same function as torch's fused scaled_dot_product_attention."""
    torch.manual_seed(0)
    m = MultiHeadAttention(16, 4)
    x = torch.randn(2, 6, 16)
    out, _ = m(x, causal=True)
    q, k, v = (m._split_heads(p(x)) for p in (m.q_proj, m.k_proj, m.v_proj))
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    ref = m.out_proj(ref.transpose(1, 2).reshape(2, 6, 16))
    torch.testing.assert_close(out, ref)


def test_embed_dim_not_divisible_names_both():
    with pytest.raises(ValueError, match=r"embed_dim \(30\).*num_heads \(8\)"):
        MultiHeadAttention(30, 8)
    with pytest.raises(ValueError, match=r"embed_dim \(30\).*num_heads \(8\)"):
        AttentionTrainer(ToyConfig(embed_dim=30, num_heads=8))
    AttentionTrainer(ToyConfig(model="selfhead", embed_dim=30, num_heads=8, num_train=8, num_val=8))  # heads unused


# ---- training ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["multihead", "selfhead"])
def test_reversal_reaches_high_accuracy_in_seconds(model):
    start = time.perf_counter()
    trainer = AttentionTrainer(ToyConfig(model=model, **TINY))
    history = trainer.train(log=None)
    assert len(history) == TINY["epochs"]
    assert history[-1].val_accuracy >= 0.95, history[-1]
    assert history[-1].train_accuracy >= 0.95
    assert time.perf_counter() - start < 60
    if model == "selfhead":
        # Reversal: output position i must read input position T-1-i, an anti-diagonal attention map.
        _, _, weights = trainer.attention_maps(0)
        T = TINY["seq_length"]
        assert weights[0].argmax(-1).tolist() == list(range(T - 1, -1, -1))


def test_save_load_round_trip_gives_same_accuracy(tmp_path):
    trainer = AttentionTrainer(ToyConfig(**{**TINY, "epochs": 2}))
    trainer.train(log=None)
    before = trainer.evaluate()
    path = trainer.save(tmp_path / "toy.pt")
    restored = AttentionTrainer.load(path)
    assert restored.config == trainer.config
    assert len(restored.history) == 2
    assert restored.evaluate() == before
    for a, b in zip(trainer.model.state_dict().values(), restored.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_heatmaps_one_png_per_head(tmp_path):
    trainer = AttentionTrainer(ToyConfig(num_heads=4, embed_dim=32, **{**TINY, "epochs": 1}))
    trainer.train(log=None)
    paths = trainer.plot_attention(tmp_path / "maps")
    assert [p.name for p in paths] == [f"attention_head_{h}.png" for h in range(4)]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---- command line ---------------------------------------------------------------------------------------------


def test_cli_train_save_then_load(tmp_path, capsys):
    save = tmp_path / "toy.pt"
    rc = cli_main(["toy", "--model", "selfhead", "--embed_dim", "32", "--seq_length", "6", "--epochs", "3",
                   "--save_path", str(save), "--plot-dir", str(tmp_path / "maps"), "--device", "cpu"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "epoch 3/3" in out and "train loss" in out and "val loss" in out
    trained_line = [line for line in out.splitlines() if line.startswith("validation accuracy")][0]
    assert save.is_file() and (tmp_path / "maps" / "attention_head_0.png").is_file()

    rc = cli_main(["toy", "--load", str(save), "--plot-dir", str(tmp_path / "maps2")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "loaded" in out and trained_line in out  # same accuracy after the round trip
    assert (tmp_path / "maps2" / "attention_head_0.png").is_file()


def test_cli_clear_errors(tmp_path, capsys):
    assert cli_main(["toy", "--embed_dim", "30", "--num_heads", "8"]) == 2
    err = capsys.readouterr().err
    assert "embed_dim (30)" in err and "num_heads (8)" in err and "Traceback" not in err
    assert cli_main(["toy", "--load", str(tmp_path / "missing.pt")]) == 2
    assert "no saved toy model" in capsys.readouterr().err


def test_interactive_without_a_tty_fails_fast():
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "hf_attn.cli", "toy", "--interactive"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120, env=_env(),
    )
    assert proc.returncode == 2
    assert NOT_A_TTY_MESSAGE in proc.stderr
    assert "Traceback" not in proc.stderr
    assert time.perf_counter() - start < 120


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_interactive_through_a_pseudo_terminal(tmp_path):
    """Accept every default but one (embed_dim 32) by typing into a pseudo-terminal."""
    master, slave = os.openpty()
    cmd = [sys.executable, "-m", "hf_attn.cli", "toy", "--interactive", "--seq_length", "6", "--epochs", "1",
           "--plot-dir", str(tmp_path / "maps"), "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, env=_env(), cwd=tmp_path, close_fds=True)
    os.close(slave)
    answers = {"embed_dim": "32"}
    transcript = ""
    answered = 0
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    chunk = os.read(master, 4096).decode(errors="replace")
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                transcript += chunk
            # Answer each new prompt (they end in "]: ") as it appears.
            prompts = transcript.count("]: ")
            while answered < prompts:
                name = transcript.split("]: ")[answered].rsplit("\n", 1)[-1].split(" - ")[0].strip()
                os.write(master, (answers.get(name, "") + "\n").encode())
                answered += 1
            if proc.poll() is not None and not ready:
                break
        rc = proc.wait(timeout=max(1, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert rc == 0, transcript
    for name in ("model", "embed_dim", "num_heads", "learning_rate", "batch_size", "seq_length", "epochs", "save_path"):
        assert f"{name} - " in transcript, transcript
    assert "[multihead]" in transcript and "[64]" in transcript and "[6]" in transcript  # defaults shown
    assert "embed_dim 32, num_heads 8" in transcript  # the override took effect, the rest kept their defaults
    assert "validation accuracy" in transcript
    assert len(list((tmp_path / "maps").glob("attention_head_*.png"))) == 8
