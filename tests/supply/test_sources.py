"""Source parsing: hf:// references, zoo readmes, URL checks, name vetting."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelguard.errors import UsageError
from modelguard.supply.hub import parse_hf
from modelguard.supply.sources import (
    check_url,
    display_url,
    is_zoo_readme,
    name_problem,
    needs_opt_in,
    parse_zoo_readme,
    url_plan,
)

ZOO = """---
name: BVLC AlexNet Model
caffemodel: bvlc_alexnet.caffemodel
caffemodel_url: https://dl.example/bvlc_alexnet.caffemodel
license: unrestricted
sha1: 9116a64c0fbe4459d18f4bb6b56d647b63920377
caffe_commit: 709dc15af4a06bebda027c1eb2b3f3e3375d5077
---

This model is a replication of the model described in the AlexNet paper.
"""


@pytest.mark.parametrize(
    ("source", "repo", "rev", "path"),
    [
        ("hf://org/model", "org/model", None, None),
        ("hf://org/model@v1.0", "org/model", "v1.0", None),
        (
            "hf://org/model@main/weights/model.safetensors",
            "org/model",
            "main",
            "weights/model.safetensors",
        ),
        ("hf://org/model/onnx/", "org/model", None, "onnx"),
    ],
)
def test_parse_hf(source: str, repo: str, rev: str | None, path: str | None) -> None:
    parsed = parse_hf(source)
    assert (parsed.repo, parsed.revision, parsed.path) == (repo, rev, path)


@pytest.mark.parametrize("source", ["hf://justone", "hf://a/b@", "hf://@x/y"])
def test_parse_hf_rejects_malformed(source: str) -> None:
    with pytest.raises(UsageError, match="hf://owner/repo"):
        parse_hf(source)


def test_parse_zoo_readme() -> None:
    readme = parse_zoo_readme(ZOO, "readme.md")
    assert readme.caffemodel == "bvlc_alexnet.caffemodel"
    assert readme.sha1 == "9116a64c0fbe4459d18f4bb6b56d647b63920377"
    assert readme.license == "unrestricted"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("no front matter\n", "no front matter"),
        ("---\nname: x\n", "not closed"),
        ("---\nname: x\ncaffemodel: a\n---\n", "lacks caffemodel_url, sha1"),
        ("---\ncaffemodel: a\ncaffemodel_url: https://x/a\nsha1: 1234\n---\n", "40 hex"),
    ],
)
def test_parse_zoo_readme_errors(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_zoo_readme(text, "readme.md")


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("../evil", "climbs out"),
        ("/etc/passwd", "absolute"),
        ("a/../../b", "climbs out"),
        ("C:/Windows/x", "drive"),
        ("a\\b", "backslash"),
        ("", "empty"),
        ("a//b", "empty or '.'"),
        ("a/./b", "empty or '.'"),
        ("model\nMG101 forged line.bin", "U+000A"),
        ("evil\u202egnp.pt", "U+202E"),  # right-to-left override
        ("zero\u200bwidth", "U+200B"),
        (".git/config", ".git folder"),
        ("sub/.GIT/hooks/post-checkout", ".git folder"),
        (".git./config", ".git folder"),  # Windows drops the trailing dot
        ("GIT~1/config", ".git folder"),  # the 8.3 short name
        ("x" * 256, "longer than 255 bytes"),
    ],
)
def test_name_problem_refuses_what_must_never_be_placed(name: str, problem: str) -> None:
    found = name_problem(name)
    assert found is not None and problem in found


@pytest.mark.parametrize("name", ["onnx/model.onnx", "a..b", "..x/y", "model.safetensors"])
def test_name_problem_accepts_ordinary_names(name: str) -> None:
    assert name_problem(name) is None


@pytest.mark.parametrize(
    ("name", "why"),
    [
        (".gitattributes", "dotfile"),
        (".github/workflows/x.yml", "dot-folder"),
        ("sub/.env", "dotfile"),
        ("pyproject.toml", "policy file"),
        ("sub/modelguard.lock", "policy file"),
        ("conftest.py", "hook file"),
        ("evil.pth", "hook file"),
    ],
)
def test_needs_opt_in(name: str, why: str) -> None:
    found = needs_opt_in(name)
    assert found is not None and why in found
    assert needs_opt_in("model.bin") is None and needs_opt_in("modeling_x.py") is None


def test_display_url_drops_secrets() -> None:
    assert display_url("https://u:p@h.test:8443/a/b.pt?sig=x#f") == "https://h.test:8443/a/b.pt"


def test_plain_http_needs_flag() -> None:
    with pytest.raises(UsageError, match="plain http is not allowed"):
        check_url("http://example.test/model.bin", allow_http=False)
    check_url("http://example.test/model.bin", allow_http=True)
    with pytest.raises(UsageError, match="not an http"):
        check_url("ftp://example.test/x", allow_http=True)


def test_url_plan_names_file_from_url() -> None:
    plan = url_plan("https://example.test/models/resnet%2050.pt?download=1", {"sha256": "a" * 64})
    (remote,) = plan.files
    assert remote.name == "resnet 50.pt"
    assert remote.expected == {"sha256": "a" * 64}
    with pytest.raises(UsageError, match="names no file"):
        url_plan("https://example.test/", {})


def test_readme_detection() -> None:
    assert is_zoo_readme("https://gist.githubusercontent.com/u/abc/raw/readme.md")
    assert is_zoo_readme("https://example.test/zoo/README.md")
    assert not is_zoo_readme("https://example.test/model.caffemodel")
    assert is_zoo_readme("local/readme.md")


def test_missing_supply_extra_names_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import sys

    from modelguard.errors import MissingExtra
    from modelguard.supply import signing
    from modelguard.supply.hub import hf_plan

    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(MissingExtra, match=r"modelguard\[supply\]"):
        hf_plan("hf://a/b")
    monkeypatch.setitem(sys.modules, "cryptography.hazmat.primitives.serialization", None)
    with pytest.raises(MissingExtra, match=r"modelguard\[supply\]"):
        signing.load_public_key(tmp_path / "k.pem")
