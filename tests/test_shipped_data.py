"""The shipped benchmark and training files: complete, unchanged, counted, licensed, and in the wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from codepeft.data.shipped import count_records, manifest, read_shipped, sha256, shipped_root, verify

# Published record counts (data/shipped/SOURCES.md), written out here so a manifest rewritten
# over a damaged file cannot pass.
PUBLISHED = {
    **{f"humanevalpack/{lang}.jsonl.gz": 164 for lang in ("python", "java", "js", "go", "cpp", "rust")},
    "octopack/oasstcommitpackft.jsonl.gz": 151,
    "octopack/oasstcommitpackftmanual.jsonl.gz": 1178,
    "evalplus/HumanEvalPlus.jsonl.gz": 164,
    "evalplus/MbppPlus.jsonl.gz": 378,
    "recode/nominal/HumanEval.jsonl.gz": 164,
    "recode/nominal/humaneval_partial.jsonl.gz": 164,
    "recode/nominal/mbpp_wtest.jsonl.gz": 974,
    "cyberseceval/instruct.json.gz": 1916,
    "cyberseceval/autocomplete.json.gz": 1916,
    "conala-docprompting/train.json.gz": 2135,
    "conala-docprompting/dev.json.gz": 201,
    "conala-docprompting/test.json.gz": 543,
}
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_every_shipped_file_matches_its_manifest_entry():
    assert verify() == []
    files = manifest()
    for rel, count in PUBLISHED.items():
        assert files[rel]["records"] == count, rel
    perturbed = [rel for rel in files if rel.startswith("recode/humaneval/")]
    assert len(perturbed) == 89 and all(files[rel]["records"] == 164 for rel in perturbed)


def test_a_changed_file_is_named(tmp_path, monkeypatch):
    import shutil

    import codepeft.data.shipped as shipped

    copy = tmp_path / "shipped"
    shutil.copytree(shipped_root(), copy)
    target = copy / "octopack" / "oasstcommitpackft.jsonl.gz"
    target.write_bytes(target.read_bytes()[:-20])
    (copy / "humanevalpack" / "rust.jsonl.gz").unlink()
    monkeypatch.setattr(shipped, "shipped_root", lambda: copy)
    problems = shipped.verify()
    assert "octopack/oasstcommitpackft.jsonl.gz: SHA-256 differs from the manifest" in problems
    assert "humanevalpack/rust.jsonl.gz: missing" in problems


def test_each_folder_keeps_its_licence_and_sources_names_it():
    root = shipped_root()
    sources = (root / "SOURCES.md").read_text()
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        assert list(folder.glob("LICENSE*")), f"{folder.name} has no licence file"
        assert f"`{folder.name}/" in sources, folder.name


def test_records_are_read_as_published():
    java = read_shipped("humanevalpack/java.jsonl.gz")
    assert java[0]["task_id"] == "Java/0" and {"buggy_solution", "test", "declaration"} <= set(java[0])
    assert read_shipped("conala-docprompting/test.json.gz")[0].keys() >= {"nl", "cmd"}


@pytest.mark.skipif(not SHARED.is_dir(), reason="the source copy of the data is not beside the project")
def test_shipped_files_are_byte_identical_to_the_source_copy():
    for rel, entry in manifest().items():
        assert sha256(SHARED / rel) == entry["sha256"], rel
        assert count_records(SHARED / rel) == entry["records"], rel


def test_the_wheel_carries_every_shipped_file(tmp_path):
    project = Path(__file__).resolve().parents[1]
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
         str(project)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    wheel = next(tmp_path.glob("codepeft-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for rel in [*manifest(), "MANIFEST.json", "SOURCES.md", "humanevalpack/LICENSE", "evalplus/LICENSE-mbppplus"]:
        assert f"codepeft/data/shipped/{rel}" in names, rel
