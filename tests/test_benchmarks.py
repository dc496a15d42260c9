"""The benchmark scripts run (smoke modes, tiny model, 1 thread) and their FLOP count matches torch's counter."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from tinymodel import glue_dir

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name: str):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_flop_formula_matches_torch_flop_counter(attn):
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import BertConfig, BertForSequenceClassification

    bench = load_script("bench_train")
    cfg = BertConfig(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=96,
                     vocab_size=100, num_labels=3, attn_implementation=attn)
    model = BertForSequenceClassification(cfg).train()
    B, T = 4, 16
    ids = torch.randint(0, 100, (B, T), generator=torch.Generator().manual_seed(0))
    with FlopCounterMode(display=False) as counter:
        logits = model(input_ids=ids, attention_mask=torch.ones(B, T, dtype=torch.long)).logits
        torch.nn.functional.cross_entropy(logits, torch.zeros(B, dtype=torch.long)).backward()
    assert bench.Dims(cfg, 3).step_flops(B * T, B * T * T, B) == counter.get_total_flops()


def test_bench_train_quick(tiny_model, capsys):
    bench = load_script("bench_train")
    assert bench.main(["--quick", "--model", str(tiny_model), "--data-dir", str(glue_dir()), "--threads", "1",
                       "--json", "--ensemble", "2"]) == 0
    res = json.loads(capsys.readouterr().out)
    rows = {r["method"]: r for r in res["rows"]}
    expected = {"stabletune", "stabletune-grouped", "official"} | (
        {"trainer"} if bench.trainer_available() is None else set())
    assert set(rows) == expected and all(r["task"] == "rte" for r in rows.values())
    assert rows["stabletune"]["encoder"] == "unpadded" and rows["stabletune-grouped"]["encoder"] == "hf"
    assert rows["official"]["mean_width"] == 128 and rows["stabletune-grouped"]["mean_width"] < 128
    assert 0 < rows["stabletune-grouped"]["pad_fraction"] < rows["official"]["pad_fraction"] < 1
    assert 0 < rows["stabletune"]["pad_fraction"] < 1  # random batches (RTE's often reach 128 tokens)
    # unpadded: the executed FLOPs are the useful ones
    assert rows["stabletune"]["fraction_of_peak"] == rows["stabletune"]["useful_fraction_of_peak"]
    assert rows["stabletune"]["vs_stabletune-grouped"] == pytest.approx(
        rows["stabletune"]["examples_per_s"] / rows["stabletune-grouped"]["examples_per_s"])
    assert rows["stabletune"]["tokens_vs_stabletune-grouped"] == pytest.approx(
        rows["stabletune"]["real_tokens_per_s"] / rows["stabletune-grouped"]["real_tokens_per_s"])
    for r in rows.values():
        assert r["examples_per_s"] > 0 and math.isfinite(r["fraction_of_peak"]) and r["peak_rss_mb"] > 0
    assert rows["stabletune"]["vs_official"] == pytest.approx(
        rows["stabletune"]["examples_per_s"] / rows["official"]["examples_per_s"])
    assert [r["K"] for r in res["ensemble"]] == [1, 2]
    assert res["end_to_end"]["status"] == "finished" and res["end_to_end"]["steps"] == 4
    assert res["fixed_length"][0]["tokens"] == 16 and res["gemm_peak_flop_per_s"] > 0


def test_gpu_check_cpu_smoke(capsys):
    gpu = load_script("gpu_check")
    assert gpu.main(["--cpu-smoke", "--steps", "1", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert [r["attn"] for r in res["large"]] == ["sdpa", "eager"] and all(r["loss_finite"] for r in res["large"])
    rows = res["ensemble"]["16"]
    assert [r["K"] for r in rows] == ["separate", 1, 4, 8] and all(r["losses_finite"] for r in rows)
    assert rows[0]["speedup_per_seed_vs_separate"] == 1.0


def test_gpu_study_runs_a_real_study_per_layout(tiny_model, tmp_path, capsys):
    gs = load_script("gpu_study")
    out = tmp_path / "layouts.json"
    assert gs.main(["--data-dir", str(glue_dir()), "--model", str(tiny_model), "--task", "rte", "--seeds", "1",
                    "--layouts", "0x1", "--json-out", str(out)]) == 0
    res = json.loads(out.read_text())
    (row,) = res["layouts"]
    assert row["ok"] and row["counts"] == {"finished": 1} and row["workers"] == 0 and row["wall_s"] > 0
    assert "0x1" in capsys.readouterr().out


def test_study_layout_quick_and_extrapolation(tiny_model, capsys):
    layout = load_script("bench_study_layout")
    names = [x["name"] for x in layout.layouts(2, [2, 4])]
    assert names == ["1x2t", "1x2t-passive", "2x1t", "ens2", "ens4"]
    # a run of 6 updates and 1 evaluation: 10 s setup, 6 s training, 2 s evaluating, 3 s testing
    fake = {"wall_s": 21.0, "steps": 6, "evals": 1, "timings": [{"train_s": 6.0, "eval_s": 2.0, "test_s": 3.0}]}
    assert layout.full_run_estimate(fake, 96, 10) == pytest.approx(10 + 96 + 20 + 3)
    assert layout.main(["--quick", "--cores", "1", "--layouts", "ens2", "--model", str(tiny_model),
                        "--data-dir", str(glue_dir()), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert [r["layout"] for r in res["rows"]] == ["ens2"]
    assert res["fastest"] in {r["layout"] for r in res["rows"]}
    assert res["raw"]["ens2"][0][0]["mode"] == "vectorised"


def test_unpadded_attention_bench_quick(tiny_model, capsys):
    bench = load_script("bench_unpadded_attention")
    assert bench.main(["--quick", "--model", str(tiny_model), "--data-dir", str(glue_dir()), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    (row,) = res["rows"]
    assert row["task"] == "rte" and 0 <= row["pad_fraction"] < 1
    assert set(row["attention_ms"]) == {"hf", "padded", "buckets", "sorted", "nested", "block-diagonal"}
    assert set(row["encoder_ms"]) == {"hf", "padded", "buckets", "sorted", "nested", "padded/all"}
    assert all(v > 0 for v in [*row["attention_ms"].values(), *row["encoder_ms"].values()])
