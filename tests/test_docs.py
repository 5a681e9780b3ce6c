"""The docs are product docs: every link and repository path in them resolves, and they carry no
work-log vocabulary or paths of one machine.

Checked files: README.md, CHANGELOG.md, docs/*.md, js/README.md, js/docs/*.md.

* Markdown links and images (inline `[text](target)` and reference `[id]: target`) outside code
  blocks must name a file or folder of the repository (resolved from the file's folder; `#anchors`
  and URLs with a scheme are not checked).
* Anything that looks like a repository path (`onestory/...`, `lab/...`, `docs/...`, also the old
  top-level `bench/`, `tools/` and `research/` folders), in prose, inline code or code blocks, must
  exist relative to the repository root. `<Placeholder>` and `*` match like a glob. A bare old folder
  name (`bench/` among the lab's sub-folders) is not a path from the root and is not checked.
* No line says "session" or names a path on one machine (`/work/`, `/root/`, `/home/`).
"""
from __future__ import annotations

import glob
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Folders of this repository a doc may point into, plus old top-level folders that no longer
# exist: naming one of those is a stale path and must fail.
OLD_PREFIXES = ("bench", "tools", "research")
PATH_PREFIXES = ("onestory", "nodes", "lab", "tests", "docs", "js", "example_workflows", ".ci") + OLD_PREFIXES
PATH_RE = re.compile(r"(?<![\w/.~$-])((?:%s)/(?:[\w.<>*-]+/?)*)"
                     % "|".join(re.escape(p) for p in PATH_PREFIXES))
LINK_RE = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REF_LINK_RE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s+<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.M)
FENCE_RE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
INLINE_CODE_RE = re.compile(r"(`+)(.+?)\1", re.S)
SESSION_RE = re.compile(r"\bsession\b", re.I)
MACHINE_RE = re.compile(r"(?<![\w.])/(?:work|root|home)/")


def doc_files() -> list[Path]:
    names = ["README.md", "CHANGELOG.md", "js/README.md"]
    files = [ROOT / n for n in names if (ROOT / n).exists()]
    files += sorted((ROOT / "docs").glob("*.md")) + sorted((ROOT / "js" / "docs").glob("*.md"))
    return files


def _strip_code(text: str) -> str:
    """Text without fenced blocks and inline code (links there are not links)."""
    text = FENCE_RE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    return INLINE_CODE_RE.sub(lambda m: " " * len(m.group(0)), text)


def bad_links(text: str, folder: Path) -> list[str]:
    prose = _strip_code(text)
    targets = LINK_RE.findall(prose) + REF_LINK_RE.findall(prose)
    bad = []
    for target in targets:
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("#"):
            continue   # URL with a scheme, or an anchor in the same file
        path = target.split("#", 1)[0].split("?", 1)[0]
        resolved = (folder / path).resolve()
        if not resolved.exists() or ROOT not in (resolved, *resolved.parents):
            bad.append(target)
    return bad


def _exists(path: str) -> bool:
    pattern = re.sub(r"<[^>]*>", "*", path)
    if "*" in pattern:
        return bool(glob.glob(str(ROOT / pattern)))
    return (ROOT / pattern).exists()


def bad_paths(text: str) -> list[str]:
    bad = []
    for m in PATH_RE.finditer(text):
        path = m.group(1).rstrip(".")
        if path.endswith(">") and "<" not in path:
            path = path[:-1]
        if path.rstrip("/") in OLD_PREFIXES:
            continue
        if not _exists(path):
            bad.append(path)
    return bad


def bad_lines(text: str) -> list[str]:
    return [f"{i}: {line.strip()}" for i, line in enumerate(text.splitlines(), 1)
            if SESSION_RE.search(line) or MACHINE_RE.search(line)]


def _id(p: Path) -> str:
    return p.relative_to(ROOT).as_posix()


@pytest.mark.parametrize("doc", doc_files(), ids=_id)
def test_links_resolve(doc: Path) -> None:
    assert bad_links(doc.read_text(encoding="utf-8"), doc.parent) == []


@pytest.mark.parametrize("doc", doc_files(), ids=_id)
def test_repository_paths_exist(doc: Path) -> None:
    assert bad_paths(doc.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("doc", doc_files(), ids=_id)
def test_no_work_log_or_machine_paths(doc: Path) -> None:
    assert bad_lines(doc.read_text(encoding="utf-8")) == []


def test_the_checks_see_the_docs() -> None:
    """Guards against a checker that silently matches nothing."""
    names = {_id(p) for p in doc_files()}
    assert {"README.md", "CHANGELOG.md", "docs/results.md", "docs/formats.md",
            "js/docs/OneStoryNextShot.md"} <= names
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert LINK_RE.findall(_strip_code(readme)), "no links found in README.md"
    assert PATH_RE.findall((ROOT / "docs" / "formats.md").read_text(encoding="utf-8"))


def test_the_checks_catch_planted_problems(tmp_path: Path) -> None:
    doc = ("See [the results](docs/results.md), ![plot](missing.png), [ok](#anchor),\n"
           "[web](https://example.org/x), `onestory/no_such_module.py`, `bench/ablate.py`,\n"
           "`js/docs/<NodeId>.md`, `docs/*.md`, `tests/test_docs.py::test_links_resolve`.\n"
           "```bash\npython -m onestory_lab.experiments.ablate --report docs/nope.png\n```\n"
           "Run it in a session; the file is in /work/shared.\n"
           "[ref]: lab/no_such_file.py\n")
    assert bad_links(doc, ROOT) == ["missing.png", "lab/no_such_file.py"]
    assert bad_links(doc, ROOT / "docs") == ["docs/results.md", "missing.png", "lab/no_such_file.py"]
    assert bad_links("[x](README.md) [y](docs/results.md#setup)", ROOT) == []
    assert bad_links("[x](../../outside.md)", ROOT / "docs") == ["../../outside.md"]
    assert bad_paths(doc) == ["onestory/no_such_module.py", "bench/ablate.py", "docs/nope.png",
                              "lab/no_such_file.py"]
    assert [line.split(":")[0] for line in bad_lines(doc)] == ["7"]
    assert bad_lines("a /home/user path\nthe sessions of a ComfyUI server\n") == ["1: a /home/user path"]
    assert bad_paths("the lab's `storyworld/`, `bench/`, `experiments/`; see tools/build.py") == ["tools/build.py"]
