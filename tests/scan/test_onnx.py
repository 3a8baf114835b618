"""The ONNX scanner: external-data escapes, custom domains anywhere, checker, damage."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import modelguard
from modelguard.findings import Finding, Location
from modelguard.limits import Limits
from modelguard.policy import ScanSettings
from modelguard.scan.context import Input, ScanContext
from modelguard.scan.formats import dispatch
from modelguard.scan.onnx import location_problem, scan_onnx

OPSET = [helper.make_opsetid("", 17)]


def scan(data: bytes, *, limits: Limits | None = None, direct: bool = True) -> list[Finding]:
    ctx = ScanContext(location=Location("m.onnx"), settings=ScanSettings(limits or Limits()))
    inp = Input(io.BytesIO(data), len(data), "m.onnx")
    if direct:
        scan_onnx(inp, ctx)
    else:
        dispatch(inp, ctx)
    return ctx.findings


def scan_path(path: Path) -> list[Finding]:
    report = modelguard.scan(path, root=path.parent, workers=1)
    (artifact,) = report.artifacts
    assert artifact.format == "onnx"
    return list(artifact.findings)


def rules(findings: list[Finding]) -> list[str]:
    return sorted(f.rule_id for f in findings)


def io_info(name: str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 8])


def matmul_model() -> onnx.ModelProto:
    weight = numpy_helper.from_array(np.ones((8, 8), np.float32), "W")
    node = helper.make_node("MatMul", ["X", "W"], ["Y"], name="mm")
    graph = helper.make_graph([node], "g", [io_info("X")], [io_info("Y")], [weight])
    return helper.make_model(graph, opset_imports=OPSET)


def with_external(model: onnx.ModelProto, location: str) -> bytes:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    tensor = copy.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "256")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return copy.SerializeToString()


# ---- benign ----------------------------------------------------------------------------
class _Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3)
        self.fc = torch.nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.fc(torch.relu(self.conv(x)).flatten(1)), dim=1)


@pytest.fixture(scope="module")
def torch_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("export") / "tiny.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The TorchScript exporter: the dynamo one needs onnxscript, not installed.
        torch.onnx.export(_Tiny().eval(), (torch.randn(1, 1, 4, 4),), str(path), dynamo=False)
    return path


def test_torch_export_is_clean(torch_export: Path) -> None:
    assert scan_path(torch_export) == []


def test_helper_model_is_clean() -> None:
    assert scan(matmul_model().SerializeToString(), direct=False) == []


def test_external_data_beside_the_model_is_clean(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    onnx.save_model(
        matmul_model(),
        path,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    assert (tmp_path / "weights.bin").exists()
    assert scan_path(path) == []


def test_external_data_needs_no_file_and_ignores_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Scanned from bytes with no weights.bin anywhere: the checker must not look
    # for it (given a ModelProto it would stat paths relative to the cwd).
    monkeypatch.chdir(tmp_path)
    assert scan(with_external(matmul_model(), "weights.bin")) == []
    (tmp_path / "weights.bin").mkdir()  # a folder where the checker would look
    assert scan(with_external(matmul_model(), "weights.bin")) == []


# ---- external data escaping the folder -------------------------------------------------
@pytest.mark.parametrize(
    "location",
    ["../../etc/passwd", "/etc/passwd", "sub/../../x.bin", "..\\..\\x.bin", "C:\\x.bin", ""],
)
def test_escaping_locations(location: str) -> None:
    findings = scan(with_external(matmul_model(), location))
    assert rules(findings) == ["MG320"]
    assert findings[0].evidence == location


def test_escaping_location_in_a_file_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(with_external(matmul_model(), "../../etc/passwd"))
    assert rules(scan_path(path)) == ["MG320"]


def test_symlink_out_of_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (tmp_path / "secret").write_text("x")
    os.symlink(tmp_path / "secret", folder / "weights.bin")
    path = folder / "model.onnx"
    path.write_bytes(with_external(matmul_model(), "weights.bin"))
    findings = scan_path(path)
    assert rules(findings) == ["MG320"]
    assert "symbolic link" in findings[0].message


def test_symlink_inside_the_folder_is_fine(tmp_path: Path) -> None:
    (tmp_path / "real.bin").write_bytes(b"\0" * 256)
    os.symlink(tmp_path / "real.bin", tmp_path / "weights.bin")
    path = tmp_path / "model.onnx"
    path.write_bytes(with_external(matmul_model(), "weights.bin"))
    assert scan_path(path) == []


def test_location_problem_shapes() -> None:
    assert location_problem("weights.bin", None) is None
    assert location_problem("sub/dir/weights.bin", None) is None
    assert location_problem("a..b.bin", None) is None
    # judged after normalisation: a ".." that comes back down stays beside the model
    assert location_problem("subdir/../w.bin", None) is None
    assert location_problem("subdir\\..\\w.bin", None) is None
    assert location_problem("a/b/../../w.bin", None) is None
    assert location_problem("a/../../w.bin", None) == "climbs out of its folder with '..'"
    assert location_problem("/abs", None) == "is an absolute path"
    assert location_problem("x/../../y", None) == "climbs out of its folder with '..'"
    assert location_problem("C:\\w.bin", None) == "names a drive (an absolute Windows path)"


def test_external_tensor_in_a_subgraph_attribute() -> None:
    const = helper.make_tensor("c", TensorProto.FLOAT, [1, 8], np.ones(8, np.float32))
    const.ClearField("float_data")
    const.data_location = TensorProto.EXTERNAL
    entry = const.external_data.add()
    entry.key, entry.value = "location", "/etc/shadow"
    branch = helper.make_graph(
        [helper.make_node("Constant", [], ["c_out"], value=const)], "then", [], [io_info("c_out")]
    )
    other = helper.make_graph(
        [helper.make_node("Identity", ["X"], ["x_out"])], "else", [], [io_info("x_out")]
    )
    cond = helper.make_tensor_value_info("cond", TensorProto.BOOL, [])
    node = helper.make_node("If", ["cond"], ["Y"], then_branch=branch, else_branch=other)
    graph = helper.make_graph([node], "g", [cond, io_info("X")], [io_info("Y")])
    model = helper.make_model(graph, opset_imports=OPSET)
    findings = scan(model.SerializeToString())
    assert "MG320" in rules(findings)
    assert any(f.evidence == "/etc/shadow" for f in findings)


# ---- operator domains ------------------------------------------------------------------
def model_with_nodes(nodes: list[onnx.NodeProto], domains: dict[str, int]) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [io_info("X")], [io_info("Y")])
    opsets = OPSET + [helper.make_opsetid(d, v) for d, v in domains.items()]
    return helper.make_model(graph, opset_imports=opsets)


def test_custom_domain_operator() -> None:
    node = helper.make_node("Evil", ["X"], ["Y"], domain="com.evil", name="payload")
    findings = scan(model_with_nodes([node], {"com.evil": 1}).SerializeToString())
    assert rules(findings) == ["MG321"]
    assert findings[0].evidence == "com.evil:Evil"


def test_vendor_domain_is_flagged_too() -> None:
    node = helper.make_node("FusedMatMul", ["X", "X"], ["Y"], domain="com.microsoft")
    findings = scan(model_with_nodes([node], {"com.microsoft": 1}).SerializeToString())
    assert [f.evidence for f in findings if f.rule_id == "MG321"] == ["com.microsoft:FusedMatMul"]


@pytest.mark.parametrize("domain", ["ai.onnx.ml", "ai.onnx"])
def test_standard_domains_are_not_flagged(domain: str) -> None:
    op = "Normalizer" if domain == "ai.onnx.ml" else "Relu"
    node = helper.make_node(op, ["X"], ["Y"], domain=domain)
    findings = scan(model_with_nodes([node], {domain: 1}).SerializeToString())
    assert "MG321" not in rules(findings)


def test_custom_operator_inside_a_loop_body() -> None:
    body = helper.make_graph(
        [helper.make_node("Hidden", ["x_in"], ["x_out"], domain="evil.ops")],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
            io_info("x_in"),
        ],
        [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []), io_info("x_out")],
    )
    loop = helper.make_node("Loop", ["", "", "X"], ["Y"], body=body)
    findings = scan(model_with_nodes([loop], {"evil.ops": 1}).SerializeToString())
    assert [f.evidence for f in findings if f.rule_id == "MG321"] == ["evil.ops:Hidden"]


def test_local_function_call_is_not_flagged_but_its_body_is() -> None:
    clean = helper.make_function(
        "local.fn", "Double", ["a"], ["b"], [helper.make_node("Add", ["a", "a"], ["b"])], OPSET
    )
    dirty = helper.make_function(
        "local.fn",
        "Sneaky",
        ["a"],
        ["b"],
        [helper.make_node("Native", ["a"], ["b"], domain="com.native")],
        [*OPSET, helper.make_opsetid("com.native", 1)],
    )
    nodes = [
        helper.make_node("Double", ["X"], ["T"], domain="local.fn"),
        helper.make_node("Sneaky", ["T"], ["Y"], domain="local.fn"),
    ]
    model = model_with_nodes(nodes, {"local.fn": 1, "com.native": 1})
    model.functions.extend([clean, dirty])
    findings = scan(model.SerializeToString())
    assert [f.evidence for f in findings if f.rule_id == "MG321"] == ["com.native:Native"]


# ---- checker and damage ----------------------------------------------------------------
def test_checker_failure_is_low() -> None:
    node = helper.make_node("Relu", ["missing"], ["Y"])
    findings = scan(model_with_nodes([node], {}).SerializeToString())
    assert rules(findings) == ["MG322"]
    assert findings[0].severity.label == "low"


def test_garbage_is_unparsable() -> None:
    data = b"\x08\x07\x12\xff\xff\xff\xff\x0fnot a model"
    findings = scan(data, direct=False)
    assert rules(findings) == ["MG323"]


def test_model_without_graph() -> None:
    model = onnx.ModelProto(ir_version=8)
    assert [f.evidence for f in scan(model.SerializeToString())] == ["no-graph"]


def test_size_cap_is_a_limit() -> None:
    data = matmul_model().SerializeToString()
    assert rules(scan(data, limits=Limits(max_member_bytes=64))) == ["MG002"]


def test_every_truncation_is_a_finding(torch_export: Path) -> None:
    data = torch_export.read_bytes()
    for cut in range(len(data)):
        findings = scan(data[:cut])
        assert findings, f"no finding when cut at {cut}"
        assert set(rules(findings)) <= {"MG322", "MG323"}, (cut, findings)
