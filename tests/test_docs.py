"""The README is a short front door, and the documentation site builds without a broken link.

* README.md has at most 300 lines and holds the one install command and the one test command
  (`.ci/run` runs exactly those two).
* ``mkdocs build --strict`` (mkdocs.yml: every page in the nav, no broken link) exits 0 and reports no
  link to a missing anchor.
* Every relative link in README.md names a file or folder that exists.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MAX_README_LINES = 300
INSTALL = "pip install -r requirements.txt"
TEST = "pytest"

# [text](target) and [text](target "title"); images too. Reference-style links are not used.
_LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def _code_blocks(text: str) -> list[str]:
    return re.findall(r"```[^\n]*\n(.*?)```", text, flags=re.S)


def test_readme_is_short_and_has_the_install_and_test_commands():
    text = README.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; at most {MAX_README_LINES}"
    commands = [line.split("#", 1)[0].strip() for block in _code_blocks(text) for line in block.splitlines()]
    assert INSTALL in commands, f"README.md must show the install command `{INSTALL}` in a code block"
    assert TEST in commands, f"README.md must show the test command `{TEST}` in a code block"


def test_ci_runs_the_readme_commands():
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    lines = [line.strip() for line in ci.splitlines()]
    assert INSTALL in lines and TEST in lines, ".ci/run must run exactly the README's install and test commands"


def test_mkdocs_build_strict(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, (f"mkdocs build --strict failed (mkdocs-material comes with pip install -r "
                                 f"requirements.txt):\n{out.stdout}\n{out.stderr}")
    assert (tmp_path / "site" / "index.html").is_file()
    # MkDocs reports a link to a missing anchor only at INFO level, even under --strict; the config
    # keeps MkDocs' own `validation:` settings out because Zensical reads that key differently.
    bad = [line for line in (out.stdout + out.stderr).splitlines() if "contains a link" in line]
    assert not bad, "broken links or anchors in docs/:\n" + "\n".join(bad)


def _nav_pages(nav) -> list[str]:
    pages = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        pages += _nav_pages(value) if isinstance(value, list) else [value]
    return pages


def test_every_docs_page_is_in_the_nav():
    import yaml

    config = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))
    in_nav = _nav_pages(config["nav"])
    on_disk = sorted(p.relative_to(REPO / "docs").as_posix() for p in (REPO / "docs").rglob("*.md"))
    assert sorted(in_nav) == on_disk, f"nav {sorted(in_nav)} != docs/ {on_disk}"
    assert config["plugins"] == ["search"], "no plugins beyond search (the site must also build with Zensical)"


def _relative_targets(text: str) -> list[str]:
    targets = []
    for target in _LINK.findall(text):
        parts = urlsplit(target)
        if parts.scheme or parts.netloc or target.startswith("#") or target.startswith("mailto:"):
            continue
        targets.append(unquote(parts.path))
    return targets


def test_readme_relative_links_exist():
    text = README.read_text(encoding="utf-8")
    targets = _relative_targets(text)
    assert targets, "README.md links into the documentation (docs/...)"
    missing = [t for t in targets if not (REPO / t).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


def test_relative_link_parser():
    text = '[a](docs/x.md) [b](docs/y.md#part) [c](https://e.org/z.md) [d](#local) ![i](img.png "t")'
    assert _relative_targets(text) == ["docs/x.md", "docs/y.md", "img.png"]
