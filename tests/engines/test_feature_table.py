"""The engine feature table: probed rows, a not-installed row, the known-but-unavailable rows, --json."""

import importlib.util
import json
from importlib import metadata

import pytest

from enginebench.cli import main
from enginebench.engines import engine_class, known_engines
from enginebench.engines.features import bit_class, precision_bits
from enginebench.formats.tables.features import probe_engines, status, to_dicts

UNAVAILABLE = {"candle", "burn", "tensorrt"}


@pytest.fixture(scope="module")
def rows():
    return {info.name: info for info in probe_engines()}


def test_every_known_engine_has_a_row_plus_the_unavailable_ones(rows):
    assert set(rows) == set(known_engines()) | UNAVAILABLE


def test_installed_engine_is_probed(rows):
    info = rows["onnxruntime"]
    assert status(info) == "installed"
    assert info.version == metadata.version("onnxruntime")
    import onnxruntime

    assert "cpu" in info.devices and ("cuda" in info.devices) == ("CUDAExecutionProvider" in onnxruntime.get_available_providers())
    assert "32-bit" in info.bits and "onnx" in info.formats
    torch_info = rows["torch"]
    assert torch_info.training == "yes" and torch_info.backend  # probed from torch's build configuration


@pytest.mark.parametrize("features", ["native", "avx2"])
def test_precisions_are_those_the_engine_offers_on_this_cpu_and_the_others_say_why(features, monkeypatch):
    """`engines` lists what enginebench runs here: on an AVX2-only CPU (or acting as one) OpenVINO's bf16 is
    not among its precisions, and its row says why, as `run` and `tune` refuse it."""
    from enginebench.measure import cpu_features

    if features == "native":
        monkeypatch.delenv(cpu_features.ENV, raising=False)
    else:
        monkeypatch.setenv(cpu_features.ENV, features)
    for name in ("openvino", "ctranslate2", "onnxruntime"):
        cls = engine_class(name)
        if not cls.installed():
            continue
        info = cls.describe()
        offered = tuple(p for p in cls.precisions if cls.why_not_precision(p) is None)
        assert info.precisions == offered and "fp32" in offered
        for p in set(cls.precisions) - set(offered):
            assert f"not here: {cls.why_not_precision(p)}" in info.notes
    if engine_class("openvino").installed():
        has_bf16 = cpu_features.current().has_any(engine_class("openvino").cpu_needs["bf16"])
        assert ("bf16" in engine_class("openvino").describe().precisions) is (
            has_bf16 and engine_class("openvino").why_not_precision("bf16") is None)


def test_absent_library_shows_not_installed_with_its_install_hint(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    info = engine_class("onnxruntime").describe()
    assert status(info) == "not installed"
    assert info.version is None and info.devices == ()
    assert "enginebench[onnxruntime]" in info.install and "onnxruntime" in info.notes


def test_unavailable_engines_keep_their_row_with_a_reason(rows):
    for name in UNAVAILABLE:
        info = rows[name]
        assert status(info) == "unavailable" and not info.installed
        assert info.notes and info.formats and info.bits
    assert "Rust" in rows["candle"].notes and "Rust" in rows["burn"].notes
    from enginebench.engines.unavailable import _nvidia_gpu

    if not _nvidia_gpu():
        assert "NVIDIA GPU" in rows["tensorrt"].notes


def test_json_output_has_one_object_per_row(capsys):
    assert main(["engines", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    keys = {"name", "status", "installed", "version", "devices", "precisions", "bits", "formats", "backend",
            "parallelism", "training", "install", "extra", "notes", "available"}
    assert all(keys <= set(row) for row in data)
    assert len({row["name"] for row in data}) == len(data)
    assert {row["name"] for row in data if row["status"] == "unavailable"} == UNAVAILABLE
    assert data == json.loads(json.dumps(to_dicts(probe_engines())))


def test_table_output_names_every_engine(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")  # wide enough that rich folds no cell
    assert main(["engines"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("onnxruntime", "candle", "burn", "tensorrt", "enginebench[onnxruntime]"))


@pytest.mark.parametrize("precision, expected", [
    ("fp32", "32-bit"), ("bf16", "16-bit"), ("int8", "8-bit"), ("int8_float32", "8-bit"), ("q8_0", "8-bit"),
    ("q4_1", "4-bit"), ("nf4", "4-bit"), ("q3_k_m", "2/3-bit"), ("iq2_xs", "2/3-bit"), ("native", None)])
def test_precision_names_map_to_bit_classes(precision, expected):
    assert bit_class(precision) == expected


def test_bit_classes_are_listed_widest_first():
    assert precision_bits(("q4_0", "fp32", "int8", "q2_k")) == ("32-bit", "8-bit", "4-bit", "2/3-bit")
