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


def test_readme_backend_table_is_the_backend_table():
    """The README's backend table is `backend_table_markdown()` of the one table, `hf_attn.attention.BACKENDS`."""
    from hf_attn.attention import backend_table_markdown

    readme = (REPO_ROOT / "README.md").read_text()
    found = re.search(r"<!-- backend-table:[^\n]*-->\n(.*?)\n<!-- /backend-table -->", readme, re.S)
    assert found, "README.md lost its backend-table markers"
    assert found.group(1) == backend_table_markdown(), (
        "README's backend table is out of date: paste hf_attn.attention.backend_table_markdown() between its markers")
