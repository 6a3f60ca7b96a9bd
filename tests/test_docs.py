"""Every ```python block of the README and the docs site runs, page by page, in order."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_page_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = BLOCK.findall(page.read_text())
    if not blocks:
        pytest.skip(f"{page.name} has no python examples")
    if "ray" in page.stem:
        pytest.importorskip("ray")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REPLAYDB_DOCS_TEST", "1")
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    for i, code in enumerate(blocks):
        try:
            exec(compile(code, f"{page.name}[block {i}]", "exec"), namespace)
        except Exception as exc:  # pragma: no cover - the failure is the report
            raise AssertionError(
                f"{page.relative_to(ROOT)} block {i} failed: {exc!r}\n{code}"
            ) from exc
    assert os.getcwd() == str(tmp_path)
