"""Bench: well-formed rows for every backend, mode and batch; skipped backends explained; CLI output."""

from __future__ import annotations

import json

import pytest

from blazedistill.bench import BackendUnavailable, BenchRow, benchmark, build_backend, parse_batches

pytest.importorskip("onnxruntime")
pytest.importorskip("ai_edge_litert")


def _check_rows(rows: list[BenchRow], expected: list[tuple[str, str, str, int]]) -> None:
    assert [(r.model, r.backend, r.mode, r.batch) for r in rows] == expected
    for row in rows:
        assert 0 < row.p50_ms <= row.p95_ms
        assert row.images_per_s == pytest.approx(row.batch / (row.p50_ms / 1e3))
        assert row.ratio > 0
    groups = {}
    for row in rows:
        groups.setdefault((row.mode, row.batch), []).append(row)
    for members in groups.values():
        assert members[0].ratio == 1.0
        for row in members:
            assert row.ratio == pytest.approx(row.p50_ms / members[0].p50_ms)


def test_bench_front_on_three_backends():
    backends = ["torch", "onnxruntime", "tflite"]
    result = benchmark(["front"], backends, batches=[1, 2], threads=1, repeats=2, warmup=1)
    expected = [("front", b, mode, n) for mode in ("model", "end-to-end") for n in (1, 2) for b in backends]
    _check_rows(result.rows, expected)
    assert result.skipped == []
    assert result.settings["threads"] == 1 and result.settings["repeats"] == 2
    table = result.markdown().splitlines()
    assert len(table) == 2 + len(expected) and table[2].startswith("| front | torch | model | 1 |")
    assert json.loads(json.dumps(result.to_dict()))["rows"][0]["backend"] == "torch"


def test_exported_file_runs_only_on_its_runtime(tmp_path):
    from blazedistill import load_model
    from blazedistill.export import export_model

    path = export_model(load_model("front"), "onnx", tmp_path / "front.onnx", dynamic_batch=True)
    result = benchmark(
        [str(path)], ["torch", "onnxruntime"], batches=[1], threads=1, repeats=2, warmup=0, modes=["model"]
    )
    _check_rows(result.rows, [(str(path), "onnxruntime", "model", 1)])
    assert result.skipped == [f"{path} on torch: {path} is an exported file; it runs only on its own runtime"]


def test_unknown_backend_and_batches_are_refused(tmp_path):
    from blazedistill import load_model

    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        build_backend("front", load_model("front"), "cuda", 1, tmp_path)
    assert parse_batches("1, 32") == [1, 32]
    for bad in ("0", "", "1,-2"):
        with pytest.raises(ValueError, match="positive integers"):
            parse_batches(bad)
    assert issubclass(BackendUnavailable, RuntimeError)


def test_cli_bench_prints_table_and_writes_json(tmp_path, capsys):
    from blazedistill.cli.main import main

    out = tmp_path / "bench.json"
    argv = [
        "bench",
        "--model",
        "front",
        "--backend",
        "torch,tflite",
        "--batch",
        "1",
        "--threads",
        "1",
        "--repeats",
        "2",
        "--warmup",
        "0",
        "--json",
        str(out),
    ]
    assert main(argv) == 0
    text = capsys.readouterr().out
    rows = [line for line in text.splitlines() if line.startswith("| front |")]
    assert [line.split(" | ")[1:4] for line in rows] == [
        ["torch", "model", "1"],
        ["tflite", "model", "1"],
        ["torch", "end-to-end", "1"],
        ["tflite", "end-to-end", "1"],
    ]
    assert "1 threads" in text and rows[0].endswith("| 1.00× |")
    data = json.loads(out.read_text())
    assert len(data["rows"]) == 4 and all(r["p50_ms"] > 0 for r in data["rows"])


def test_cli_bench_usage_errors(capsys):
    from blazedistill.cli.main import main

    assert main(["bench", "--model", "front", "--backend", "torch,cuda"]) == 2
    assert "unknown backend or mode cuda" in capsys.readouterr().err
    assert main(["bench", "--model", "nobody", "--backend", "torch", "--repeats", "1"]) == 2
    assert "unknown model 'nobody'" in capsys.readouterr().err


def test_cli_bench_refuses_an_unwritable_json_before_timing(tmp_path, capsys):
    from blazedistill.cli.main import main

    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    argv = ["bench", "--model", "front", "--backend", "torch", "--batch", "1", "--repeats", "1", "--warmup", "0"]
    assert main([*argv, "--mode", "model", "--json", str(blocker / "x.json")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: --json {blocker / 'x.json'}: cannot create")
