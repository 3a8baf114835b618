"""Source parsing: hf:// references, zoo readmes, URL checks, safe names."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelguard.errors import FetchError, UsageError
from modelguard.supply.sources import (
    check_url,
    is_zoo_readme,
    parse_hf,
    parse_zoo_readme,
    safe_name,
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


@pytest.mark.parametrize("name", ["../evil", "/etc/passwd", "a/../../b", "a\\b", "", "a//b"])
def test_safe_name_rejects_escapes(name: str) -> None:
    with pytest.raises(FetchError, match="unsafe"):
        safe_name(name, "src")


def test_safe_name_accepts_nested() -> None:
    assert safe_name("onnx/model.onnx", "src") == "onnx/model.onnx"


def test_plain_http_needs_flag() -> None:
    with pytest.raises(UsageError, match="--allow-http"):
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
    from modelguard.supply.sources import hf_plan

    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(MissingExtra, match=r"modelguard\[supply\]"):
        hf_plan("hf://a/b")
    monkeypatch.setitem(sys.modules, "cryptography.hazmat.primitives.serialization", None)
    with pytest.raises(MissingExtra, match=r"modelguard\[supply\]"):
        signing.load_public_key(tmp_path / "k.pem")
