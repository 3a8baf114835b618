"""TensorFlow readings: SavedModel and frozen graphs (MG350), tf.keras SavedModel metadata.

The positive control needs TensorFlow and tf_keras, which are not test
dependencies (hundreds of MB): it runs where ``MODELGUARD_TF_PYTHON`` names a
Python that has them, and is skipped, saying so, everywhere else.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from archive_helpers import scan_bytes

from modelguard.api import scan
from modelguard.findings import Severity

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
sys.path.insert(0, str(FIXTURES))
import gen_tensorflow as tfgen  # noqa: E402  (the fixture generator's encoder)


def _rules(path: Path) -> set[str]:
    return {f.rule_id for f in scan([path]).findings}


def test_fixture_graphs_are_read_and_judged() -> None:
    assert _rules(FIXTURES / "malicious/tf_savedmodel_writefile_in_function.pb") == {"MG350"}
    assert _rules(FIXTURES / "malicious/tf_frozen_graph_pyfunc.pb") == {"MG350"}
    assert _rules(FIXTURES / "malicious/tf_keras_savedmodel/keras_metadata.pb") == {"MG330"}
    for benign in ("tf_savedmodel_matmul.pb", "tf_frozen_graph_relu.pb"):
        assert _rules(FIXTURES / "benign" / benign) == set()
    assert _rules(FIXTURES / "benign/tf_keras_savedmodel/keras_metadata.pb") == set()


def test_the_op_is_named_with_its_function() -> None:
    (finding,) = scan([FIXTURES / "malicious/tf_savedmodel_writefile_in_function.pb"]).findings
    assert "function '__inference___call___96'" in finding.message
    assert finding.evidence.startswith("WriteFile:")


@pytest.mark.parametrize(
    "op", ["PyFuncStateless", "EagerPyFunc", "ReadFile", "MatchingFiles", "ImmutableConst"]
)
def test_every_unsafe_op_in_a_function_library(op: str) -> None:
    graph = tfgen.graph([], [tfgen.function("f", [tfgen.node("n", op)])])
    result = scan_bytes(tfgen.saved_model(graph), name="saved_model.pb")
    assert {f.rule_id for f in result.findings} == {"MG350"}


def test_field_order_and_file_name_do_not_hide_a_graph() -> None:
    # Protobuf takes fields in any order: a GraphDef may start with versions (4).
    versions = tfgen.field_bytes(4, tfgen.field_varint(1, 1987))
    graph = versions + tfgen.graph([tfgen.node("bad", "PyFunc")])
    assert {f.rule_id for f in scan_bytes(graph, name="frozen.pb").findings} == {"MG350"}
    # A SavedModel renamed (starting with its meta graphs) is read as one too.
    saved = tfgen.saved_model(tfgen.graph([tfgen.node("w", "WriteFile")]))
    renamed = saved[2:]  # without the schema version: starts with field 2
    assert renamed[0] == 0x12
    assert {f.rule_id for f in scan_bytes(renamed, name="model.pb").findings} == {"MG350"}


def test_ops_seen_before_the_field_cap_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    # importlib: the package attribute modelguard.scan is the scan() function.
    reading = importlib.import_module("modelguard.scan.tensorflow")
    monkeypatch.setattr(reading, "_MAX_FIELDS", 50)
    nodes = [tfgen.node("bad", "WriteFile")] + [tfgen.node(f"n{i}", "Relu") for i in range(40)]
    result = scan_bytes(tfgen.graph(nodes), name="frozen.pb")
    assert {f.rule_id for f in result.findings} == {"MG350", "MG002"}


def test_a_savedmodel_is_not_taken_for_an_onnx_model() -> None:
    data = (FIXTURES / "benign/tf_savedmodel_matmul.pb").read_bytes()
    assert data[:3] == b"\x08\x01\x12"  # what the ONNX predicate accepts
    assert scan_bytes(data, name="saved_model.pb").findings == []
    # Named .onnx, the same bytes are an ONNX model without a graph.
    assert "MG323" in {f.rule_id for f in scan_bytes(data, name="model.onnx").findings}


def test_a_damaged_saved_model_is_a_medium_claim() -> None:
    data = (FIXTURES / "malicious/tf_savedmodel_writefile_in_function.pb").read_bytes()
    result = scan_bytes(data[:-7], name="saved_model.pb")
    (claim,) = result.with_rule("MG005")
    assert claim.severity is Severity.MEDIUM and "does not parse" in claim.message


def test_other_protobufs_named_pb_are_not_graphs() -> None:
    # fingerprint.pb beside every SavedModel: checksums as varints (fields 1-5).
    fingerprint = b"".join(tfgen.field_varint(n, 0xDEADBEEF12345678 + n) for n in range(1, 6))
    assert scan_bytes(fingerprint, name="fingerprint.pb").serious() == []
    broken = tfgen.field_bytes(1, b"\x0a\x7f")  # a GraphDef-looking start, then garbage
    assert scan_bytes(broken, name="graph.pb").serious() == []


# -- positive control: TensorFlow itself ---------------------------------------------------
TF_PYTHON = os.environ.get("MODELGUARD_TF_PYTHON")
needs_tf = pytest.mark.skipif(
    not TF_PYTHON,
    reason="MODELGUARD_TF_PYTHON (a Python with tensorflow and tf_keras) is not set",
)

_MAKE = textwrap.dedent(
    """
    import os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import tensorflow as tf
    import tf_keras as keras
    out, marker = sys.argv[1], sys.argv[2]

    class Writer(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def __call__(self, x):
            tf.io.write_file(marker, tf.strings.as_string(tf.reduce_sum(x)))
            return x

    class Benign(tf.Module):
        def __init__(self):
            self.w = tf.Variable(tf.ones([4, 2]))

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def __call__(self, x):
            return tf.nn.relu(tf.matmul(x, self.w))

    tf.saved_model.save(Writer(), out + "/writer")
    tf.saved_model.save(Benign(), out + "/benign")
    inp = keras.Input((4,))
    touched = keras.layers.Lambda(
        lambda x: (__import__("pathlib").Path(__import__("os").environ["MARK"]).touch(), x)[1]
    )(inp)
    keras.Model(inp, keras.layers.Dense(2)(touched)).save(out + "/lambda", save_format="tf")
    """
)
_RUN_SIGNATURE = (
    "import os, sys; os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'; import tensorflow as tf; "
    "tf.saved_model.load(sys.argv[1])(tf.ones([1, 4]))"
)
_LOAD_KERAS = (
    "import os, sys; os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'; import tf_keras as keras; "
    "keras.models.load_model(sys.argv[1])"
)


@needs_tf
def test_tensorflow_runs_what_the_scan_flags(tmp_path: Path) -> None:
    assert TF_PYTHON is not None
    marker, keras_marker = tmp_path / "wrote", tmp_path / "lambda-ran"
    env = {**os.environ, "MARK": str(keras_marker)}
    subprocess.run([TF_PYTHON, "-c", _MAKE, str(tmp_path), str(marker)], check=True, env=env)
    keras_marker.unlink(missing_ok=True)  # building the model ran the Lambda once
    assert not marker.exists()
    # Positive controls: serving the SavedModel writes the file; loading runs the Lambda.
    subprocess.run([TF_PYTHON, "-c", _RUN_SIGNATURE, str(tmp_path / "writer")], check=True)
    assert marker.exists()
    subprocess.run([TF_PYTHON, "-c", _LOAD_KERAS, str(tmp_path / "lambda")], check=True, env=env)
    assert keras_marker.exists()
    # The scan flags both, and nothing in the benign SavedModel's folder.
    assert "MG350" in _rules(tmp_path / "writer")
    assert "MG330" in _rules(tmp_path / "lambda")
    benign = scan([tmp_path / "benign"])
    assert [f for f in benign.findings if f.severity >= Severity.LOW] == []
