"""Tests for the benchmark report: loading, Markdown table, plots, rich output."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from rankstream.eval.report import (
    ReportError,
    load_results,
    markdown_table,
    print_table,
    protocol_short,
    write_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def retrieval_result(dataset: str, model: str, ndcg: float, epochs: int = 3) -> dict[str, Any]:
    """A synthetic `rankstream bench` result of the retrieval (hr/ndcg) shape."""
    test = {"hr@10": ndcg * 2, "ndcg@10": ndcg, "mrr": ndcg * 0.9, "hr@50": 0.5, "ndcg@50": 0.25}
    return {
        "dataset": dataset, "model": model, "name": model, "config_hash": "ab12cd34ef56",
        "protocol": {"split": "leave-one-out", "ranking": "full", "mask_history": False,
                     "max_len": 200},
        "metrics": {"valid": dict(test), "test": test},
        "params": 123456, "epochs": epochs, "best_epoch": epochs - 1, "train_seconds": 60.9,
        "train_seconds_per_epoch": 20.3, "eval_seconds": 2.1, "torch_version": "2.13.0+cpu",
        "history": [{"epoch": e, "loss": 7.0 - e, "seconds": 20.0,
                     "valid": {"ndcg@10": 0.05 * e, "hr@10": 0.1 * e, "mrr": 0.04 * e}}
                    for e in range(1, epochs + 1)],
    }


def ranking_result() -> dict[str, Any]:
    """A CTR-ranking shaped result: auc/gauc/logloss, no history."""
    return {"dataset": "kuairand", "model": "dcnv2",
            "protocol": {"split": "temporal", "ranking": "pointwise"},
            "metrics": {"valid": {"auc": 0.7},
                        "test": {"auc": 0.71234, "gauc": 0.65, "logloss": 0.4}},
            "params": 999, "epochs": 2}


def streaming_result() -> dict[str, Any]:
    """A streaming-shaped result: metric groups other than valid/test."""
    return {"dataset": "criteo", "model": "esmm", "metrics": {"cvr": {"auc": 0.8},
                                                            "netcvr": {"auc": 0.7}},
            "eval_seconds": 0.034}


def write_json(path: Path, obj: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def table_body(md: str) -> list[list[str]]:
    """Rows of a Markdown table (header included, separator excluded) as stripped cells."""
    lines = [ln for ln in md.strip().splitlines() if ln.startswith("|")]
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
    return [rows[0], *rows[2:]]


def test_protocol_short() -> None:
    p = {"split": "leave-one-out", "ranking": "full", "mask_history": False, "max_len": 200}
    assert protocol_short(p) == "LOO full, no mask, L=200"
    assert protocol_short({"split": "temporal", "mask_history": True}) == "temporal, mask"
    assert protocol_short(None) == ""


def test_markdown_table_rows_values_rounding_and_order() -> None:
    results = [retrieval_result("ml1m", "sasrec", 0.171234),
               retrieval_result("ml1m", "bert4rec", 0.2),
               retrieval_result("amazon", "sasrec", 0.05)]
    header, *rows = table_body(markdown_table(results))
    assert header[:6] == ["dataset", "model", "protocol", "ndcg@10", "hr@10", "mrr"]
    assert header[6:8] == ["hr@50", "ndcg@50"]  # the rest sorted
    assert header[-4:] == ["epochs (best)", "s/epoch", "eval s", "params"]
    assert [(r[0], r[1]) for r in rows] == [("amazon", "sasrec"), ("ml1m", "bert4rec"),
                                            ("ml1m", "sasrec")]
    sasrec = dict(zip(header, rows[2], strict=True))
    assert sasrec["protocol"] == "LOO full, no mask, L=200"
    assert sasrec["ndcg@10"] == "0.1712"
    assert sasrec["hr@10"] == "0.3425"
    assert sasrec["epochs (best)"] == "3 (2)"
    assert sasrec["s/epoch"] == "20.3"
    assert sasrec["eval s"] == "2.1"
    assert sasrec["params"] == "123,456"


def test_markdown_table_mixed_shapes_do_not_crash() -> None:
    results = [retrieval_result("ml1m", "sasrec", 0.1), ranking_result(), streaming_result()]
    header, *rows = table_body(markdown_table(results))
    assert header[3:6] == ["ndcg@10", "hr@10", "mrr"]
    assert {"auc", "gauc", "logloss"} <= set(header)
    by_model = {r[1]: dict(zip(header, r, strict=True)) for r in rows}
    assert by_model["dcnv2"]["auc"] == "0.7123"
    assert by_model["dcnv2"]["ndcg@10"] == ""
    assert by_model["dcnv2"]["protocol"] == "temporal pointwise"
    assert by_model["esmm"]["eval s"] == "0.034"
    assert by_model["sasrec"]["auc"] == ""


def test_load_results_files_and_folders(tmp_path: Path) -> None:
    a = write_json(tmp_path / "runs" / "b.json", retrieval_result("ml1m", "sasrec", 0.1))
    write_json(tmp_path / "runs" / "nested" / "a.json", retrieval_result("ml1m", "gru4rec", 0.1))
    single = write_json(tmp_path / "single.json", ranking_result())
    results = load_results([tmp_path / "runs", single])
    assert [r["model"] for r in results] == ["sasrec", "gru4rec", "dcnv2"]  # sorted paths
    assert load_results([a])[0]["model"] == "sasrec"


@pytest.mark.parametrize(("content", "what"), [
    ("{not json", "not valid JSON"),
    (json.dumps({"dataset": "ml1m"}), "missing model"),
    (json.dumps([1, 2]), "expected a JSON object"),
])
def test_load_results_bad_file_raises_naming_it(tmp_path: Path, content: str, what: str) -> None:
    write_json(tmp_path / "ok.json", retrieval_result("ml1m", "sasrec", 0.1))
    (tmp_path / "broken.json").write_text(content)
    with pytest.raises(ReportError, match=what) as exc:
        load_results([tmp_path])
    assert "broken.json" in str(exc.value)
    assert "\n" not in str(exc.value)
    assert isinstance(exc.value, ValueError)


def test_load_results_missing_path_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="nope.json"):
        load_results([tmp_path / "nope.json"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match="no \\*.json"):
        load_results([tmp_path / "empty"])


def test_write_report_files_and_links(tmp_path: Path) -> None:
    results = [retrieval_result("ml1m", "sasrec", 0.17),
               retrieval_result("ml1m", "gru4rec", 0.12, 5)]
    path = write_report(results, tmp_path / "out")
    assert path == tmp_path / "out" / "report.md"
    text = path.read_text()
    assert text.startswith("# ")
    assert "| ml1m | sasrec |" in text
    for png in ("training_curves.png", "test_metrics.png"):
        assert f"]({png})" in text
        assert (tmp_path / "out" / png).read_bytes()[:8] == PNG_MAGIC


def test_write_report_ranking_and_streaming_shapes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    path = write_report([ranking_result(), streaming_result()], out)
    text = path.read_text()
    assert "](test_metrics.png)" in text  # auc/gauc bars
    assert (out / "test_metrics.png").read_bytes()[:8] == PNG_MAGIC
    assert "training_curves.png" not in text  # no history: plot and link skipped
    assert not (out / "training_curves.png").exists()


def test_write_report_skips_all_plots_without_data(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_report([retrieval_result("ml1m", "sasrec", 0.1)], out)  # leaves both plots behind
    text = write_report([streaming_result()], out).read_text()
    assert ".png" not in text
    assert list(out.glob("*.png")) == []
    assert "| criteo | esmm |" in text


def test_print_table_uses_rich() -> None:
    buf = io.StringIO()
    console = Console(file=buf, width=250, color_system=None)
    print_table([retrieval_result("ml1m", "sasrec", 0.171234), ranking_result()], console=console)
    out = buf.getvalue()
    assert "sasrec" in out and "0.1712" in out and "dcnv2" in out and "0.7123" in out
    print_table([ranking_result()])  # default console does not crash
