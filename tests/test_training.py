"""hf_attn.training: losses, data conversion, tokenizer, optimizers, checkpoints, and the three recipes end to end
on small fixtures (no network; ../shared/data is not needed)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ACTIONS as _ACTIONS
from conftest import SUBJECTS as _SUBJECTS
from conftest import write_jsonl_gz as _write_jsonl_gz

from hf_attn.training import checkpoint as ckpt
from hf_attn.training import data as D
from hf_attn.training.embed import pairs as P
from hf_attn.training.embed.losses import EmbedderLoss, InfoNCELoss, info_nce

REPO = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------------------------

def _tiny_embed_args(data_dir: Path, out: Path, **kw):
    from hf_attn.training.embed.args import EmbedTrainingArguments

    base = dict(model="gqa_embedder", data_dir=str(data_dir), dataset=["nli/train.jsonl.gz", "para/train.jsonl.gz"],
                output_dir=str(out), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=1, intermediate_size=64, embedding_size=32, vocab_size=300, max_seq_length=24,
                batch_size=16, grad_accum_steps=2, max_steps=6, eval_steps=3, save_steps=3, logging_steps=3,
                learning_rate=2e-3, warmup_steps=1, seed=7)
    base.update(kw)
    return EmbedTrainingArguments(**base)


# ---------------------------------------------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------------------------------------------


def test_info_nce_hand_computed():
    # a_i == p_i, orthogonal across i: logits = [[1, 0], [0, 1]] / tau
    a = torch.eye(2)
    tau = 0.5
    expected = -math.log(math.exp(2.0) / (math.exp(2.0) + math.exp(0.0)))
    assert info_nce(a, a.clone(), temperature=tau, symmetric=False).item() == pytest.approx(expected, rel=1e-6)
    assert info_nce(a, a.clone(), temperature=tau).item() == pytest.approx(expected, rel=1e-6)
    # a hard negative equal to positive 0 is an extra column: logit 2 for anchor 0, 0 for anchor 1
    neg = torch.tensor([[1.0, 0.0]])
    row0 = -math.log(math.exp(2) / (2 * math.exp(2) + 1))
    row1 = -math.log(math.exp(2) / (math.exp(2) + 2))
    a2p = (row0 + row1) / 2
    assert info_nce(a, a, neg, tau, symmetric=False).item() == pytest.approx(a2p, rel=1e-6)
    assert info_nce(a, a, neg, tau, symmetric=True).item() == pytest.approx((a2p + expected) / 2, rel=1e-6)
    # scale invariance (cosine similarity)
    assert info_nce(3 * a, a, temperature=tau).item() == pytest.approx(expected, rel=1e-6)


def test_info_nce_asymmetric_directions_differ():
    torch.manual_seed(0)
    a, p = torch.randn(4, 8), torch.randn(4, 8)
    one_way = info_nce(a, p, temperature=0.1, symmetric=False)
    reverse = info_nce(p, a, temperature=0.1, symmetric=False)
    assert info_nce(a, p, temperature=0.1).item() == pytest.approx((one_way + reverse).item() / 2, rel=1e-6)


def test_learnable_temperature_is_clamped_and_trained():
    loss = InfoNCELoss(temperature=0.05, min_temperature=0.01, max_temperature=1.0)
    assert loss.temperature.item() == pytest.approx(0.05)
    torch.manual_seed(0)
    a = torch.randn(4, 8)
    loss(a, a + 0.1 * torch.randn(4, 8)).backward()
    assert loss.log_temperature.grad is not None and loss.log_temperature.grad.abs() > 0
    with torch.no_grad():
        loss.log_temperature.fill_(math.log(1e-5))
    assert loss.temperature.item() == pytest.approx(0.01)
    with torch.no_grad():
        loss.log_temperature.fill_(5.0)
    assert loss.temperature.item() == pytest.approx(1.0)
    with pytest.raises(ValueError):
        InfoNCELoss(temperature=2.0, max_temperature=1.0)


def test_embedder_loss_splits_anchor_positive_negative():
    torch.manual_seed(0)
    emb = torch.randn(7, 8)  # 3 anchors, 3 positives, 1 negative
    fn = EmbedderLoss(InfoNCELoss(0.1, learnable=False))
    loss, parts = fn(emb, 3)
    assert loss.item() == pytest.approx(info_nce(emb[:3], emb[3:6], emb[6:], 0.1).item(), rel=1e-6)
    assert "contrastive" in parts


# ---------------------------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------------------------


def test_nli_rows_become_pairs_by_label():
    rows = [
        {"premise": "P1", "hypothesis": "E1", "label": "entailment"},
        {"premise": "P1", "hypothesis": "C1", "label": "contradiction"},
        {"premise": "P1", "hypothesis": "N1", "label": "neutral"},
        {"premise": "P2", "hypothesis": "E2", "label": "entailment"},
        {"premise": "P3", "hypothesis": "X3", "label": "not_entailment"},  # RTE/QNLI: not a contradiction
        {"premise": "P4", "hypothesis": "E4", "label": 0},  # all-nli pair-class / GLUE ints
        {"premise": "P4", "hypothesis": "C4", "label": 2},
        {"premise": "P4", "hypothesis": "N4", "label": 1},
    ]
    pairs = P.nli_to_pairs(rows)
    assert pairs == [P.PairExample("P1", "E1", "C1"), P.PairExample("P2", "E2", None), P.PairExample("P4", "E4", "C4")]


def test_paraphrase_and_pair_layouts():
    import datasets

    para = datasets.Dataset.from_list([{"sentence1": "a", "sentence2": "b", "label": 1},
                                       {"sentence1": "c", "sentence2": "d", "label": 0},
                                       {"sentence1": "e", "sentence2": "f", "label": None}])
    assert P.rows_to_pairs(para) == [P.PairExample("a", "b")]
    trip = datasets.Dataset.from_list([{"anchor": "a", "positive": "b", "negative": "c"}])
    assert P.rows_to_pairs(trip) == [P.PairExample("a", "b", "c")]


def test_unsupervised_pairs():
    text = ["First sentence is here today. Second sentence follows it now. Third one ends the story here."]
    drop = P.unsupervised_pairs(text, "dropout", seed=0)
    assert all(p.anchor == p.positive for p in drop) and len(drop) == 3
    nb = P.unsupervised_pairs(text, "neighbour", seed=0)
    assert len(nb) == 2 and all(p.anchor != p.positive for p in nb)


def test_missing_columns_error_names_found_and_expected(tmp_path):
    path = _write_jsonl_gz(tmp_path / "bad.jsonl.gz", [{"question": "q", "answer": "a"}])
    ds = D.load_rows(path)
    with pytest.raises(D.DataError) as e:
        P.rows_to_pairs(ds, str(path))
    msg = str(e.value)
    assert "answer" in msg and "question" in msg and "premise" in msg and "anchor" in msg
    with pytest.raises(D.DataError, match=r"missing column\(s\) \['text'\]; found columns \['question', 'answer'\]"):
        D.require_columns(ds.column_names, ["text"], str(path))


def test_empty_inputs_fail_before_training(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(D.DataError, match="empty"):
        D.load_rows(empty)
    with pytest.raises(D.DataError, match="empty"):
        P.PairDataset([])
    from hf_attn.training.lm.data import load_byte_splits

    (tmp_path / "e.txt").write_text("")
    with pytest.raises(D.DataError, match="empty"):
        load_byte_splits(tmp_path / "e.txt")
    from hf_attn.training.embed import train_embedder

    with pytest.raises(D.DataError, match="empty"):
        train_embedder(_tiny_embed_args(tmp_path, tmp_path / "out", dataset=[str(empty)]))


# ---------------------------------------------------------------------------------------------------------------
# tokenizer, optimizers
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_tokenizer_train_save_reload_and_cache(tmp_path, kind):
    from transformers import AutoTokenizer

    from hf_attn.training.tokenizer import get_or_train_tokenizer

    texts = [f"{s} {a} today." for s in _SUBJECTS for a in _ACTIONS]
    logs = []
    tok = get_or_train_tokenizer(texts, tmp_path / "tok", kind=kind, vocab_size=400, log=logs.append)
    assert "training" in logs[-1]
    enc = tok("a man is riding a bike")["input_ids"]
    assert enc[0] == tok.cls_token_id and enc[-1] == tok.sep_token_id
    assert tok.pad_token == "[PAD]" and len(tok) <= 400
    reloaded = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    assert reloaded("a man is riding a bike")["input_ids"] == enc
    again = get_or_train_tokenizer(texts, tmp_path / "tok", kind=kind, vocab_size=400, log=logs.append)
    assert "reusing" in logs[-1] and again("a man is riding a bike")["input_ids"] == enc
    get_or_train_tokenizer(texts[:50], tmp_path / "tok", kind=kind, vocab_size=400, log=logs.append)
    assert "training" in logs[-1]  # different text -> retrained


def test_muon_param_grouping_and_combined_optimizer():
    import hf_attn
    from hf_attn.training.optim import MuonAdamW, build_optimizer, build_scheduler, param_groups

    cfg = hf_attn.GQAEmbedderConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                    num_key_value_heads=1, intermediate_size=32, embedding_size=8)
    model = hf_attn.GQAEmbedderModel(cfg)
    loss_fn = InfoNCELoss()
    groups = param_groups(torch.nn.ModuleList([model, loss_fn]), 0.01, muon=True)
    muon = {n for n, _ in groups["muon"]}
    adamw = {n for n, _ in groups["decay"] + groups["no_decay"]}
    assert muon and all(p.ndim == 2 for _, p in groups["muon"])
    assert not any("embed" in n or "projection" in n or "norm" in n or "temperature" in n for n in muon)
    assert any("embed_tokens" in n for n in adamw) and any("projection" in n for n in adamw)
    assert any("log_temperature" in n for n, _ in groups["no_decay"])
    assert all(p.ndim < 2 for _, p in groups["no_decay"] if "embed" not in _)
    n_params = sum(1 for p in torch.nn.ModuleList([model, loss_fn]).parameters())
    assert len(muon) + len(adamw) == n_params

    opt = build_optimizer([model, loss_fn], "muon", lr=1e-3, muon_lr=0.02)
    assert isinstance(opt, MuonAdamW)
    sched = build_scheduler(opt, 2, 10)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ids = torch.randint(0, 50, (4, 6))
    for _ in range(2):
        emb = model(input_ids=ids, attention_mask=torch.ones_like(ids)).pooler_output
        loss_fn(emb[:2], emb[2:]).backward()
        opt.step()
        sched.step()
        opt.zero_grad()
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad and "norm" not in n]
    assert all(not torch.equal(before[n], p) for n, p in trained)
    # the scheduler reaches Muon's group
    assert opt.param_groups[0]["lr"] == pytest.approx(0.02 * sched.lr_lambdas[0](2))
    sd = opt.state_dict()
    opt2 = build_optimizer([model, loss_fn], "muon", lr=1e-3, muon_lr=0.02)
    opt2.load_state_dict(sd)
    assert opt2.param_groups[0] is opt2.muon.param_groups[0]
    assert len(opt2.state) == len(opt.state) > 0


def test_warmup_then_decay():
    from hf_attn.training.optim import warmup_decay_lambda

    f = warmup_decay_lambda(4, 12)
    assert [round(f(s), 3) for s in (0, 3, 4, 8, 12)] == [0.25, 1.0, 1.0, 0.5, 0.0]


# ---------------------------------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------------------------------


def test_atomic_checkpoint_survives_crash_mid_save(tmp_path):
    from accelerate import Accelerator

    acc = Accelerator(cpu=True)
    model = acc.prepare(torch.nn.Linear(3, 3))
    first = ckpt.save_checkpoint(acc, tmp_path, 1, {"step": 1})
    real = acc.save_state

    def crashing_save(path, *a, **k):
        real(path, *a, **k)
        raise KeyboardInterrupt("killed mid-save")

    acc.save_state = crashing_save
    with torch.no_grad():
        model.weight.add_(1.0)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(acc, tmp_path, 2, {"step": 2})
    acc.save_state = real
    assert ckpt.latest_checkpoint(tmp_path) == first  # the half-written step 2 is ignored
    assert ckpt.read_state(first) == {"step": 1}
    assert (tmp_path / ".tmp-checkpoint-2").exists()
    third = ckpt.save_checkpoint(acc, tmp_path, 3, {"step": 3}, keep=2)
    assert not (tmp_path / ".tmp-checkpoint-2").exists()  # stale temp folder cleaned
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["checkpoint-1", "checkpoint-3"]
    assert ckpt.resolve_resume("latest", tmp_path) == third


# ---------------------------------------------------------------------------------------------------------------
# train_embed end to end
# ---------------------------------------------------------------------------------------------------------------


def test_train_embed_checkpoints_resumes_identically_and_saves_best(data_dir, tmp_path):
    from sentence_transformers import SentenceTransformer

    from hf_attn.training.embed import train_embedder

    full = train_embedder(_tiny_embed_args(data_dir, tmp_path / "run"))
    assert full["status"] == "completed" and full["steps"] == 6
    for key in ("output_dir", "best_model_dir", "params", "train_time_s", "samples_per_s", "best_dev_spearman"):
        assert full[key] is not None
    assert -1.0 <= full["best_dev_spearman"] <= 1.0
    assert [e["step"] for e in full["evals"]] == [3, 6]
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "run" / "checkpoints")] == ["checkpoint-3", "checkpoint-6"]
    best = Path(full["best_model_dir"])
    assert (best / "config.json").exists() and (best / "model.safetensors").exists()
    assert (best / "tokenizer.json").exists()
    emb = SentenceTransformer(str(best), trust_remote_code=True, device="cpu").encode(["a man plays the guitar"])
    assert emb.shape == (1, 32)

    # resume from step 3 in a fresh output folder: the same data order and the same losses for steps 4..6
    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    import shutil

    shutil.copytree(tmp_path / "run" / "checkpoints" / "checkpoint-3", resumed_dir / "checkpoints" / "checkpoint-3")
    shutil.copytree(tmp_path / "run" / "tokenizer", resumed_dir / "tokenizer")
    res = train_embedder(_tiny_embed_args(data_dir, resumed_dir, resume_from_checkpoint="latest"))
    assert res["steps"] == 6
    tail_full = [(h["step"], h["data"], round(h["loss"], 5)) for h in full["history"][3:]]
    tail_res = [(h["step"], h["data"], round(h["loss"], 5)) for h in res["history"][3:]]
    assert tail_res == tail_full


def test_non_finite_loss_stops_and_keeps_last_checkpoint(data_dir, tmp_path, monkeypatch):
    from hf_attn.training.embed import losses, train_embedder

    real = losses.InfoNCELoss.forward
    calls = {"n": 0}

    def poisoned(self, *a, **k):
        calls["n"] += 1
        out = real(self, *a, **k)
        return out * float("nan") if calls["n"] > 4 else out  # step 5 (one loss per step: gradient caching)

    monkeypatch.setattr(losses.InfoNCELoss, "forward", poisoned)
    out = tmp_path / "nan"
    res = train_embedder(_tiny_embed_args(data_dir, out, save_steps=2, eval_steps=0))
    assert res["status"] == "non_finite_loss" and res["steps"] == 4
    assert "non-finite loss" in res["message"] and "checkpoint-4" in res["message"]
    ckpts = ckpt.list_checkpoints(out / "checkpoints")
    assert [p.name for p in ckpts] == ["checkpoint-2", "checkpoint-4"]
    assert ckpt.read_state(ckpts[-1])["step"] == 4
    from safetensors.torch import load_file

    weights = load_file(str(ckpts[-1] / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in weights.values())


def test_train_embed_tan_muon_with_unsupervised_pairs(data_dir, tmp_path):
    from hf_attn.training.embed import train_embedder

    res = train_embedder(
        _tiny_embed_args(
            data_dir,
            tmp_path / "tan",
            model="tan",
            optimizer="muon",
            num_key_value_heads=None,
            unsupervised="neighbour",
            unsupervised_source="text.txt",
            unsupervised_samples=100,
            max_steps=2,
            eval_steps=0,
            save_steps=0,
            tokenizer_type="bpe",
        )
    )
    assert res["status"] == "completed" and res["steps"] == 2 and res["optimizer"] == "muon"
    assert math.isfinite(res["final_loss"])


def test_distillation_from_a_sentence_transformers_teacher(data_dir, tmp_path):
    from hf_attn.training.embed import train_embedder
    from hf_attn.training.embed.teacher import resolve_teacher

    # any sentence-transformers folder is a teacher; a tiny model trained here stands in for all-MiniLM-L6-v2
    teacher = train_embedder(
        _tiny_embed_args(data_dir, tmp_path / "teacher", max_steps=1, eval_steps=0, save_steps=0, embedding_size=24)
    )
    res = train_embedder(
        _tiny_embed_args(
            data_dir,
            tmp_path / "student",
            teacher=teacher["best_model_dir"],
            unsupervised_source="text.txt",
            unsupervised_samples=64,
            max_steps=2,
            eval_steps=0,
            save_steps=0,
            distill_weight=2.0,
        )
    )
    assert res["status"] == "completed"
    assert all("distill" in h and math.isfinite(h["distill"]) for h in res["history"])
    assert resolve_teacher(str(tmp_path)) == str(tmp_path)


def test_similarity_distillation_is_the_mse_of_cosine_matrices():
    from hf_attn.training.embed.losses import SimilarityDistillationLoss

    torch.manual_seed(0)
    s, t = torch.randn(5, 8, requires_grad=True), torch.randn(5, 12)
    loss = SimilarityDistillationLoss()(s, t)

    def cos(x):
        return torch.nn.functional.cosine_similarity(x[:, None], x[None], dim=-1)

    expected = sum((cos(s)[i, j] - cos(t)[i, j]) ** 2 for i in range(5) for j in range(5) if i != j) / 5
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    # any width, any rotation and scale of the teacher's geometry is a perfect student
    q, _ = torch.linalg.qr(torch.randn(12, 12))
    assert SimilarityDistillationLoss()(3.0 * t @ q, t).item() == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="different numbers of texts"):
        SimilarityDistillationLoss()(s[:4], t)


def test_init_from_teacher_input_table_starts_as_its_static_model(data_dir, tmp_path):

    from sentence_transformers import SentenceTransformer

    from hf_attn import GQAEmbedderConfig, GQAEmbedderModel
    from hf_attn.training.embed import train_embedder
    from hf_attn.training.embed.teacher import init_from_teacher, teacher_input_embeddings
    from hf_attn.training.tokenizer import load_tokenizer

    teacher_dir = train_embedder(
        _tiny_embed_args(
            data_dir, tmp_path / "teacher", max_steps=1, eval_steps=0, save_steps=0, hidden_size=24, num_hidden_layers=1
        )
    )["best_model_dir"]
    teacher = SentenceTransformer(teacher_dir, device="cpu", trust_remote_code=True)
    tok = load_tokenizer(teacher_dir)
    source = teacher[0].auto_model.get_input_embeddings().weight.detach()
    torch.testing.assert_close(teacher_input_embeddings(tok, teacher), source)
    student = GQAEmbedderModel(GQAEmbedderConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1,
                                                 num_attention_heads=2, num_key_value_heads=1, intermediate_size=64,
                                                 pad_token_id=tok.pad_token_id))
    logs = []
    init_from_teacher("input_embeddings", student, tok, teacher, logs.append)
    assert any("static start" in line for line in logs)
    enc = tok(["a man plays the guitar .", "two kids run"], padding=True, return_tensors="pt",
              return_token_type_ids=False)
    with torch.no_grad():
        out = student.eval()(**enc).pooler_output[:, :24]
    mask = enc["attention_mask"][:, :, None].float()
    expected = (source[enc["input_ids"]] * mask).sum(1)  # the mean of the teacher's input vectors, up to scale
    assert torch.nn.functional.cosine_similarity(out, expected).min().item() > 0.9999

    tok_other = load_tokenizer(teacher_dir)
    tok_other.add_tokens(["zzzunseen"])
    with pytest.raises(ValueError, match="tokenizer differs from the teacher"):
        teacher_input_embeddings(tok_other, teacher)


def test_similarity_distillation_run_with_teacher_initialised_embeddings(data_dir, tmp_path):
    from hf_attn.training.embed import train_embedder
    from hf_attn.training.embed.args import EmbedTrainingArguments, finalize_args

    teacher_dir = train_embedder(
        _tiny_embed_args(data_dir, tmp_path / "teacher", max_steps=1, eval_steps=0, save_steps=0)
    )["best_model_dir"]
    res = train_embedder(
        _tiny_embed_args(
            data_dir,
            tmp_path / "student",
            teacher=teacher_dir,
            tokenizer=teacher_dir,
            init_from_teacher=True,
            distill_target="similarity",
            unsupervised_source="text.txt",
            unsupervised_samples=64,
            max_steps=2,
            eval_steps=0,
            save_steps=0,
        )
    )
    assert res["status"] == "completed"
    distill = [h["distill"] for h in res["history"] if "distill" in h]
    assert distill and all(math.isfinite(d) and d >= 0 for d in distill)
    # the summary (and so the exported card) says how the model was trained
    assert (res["teacher"], res["distill_target"], res["init_from_teacher"]) == (teacher_dir, "similarity", True)
    with pytest.raises(ValueError, match="--init-from-teacher needs --teacher"):
        finalize_args(EmbedTrainingArguments(init_from_teacher=True))


def test_teacher_is_capped_to_the_student_length_and_encodes_duplicates_once(data_dir, tmp_path):
    from hf_attn.training.embed import train_embedder
    from hf_attn.training.embed.teacher import InStepTeacher

    teacher_dir = train_embedder(
        _tiny_embed_args(data_dir, tmp_path / "teacher", max_steps=1, eval_steps=0, save_steps=0)
    )["best_model_dir"]
    teacher = InStepTeacher(teacher_dir, "cpu", max_seq_length=8, batch_size=2)
    assert teacher.model.max_seq_length == 8
    texts = ["a dog runs in the park.", "the cat sleeps.", "a dog runs in the park.", "birds sing at dawn."]
    emb = teacher(texts)
    assert emb.shape[0] == 4 and torch.allclose(emb[0], emb[2])
    torch.testing.assert_close(emb[1], teacher(["the cat sleeps."])[0], atol=1e-5, rtol=1e-5)


def test_max_train_minutes_stops_like_a_finished_run(data_dir, tmp_path):
    from hf_attn.training.embed import train_embedder

    res = train_embedder(
        _tiny_embed_args(data_dir, tmp_path / "run", max_steps=50, eval_steps=0, save_steps=0, max_train_minutes=0.0)
    )
    assert res["status"] == "completed" and res["stopped_at_time_limit"]
    assert res["steps"] == 1 and res["best_step"] == 1 and res["best_model_dir"]


def test_arg_parser_yaml_and_quick(tmp_path):
    from hf_attn.training.embed.args import build_arg_parser, finalize_args, parse_args

    cfg = tmp_path / "c.yaml"
    cfg.write_text("batch_size: 7\ngrad-accum-steps: 3\noptimizer: muon\n")
    args = parse_args(
        [
            "--config",
            str(cfg),
            "--batch-size",
            "9",
            "--num_hidden_layers_list",
            "2",
            "4",
            "--hidden_size_list",
            "128",
            "256",
            "--no-symmetric-loss",
        ]
    )
    assert (args.batch_size, args.grad_accum_steps, args.optimizer) == (9, 3, "muon")
    assert args.num_hidden_layers_list == [2, 4] and args.symmetric_loss is False
    quick = finalize_args(parse_args(["--quick", "--data-dir", "x", "--batch-size", "5"]))
    assert quick.batch_size == 5 and quick.grad_accum_steps == 1 and quick.max_train_samples is not None
    assert "--mixed-precision" in build_arg_parser().format_help()
    t4 = parse_args(["--config", str(REPO / "recipes" / "configs" / "train_embed_t4.yaml")])
    assert (t4.batch_size, t4.grad_accum_steps, t4.mixed_precision, t4.num_epochs) == (32, 8, "fp16", 10)


# ---------------------------------------------------------------------------------------------------------------
# train_lm, compare_attention
# ---------------------------------------------------------------------------------------------------------------


def test_byte_splits(tmp_path):
    from hf_attn.training.lm.data import load_byte_splits

    p = tmp_path / "t.txt"
    p.write_bytes(bytes(range(256)) * 40)
    s = load_byte_splits(p)
    assert len(s["train"]) == int(0.9 * 10240) and sum(len(v) for v in s.values()) == 10240
    w = _write_jsonl_gz(tmp_path / "w.jsonl.gz", [{"text": "hello world"}, {"text": "second article"}])
    s = load_byte_splits(w)
    assert b"".join(bytes(v) for v in s.values()) == b"hello world\nsecond article\n"


def test_train_lm_quick_reports_everything(data_dir, tmp_path):
    from hf_attn.training.lm import train_lm
    from hf_attn.training.lm.args import LMTrainingArguments

    res = train_lm(
        LMTrainingArguments(
            quick=True,
            data=str(data_dir / "text.txt"),
            output_dir=str(tmp_path / "lm"),
            max_steps=4,
            eval_steps=2,
            save_steps=2,
            block_size=32,
            eval_batches=1,
            use_adaptive_attention=True,
            use_triangle_wave_masking=True,
        )
    )
    assert res["status"] == "completed" and res["steps"] == 4
    for k in (
        "val_loss",
        "val_bpc",
        "val_perplexity",
        "tokens_per_s",
        "peak_memory_mb",
        "attention_flops_ratio",
        "attention_entropy",
        "span_regularizer",
        "mean_span",
        "mean_period",
    ):
        assert res[k] is not None and math.isfinite(res[k]), k
    assert res["val_bpc"] == pytest.approx(res["val_loss"] / math.log(2))
    assert res["peak_memory_mb"] > 0 and 0 < res["attention_flops_ratio"] <= 1.0
    assert len(res["spans"]) == 2 and len(res["periods"][0]) == 4
    lines = (tmp_path / "lm" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2
    # best_model/ is the evaluation with the lowest validation loss, saved as a loadable transformers folder
    evals = [json.loads(line) for line in lines]
    best = min(evals, key=lambda e: e["loss"])
    assert res["best_step"] == best["step"] and res["best_val_bpc"] == pytest.approx(best["bpc"])
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(res["best_model_dir"]).eval()
    assert model.config.use_triangle_wave_masking and model.config.max_position_embeddings == 32
    ids = torch.randint(0, 256, (1, 16))
    assert torch.isfinite(model(ids).logits).all()
    if best["step"] == 4:  # the final weights are the best: the saved model is the one train_lm returns
        assert not (tmp_path / "lm" / ".tmp-best_model").exists()


def test_train_lm_push_failure_keeps_the_run_and_says_how_to_upload(data_dir, tmp_path, monkeypatch, capsys):
    import hf_attn.hub as hub
    from hf_attn.training.lm import train_lm
    from hf_attn.training.lm.args import LMTrainingArguments

    exported = {}

    def fake_export(best_dir, out_dir, **kwargs):
        exported.update(best_dir=str(best_dir), **kwargs)
        return best_dir

    def offline_push(out_dir, repo_id, **kwargs):
        raise hub.HubError("cannot reach huggingface.co: check your network, then retry.")

    monkeypatch.setattr(hub, "export", fake_export)
    monkeypatch.setattr(hub, "push", offline_push)
    res = train_lm(
        LMTrainingArguments(
            quick=True,
            data=str(data_dir / "text.txt"),
            output_dir=str(tmp_path / "lm"),
            max_steps=2,
            eval_steps=2,
            save_steps=0,
            block_size=32,
            eval_batches=1,
            push_to_hub="someone/tiny-lm",
        ),
        log_fn=print,
    )
    assert res["status"] == "completed" and res["hub"] == {
        "error": "cannot reach huggingface.co: check your network, then retry."
    }
    assert exported["best_dir"] == res["best_model_dir"]
    assert exported["eval_results"] == {"bpc": res["best_val_bpc"], "dataset": "text", "split": "validation"}
    assert "hf-attn push" in capsys.readouterr().out


def test_compare_attention_micro_matrix(data_dir, tmp_path):
    from hf_attn.training.lm.compare import CompareArguments, run_comparison

    res = run_comparison(
        CompareArguments(
            quick=True,
            data=str(data_dir / "text.txt"),
            output_dir=str(tmp_path / "cmp"),
            variants=["eager", "hf_linear", "gqa"],
            positions=["rope", "alibi"],
            max_steps=3,
            seq_len=32,
            batch_size=4,
            eval_batches=1,
            scaling_seq_lens=[16, 32],
        ),
        log=lambda *a: None,
    )
    rows = res["rows"]
    assert len(rows) == 6
    # hf_linear has no logits to add ALiBi to: that combination is refused by name, the others run.
    refused = [r for r in rows if r["error"]]
    assert [(r["variant"], r["position"]) for r in refused] == [("hf_linear", "alibi")]
    assert "UnsupportedFeatureError" in refused[0]["error"] and "distance_bias" in refused[0]["error"]
    rows = [r for r in rows if not r["error"]]
    for r in rows:
        assert math.isfinite(r["val_loss"]) and r["tokens_per_s"] > 0 and r["peak_memory_mb"] > 0
        assert 0 < r["attention_entropy"] <= math.log(32) + 1e-6
    out = tmp_path / "cmp"
    for name in ("results.csv", "results.md", "loss_curves.png", "scaling.csv", "scaling.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "loss_curves.png").read_bytes()[:4] == b"\x89PNG"
    md = (out / "results.md").read_text()
    assert "perplexity" in md and "attention entropy" in md and "| hf_linear | alibi |" in md
    assert len(res["scaling"]) == 6


# ---------------------------------------------------------------------------------------------------------------
# recipes as scripts
# ---------------------------------------------------------------------------------------------------------------


def _env():
    env = dict(
        os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1"
    )
    env["PYTHONPATH"] = str(REPO)
    return env


@pytest.mark.slow
def test_size_sweep_writes_one_table(data_dir, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "recipes" / "train_embed.py"),
            "--data-dir",
            str(data_dir),
            "--dataset",
            "nli/train.jsonl.gz",
            "--output-dir",
            str(tmp_path / "sweep"),
            "--num_hidden_layers_list",
            "1",
            "2",
            "--hidden_size_list",
            "16",
            "32",
            "--num-attention-heads",
            "2",
            "--num-key-value-heads",
            "1",
            "--vocab-size",
            "300",
            "--max-steps",
            "2",
            "--batch-size",
            "8",
            "--grad-accum-steps",
            "1",
            "--eval-steps",
            "0",
            "--save-steps",
            "0",
            "--max-seq-length",
            "16",
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (tmp_path / "sweep" / "sweep_results.md").read_text().splitlines()
    assert len(table) == 2 + 4
    assert (tmp_path / "sweep" / "L2_H32" / "best_model" / "config.json").exists()


def test_accelerate_launch_two_processes_agree(data_dir, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "ddp"
    # `accelerate launch --cpu` uses its simple launcher (one process unless mpirun is configured); the torchrun
    # launcher (--multi_gpu) starts two processes and the recipe selects gloo on a machine without GPUs.
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        str(REPO / "recipes" / "train_embed.py"),
        "--quick",
        "--data-dir",
        str(data_dir),
        "--dataset",
        "nli/train.jsonl.gz",
        "para/train.jsonl.gz",
        "--output-dir",
        str(out),
        "--max-steps",
        "4",
        "--batch-size",
        "8",
        "--vocab-size",
        "300",
        "--hidden-size",
        "32",
        "--intermediate-size",
        "64",
        "--embedding-size",
        "32",
        "--eval-steps",
        "2",
        "--save-steps",
        "4",
        "--max-seq-length",
        "24",
    ]
    proc = subprocess.run(
        cmd, env={**_env(), "HF_ATTN_DUMP_FINAL_WEIGHTS": "1"}, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_processes"] == 2 and summary["status"] == "completed" and summary["steps"] == 4
    ck = ckpt.latest_checkpoint(out / "checkpoints")
    assert (ck / "random_states_0.pkl").exists() and (ck / "random_states_1.pkl").exists()
    # each rank dumps its final weights (HF_ATTN_DUMP_FINAL_WEIGHTS): they must be identical
    w0 = load_file(str(out / "final_weights_rank0.safetensors"))
    w1 = load_file(str(out / "final_weights_rank1.safetensors"))
    assert w0.keys() == w1.keys() and all(torch.equal(w0[k], w1[k]) for k in w0)


def test_push_to_hub_failure_keeps_the_run_and_says_how_to_upload(data_dir, tmp_path, monkeypatch, capsys):
    import hf_attn.hub as hub
    from hf_attn.training.embed import train_embedder

    def fake_export(best_dir, out_dir, **kwargs):
        return best_dir

    def offline_push(out_dir, repo_id, **kwargs):
        raise hub.HubError("cannot reach huggingface.co: check your network, then retry.")

    monkeypatch.setattr(hub, "export", fake_export)
    monkeypatch.setattr(hub, "push", offline_push)
    res = train_embedder(
        _tiny_embed_args(
            data_dir, tmp_path / "run", max_steps=1, eval_steps=0, save_steps=0, push_to_hub="someone/tiny"
        )
    )
    assert res["status"] == "completed" and res["best_model_dir"]
    assert res["hub"] == {"error": "cannot reach huggingface.co: check your network, then retry."}
    assert "hf-attn push" in capsys.readouterr().out
