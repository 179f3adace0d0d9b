"""The README's Python tour runs as written (no claim in it that was not run)."""

import re

import torch
from conftest import REPO_ROOT


def test_readme_tour_snippet_runs():
    readme = (REPO_ROOT / "README.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    namespace: dict = {}
    exec(compile(snippet, "README.md", "exec"), namespace)
    embedding = namespace["embedding"]
    assert embedding.shape == (2, 384)
    torch.testing.assert_close(embedding.norm(dim=-1), torch.ones(2))
    assert namespace["model"].config._attn_implementation == "hf_blockwise"
