"""The unpadded encoder: the same logits, loss and gradients as the Hugging Face model (tiny BERT, RoBERTa, ELECTRA
and the embedded MiniLM; padding-heavy batches, truncation), the same 20-update trajectory, every technique on it,
save/load, path selection and run ids, and the science study's analysis on fake data."""

from __future__ import annotations

import copy
import json
import math
import pickle

import numpy as np
import pytest
import torch

from stabletune.errors import ConfigError
from stabletune.unpadded import LAYOUTS, is_unpadded, pack, repad_model_, unpad_model_, varlen_attention
from tinymodel import glue_dir

torch.set_num_threads(1)
FAMILIES = ("bert", "roberta", "electra")
ATOL = 1e-5


def padded_batch(model_type: str, lengths, *, width: int | None = None, num_labels: int = 3, seed: int = 0,
                 vocab: int = 100) -> dict:
    """Right-padded ids of the given lengths (pad id 1 for RoBERTa, as its config says, else 0), two segments."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    width = width or int(lengths.max())
    mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
    pad = 1 if model_type == "roberta" else 0
    ids = torch.where(mask.bool(), torch.randint(3, vocab, mask.shape, generator=g), torch.full_like(mask, pad))
    batch = {"input_ids": ids, "attention_mask": mask, "labels": torch.randint(0, num_labels, (len(lengths),),
                                                                               generator=g)}
    if model_type != "roberta":
        batch["token_type_ids"] = ((torch.arange(width)[None, :] >= lengths[:, None] // 2) & mask.bool()).long()
    return batch


def grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def forward_backward(model, batch):
    model.zero_grad(set_to_none=True)
    out = model(**batch)
    out.loss.backward()
    return out.logits.detach(), out.loss.detach(), grads(model)


def assert_same(ref, got, atol=ATOL):
    (l0, loss0, g0), (l1, loss1, g1) = ref, got
    torch.testing.assert_close(l1, l0, atol=atol, rtol=1e-5)
    torch.testing.assert_close(loss1, loss0, atol=atol, rtol=1e-5)
    assert g1.keys() == g0.keys()
    for n in g0:
        torch.testing.assert_close(g1[n], g0[n], atol=atol, rtol=1e-4, msg=lambda m, n=n: f"{n}: {m}")


def no_dropout(model_type: str) -> dict:
    return dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0)


# ------------------------------------------------------------------------------------------------
# Equality with the Hugging Face model
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("model_type", FAMILIES)
def test_same_logits_loss_and_gradients_as_hf(make_tiny, model_type, layout):
    """Padding-heavy batch (lengths 1..12 in a batch padded to 12, i.e. 55 % padding), two segments."""
    hf = make_tiny(model_type, **no_dropout(model_type)).train()
    batch = padded_batch(model_type, [12, 3, 7, 1, 9, 2, 5, 4])
    ref = forward_backward(hf, batch)
    un = unpad_model_(copy.deepcopy(hf), layout=layout)
    assert is_unpadded(un) and not is_unpadded(hf)
    assert_same(ref, forward_backward(un, batch))


@pytest.mark.parametrize("model_type", FAMILIES)
def test_regression_head_extra_padding_and_eval_mode(make_tiny, model_type):
    """num_labels=1 (STS-B), a batch padded beyond its longest sequence (--padding max_length), eval mode."""
    hf = make_tiny(model_type, num_labels=1, **no_dropout(model_type))
    batch = padded_batch(model_type, [5, 9, 2], width=16, num_labels=1)
    batch["labels"] = batch["labels"].float()
    un = unpad_model_(copy.deepcopy(hf))
    assert_same(forward_backward(hf.train(), batch), forward_backward(un.train(), batch))
    with torch.no_grad():
        torch.testing.assert_close(un.eval()(**batch).logits, hf.eval()(**batch).logits, atol=ATOL, rtol=1e-5)


def test_dropout_on_runs_and_differs_from_eval(make_tiny):
    """With dropout on, the unpadded model draws its own masks (same distribution, not the same bits)."""
    un = unpad_model_(make_tiny("bert", hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.3))
    batch = padded_batch("bert", [6, 3, 8])
    torch.manual_seed(0)
    a = un.train()(**batch).logits
    torch.manual_seed(0)
    b = un(**batch).logits
    c = un.eval()(**batch).logits
    assert torch.equal(a, b) and not torch.allclose(a, c)


@pytest.fixture(scope="module")
def minilm():
    from stabletune.model import load_model

    return load_model("minilm-l6", num_labels=2, dropout=0.0, attn_implementation="sdpa",
                      init_generator=torch.Generator().manual_seed(0))


def test_embedded_minilm_with_real_text_and_truncation(minilm):
    """The embedded MiniLM on real RTE pairs tokenised to at most 24 tokens (most are truncated)."""
    from stabletune.data import load_task_data
    from stabletune.data.batching import collate, encode

    _, rows, _ = load_task_data(task="rte", data_dir=str(glue_dir()))
    short = sorted(rows[:200], key=lambda e: len(e.text_a) + len(e.text_b))[:4]  # a few untruncated ones too
    enc = encode(minilm.tokenizer, short + rows[:6], max_length=24, is_regression=False)
    assert 0 < enc.num_truncated < len(enc) and len(set(enc.lengths.tolist())) > 3
    batch = collate(enc, np.arange(len(enc)), pad_id=minilm.tokenizer.pad_token_id)
    hf = minilm.model.train()
    ref = forward_backward(hf, batch)
    un = unpad_model_(copy.deepcopy(hf))
    assert_same(ref, forward_backward(un, batch))


def test_falls_back_to_hf_where_unpadding_does_not_apply(make_tiny):
    """Left padding, an all-pad row, hidden states asked for: the Hugging Face forward, exactly."""
    hf = make_tiny("bert", **no_dropout("bert")).eval()
    un = unpad_model_(copy.deepcopy(hf))
    batch = padded_batch("bert", [4, 6, 2])
    left = {k: (v.flip(1) if v.dim() == 2 else v) for k, v in batch.items()}
    empty = {k: v.clone() for k, v in batch.items()}
    empty["attention_mask"][1] = 0
    for b in (left, empty):
        assert torch.equal(un(**b).logits, hf(**b).logits)
    out = un(**batch, output_hidden_states=True)
    assert len(out.hidden_states) == hf.config.num_hidden_layers + 1


def test_unsupported_families_raise_value_error(make_tiny):
    for model_type in ("xlnet", "deberta"):
        with pytest.raises(ValueError, match="cannot run .* unpadded"):
            unpad_model_(make_tiny(model_type))
    with pytest.raises(ValueError, match="unknown attention layout"):
        unpad_model_(make_tiny("bert"), layout="magic")


def test_pack_and_varlen_attention_match_per_sequence_attention():
    import torch.nn.functional as F

    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]])
    pk = pack(mask)
    assert pk.lengths == [3, 1, 4] and pk.rows.tolist() == [0, 1, 2, 4, 8, 9, 10, 11] and pk.total == 8
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(8, 8, generator=g) for _ in range(3))
    want = []
    for s, e in zip(pk.cu_seqlens[:-1].tolist(), pk.cu_seqlens[1:].tolist()):  # one sequence at a time
        qs, ks, vs = (x[s:e].view(e - s, 2, 4).transpose(0, 1) for x in (q, k, v))
        want.append(F.scaled_dot_product_attention(qs, ks, vs).transpose(0, 1).reshape(e - s, 8))
    for layout in LAYOUTS:
        torch.testing.assert_close(varlen_attention(q, k, v, pk, num_heads=2, layout=layout), torch.cat(want))
    for bad in (torch.tensor([[0, 1, 1]]), torch.tensor([[0, 0, 0]])):
        with pytest.raises(ValueError, match="ones then zeros"):
            pack(bad)


# ------------------------------------------------------------------------------------------------
# Same modules, same parameters: techniques, save/load, copies
# ------------------------------------------------------------------------------------------------
def test_same_parameters_names_and_round_trip(make_tiny, tmp_path):
    from transformers import AutoModelForSequenceClassification

    hf = make_tiny("bert")
    un = unpad_model_(copy.deepcopy(hf))
    assert list(un.state_dict()) == list(hf.state_dict())
    assert [n for n, _ in un.named_modules()] == [n for n, _ in hf.named_modules()]
    un.save_pretrained(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["architectures"] == ["BertForSequenceClassification"]
    back = AutoModelForSequenceClassification.from_pretrained(tmp_path / "m")
    assert not is_unpadded(back)
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), hf.state_dict().values()))
    clone = pickle.loads(pickle.dumps(un))
    assert is_unpadded(clone) and is_unpadded(copy.deepcopy(un))
    assert not is_unpadded(repad_model_(clone))


TECHNIQUES = [dict(reinit_layers=1, reinit_pooler=True), dict(mixout=0.4), dict(mixout=0.3, mixout_granularity="element"),
              dict(llrd=0.8), dict(pretrained_wd=0.05), dict(optimizer="bertadam", weight_decay=0.01)]
"""The last one runs on RoBERTa (no pooler: re-init and the head differ)."""


@pytest.mark.parametrize("kw", TECHNIQUES, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_techniques_take_the_same_trajectory_on_both_paths(make_tiny, kw):
    """prepare() on an unpadded model: 5 updates (dropout off; Mixout's masks come from the same generator in the
    same order) end at the same parameters as on the Hugging Face model, and the block distances agree."""
    from stabletune.techniques import prepare
    from stabletune.techniques.param_distance import block_distances, snapshot_blocks

    def trajectory(unpadded: bool):
        model = make_tiny("roberta" if "optimizer" in kw else "bert", **no_dropout("bert"))
        if unpadded:
            unpad_model_(model)
        head = [n for n, _ in model.named_parameters() if n.startswith("classifier.")]
        prep = prepare(model, init_generator=torch.Generator().manual_seed(1), lr=1e-3, new_param_names=head, **kw)
        ref = snapshot_blocks(prep.blocks)
        batch = padded_batch(model.config.model_type, [9, 2, 5, 7])
        torch.manual_seed(1234)
        for _ in range(5):
            prep.optimizer.zero_grad(set_to_none=True)
            model(**batch).loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            prep.optimizer.step()
            prep.after_step()
        return {n: p.detach().clone() for n, p in model.named_parameters()}, block_distances(prep.blocks, ref)

    (p_hf, d_hf), (p_un, d_un) = trajectory(False), trajectory(True)
    assert p_hf.keys() == p_un.keys()
    for n in p_hf:
        torch.testing.assert_close(p_un[n], p_hf[n], atol=1e-5, rtol=1e-4, msg=lambda m, n=n: f"{n}: {m}")
    assert len(d_un) == len(d_hf) == 3 and d_un == pytest.approx(d_hf, rel=1e-4, abs=1e-6)


# ------------------------------------------------------------------------------------------------
# Whole runs: path selection, trajectory, results.json, init-from, run ids, ensembles
# ------------------------------------------------------------------------------------------------
def run_cfg(model_dir, **kw):
    from stabletune.config import make_config

    base = dict(task="rte", data_dir=str(glue_dir()), model=str(model_dir), train_size=64, batch_size=8,
                max_steps=20, num_evals=2, max_seq_length=64, eval_batch_size=64, progress=False, lr=1e-3,
                threads=1, dropout=0.0, group_by_length=False)
    base.update(kw)
    return make_config(base)


def test_20_updates_take_the_same_trajectory_on_both_paths(tiny_model, tmp_path):
    """Random batches (RTE: ~45 % padding), dropout off: the same losses, gradient norms, evaluations and test
    scores on both paths; results.json says which path ran; the unpadded run's saved model starts a new run."""
    from stabletune.training import train

    hf = train(run_cfg(tiny_model, encoder_impl="hf"), None)
    un = train(run_cfg(tiny_model, save_model=True), str(tmp_path / "un"))
    assert hf.environment["encoder"] == "hf" and un.environment["encoder"] == "unpadded"
    assert json.loads((tmp_path / "un" / "results.json").read_text())["environment"]["encoder"] == "unpadded"
    assert len(hf.train_log) == len(un.train_log) == 20
    np.testing.assert_allclose([r["loss"] for r in un.train_log], [r["loss"] for r in hf.train_log], rtol=1e-4)
    np.testing.assert_allclose([r["grad_norm"] for r in un.train_log], [r["grad_norm"] for r in hf.train_log],
                               rtol=1e-3)
    for a, b in zip(un.evals, hf.evals):
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4) and a["val"] == b["val"]
    assert un.best["test"] == hf.best["test"] and un.last["test"] == hf.last["test"]
    # --init-from the unpadded run's folder: loads as an ordinary model and runs unpadded again
    nxt = train(run_cfg(tiny_model, init_from=str(tmp_path / "un"), max_steps=2), None)
    assert nxt.status == "finished" and nxt.environment["encoder"] == "unpadded"
    assert nxt.techniques["new_param_names"] == []  # encoder and head both came from the saved model


def test_encoder_path_resolution(tiny_model, tmp_path):
    from transformers import AutoConfig

    from stabletune.model import encoder_path

    assert encoder_path("auto", model=str(tiny_model)) == "unpadded"
    assert encoder_path("auto", model="minilm-l6") == "unpadded"
    assert encoder_path("hf", model="no/such-model") == "hf"  # no look-up needed
    assert encoder_path("auto", model=str(tiny_model), padding="max_length") == "hf"
    assert encoder_path("auto", model=str(tiny_model), attn_implementation="eager") == "hf"
    assert encoder_path("unpadded", model=str(tiny_model), padding="max_length") == "unpadded"
    AutoConfig.for_model("xlnet", d_model=32, n_layer=1, n_head=2).save_pretrained(tmp_path / "xlnet")
    assert encoder_path("auto", model=str(tmp_path / "xlnet")) == "hf"
    with pytest.raises(ConfigError, match="--encoder-impl: unpadded is not available .*xlnet"):
        encoder_path("unpadded", model=str(tmp_path / "xlnet"))


def test_run_ids_follow_the_resolved_path(tmp_path):
    """An id never holds both paths: auto on MiniLM (unpadded) gets a new id, equal to explicit unpadded; runs that
    still resolve to the Hugging Face path keep the ids they had before the unpadded encoder existed."""
    import dataclasses

    from transformers import AutoConfig

    from stabletune.config import RunConfig
    from stabletune.study.spec import run_id_for

    # tests/test_study_spec.py: the id of this run before encoder_impl existed (grouped batches and paper-1k v1
    # were the defaults then)
    cfg = RunConfig(task="cola", split="paper-1k", lr=1e-4, seed=3, group_by_length=True)
    golden = "5ed879f43e7c90e2"

    def rid(c):
        return run_id_for("adam", "cola", "final", c, split_version=1)

    assert rid(dataclasses.replace(cfg, encoder_impl="hf")) == golden
    assert rid(cfg) == rid(dataclasses.replace(cfg, encoder_impl="unpadded")) != golden
    AutoConfig.for_model("xlnet", d_model=32, n_layer=1, n_head=2).save_pretrained(tmp_path / "xlnet")
    x = dataclasses.replace(cfg, model=str(tmp_path / "xlnet"))
    assert rid(x) == rid(dataclasses.replace(x, encoder_impl="hf"))  # auto -> hf: the old id


def test_ensembles_never_vectorise_unpadded_runs(tiny_model):
    from stabletune.training import sequential_reason

    assert "unpadded" in sequential_reason(run_cfg(tiny_model))
    assert sequential_reason(run_cfg(tiny_model, encoder_impl="hf")) is None


def test_bad_encoder_impl_is_a_one_line_config_error(tiny_model, tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "stabletune", "train", "--task", "rte", "--data-dir",
                           str(glue_dir()), "--model", str(tiny_model), "--out", str(tmp_path / "r"),
                           "--encoder-impl", "fast"], capture_output=True, text=True)
    assert proc.returncode == 2 and "--encoder-impl" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------------------------------------
# The science study (studies/unpadded-science.yaml) and its analysis (scripts/unpadded_science.py)
# ------------------------------------------------------------------------------------------------
def _science_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "unpadded_science.py"
    spec = importlib.util.spec_from_file_location("unpadded_science", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_science_study_file_runs_three_methods_on_both_paths():
    from pathlib import Path

    from stabletune.model import run_encoder
    from stabletune.study.spec import load_study

    spec = load_study(Path(__file__).resolve().parents[1] / "studies" / "unpadded-science.yaml")
    assert len(spec.seeds) == 10 and [t.name for t in spec.tasks] == ["cola"]
    assert sorted(spec.methods) == sorted(f"{m}-{p}" for m in ("bertadam", "adam", "reinit")
                                          for p in ("hf", "unpadded"))
    runs = [spec.make_run(m, "cola", spec.seeds[0], "final") for m in spec.methods]
    for r in runs:
        assert run_encoder(r.config) == r.method.rsplit("-", 1)[1]
        assert r.config.dropout == 0.1 and r.config.group_by_length is False
        twin = {"hf": "unpadded", "unpadded": "hf"}[r.method.rsplit("-", 1)[1]]
        other = next(o for o in runs if o.method == f"{r.method.rsplit('-', 1)[0]}-{twin}")
        diff = {k for k, v in r.config.to_dict().items() if other.config.to_dict()[k] != v}
        assert diff == {"encoder_impl"}  # the paths differ in nothing else
    assert len({r.run_id for r in runs}) == 6


def test_science_analysis_welch_and_bonferroni_on_fake_data():
    """Fake results: adam and bertadam drawn alike on both paths, reinit shifted by 3 SDs on the unpadded path."""
    import pandas as pd
    from scipy import stats

    sci = _science_script()
    rng = np.random.default_rng(0)
    rows, scores = [], {}
    for method, shift in (("bertadam", 0.0), ("adam", 0.0), ("reinit", 0.3)):
        for path in ("hf", "unpadded"):
            xs = rng.normal(0.4 + (shift if path == "unpadded" else 0.0), 0.1, 10)
            scores[method, path] = xs
            rows += [{"method": f"{method}-{path}", "task": "cola", "status": "finished", "best_test_mcc": x,
                      "wall_s": 100.0 if path == "hf" else 60.0, "examples_per_s": 1.0} for x in xs]
    rows.append({"method": "adam-hf", "task": "cola", "status": "diverged", "best_test_mcc": -5.0,
                 "wall_s": 1.0, "examples_per_s": 1.0})  # not averaged, reported
    res = sci.compare_paths(pd.DataFrame(rows), score="best_test_mcc")
    by = {c["method"]: c for c in res["comparisons"]}
    assert list(by) == ["bertadam", "adam", "reinit"]
    for m, c in by.items():
        t, p = stats.ttest_ind(scores[m, "hf"], scores[m, "unpadded"], equal_var=False)
        assert c["p"] == pytest.approx(p) and c["t"] == pytest.approx(t)
        assert c["p_bonferroni"] == pytest.approx(min(1.0, 3 * p)) and c["n_hf"] == c["n_unpadded"] == 10
    assert by["bertadam"]["no_difference"] and by["adam"]["no_difference"] and not by["reinit"]["no_difference"]
    assert not res["all_no_difference"] and res["not_finished"] == {"adam-hf/diverged": 1}
    assert res["wall"]["hf"]["wall_s_total"] == 3000 and res["wall"]["unpadded"]["wall_s_mean"] == 60
    table = sci.fmt(res)
    assert "DIFFERENT" in table and "unpadded / hf wall time per run: 0.60" in table
    with pytest.raises(ValueError, match="no column"):
        sci.compare_paths(pd.DataFrame(rows), score="best_test_acc")


def test_science_analysis_reads_a_real_study(tiny_model, tmp_path, capsys):
    """A tiny study of one method on both paths, dropout off: the script reads the stored scores from the database;
    the two paths score the same (t = 0, p = 1; NaN if both seeds also score alike, which counts as "too few")."""
    from stabletune.study import run_study

    study = tmp_path / "sci.yaml"
    study.write_text(f"""
name: sci
data_dir: {glue_dir()}
base: {{model: {tiny_model}, train_size: 16, batch_size: 8, max_steps: 2, num_evals: 1, max_seq_length: 48,
        eval_batch_size: 64, lr: 1.0e-3, dropout: 0.0, group_by_length: false, threads: 1}}
methods:
  adam-hf: {{encoder_impl: hf}}
  adam-unpadded: {{encoder_impl: unpadded}}
tasks: [rte]
seeds: 2
""")
    outcome = run_study(study, workers=0, progress=False)
    assert outcome.failures == []
    sci = _science_script()
    code = sci.main([str(study), "--json"])
    res = json.loads(capsys.readouterr().out)
    (c,) = res["comparisons"]
    assert res["score"] == "best_test_acc" and c["method"] == "adam" and c["n_hf"] == c["n_unpadded"] == 2
    assert c["mean_hf"] == pytest.approx(c["mean_unpadded"]) and res["wall"]["unpadded"]["runs"] == 2
    if math.isnan(c["p"]):
        assert c["sd_hf"] == 0 and code == 1
    else:
        assert c["p"] == pytest.approx(1.0) and c["no_difference"] and code == 0


@pytest.mark.parametrize("model_type", FAMILIES)
def test_last_hidden_state_all_tokens_or_first_token_only(make_tiny, model_type):
    """first_token_only=False: every real token's last hidden state as Hugging Face's (pads are zeros);
    the default for a classification model: only the first token's, (batch, 1, hidden)."""
    hf = make_tiny(model_type, **no_dropout(model_type)).eval()
    batch = {k: v for k, v in padded_batch(model_type, [6, 2, 9]).items() if k != "labels"}
    base_hf = hf.base_model
    want = base_hf(**batch).last_hidden_state
    full = unpad_model_(copy.deepcopy(hf), first_token_only=False).base_model(**batch).last_hidden_state
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(full[real], want[real], atol=ATOL, rtol=1e-5)
    assert torch.equal(full[~real], torch.zeros_like(full[~real]))
    first = unpad_model_(copy.deepcopy(hf)).base_model(**batch).last_hidden_state
    assert first.shape == (3, 1, hf.config.hidden_size)
    torch.testing.assert_close(first, want[:, :1], atol=ATOL, rtol=1e-5)


def test_bf16_autocast_runs_and_stays_close(make_tiny):
    """--precision bf16 (autocast): Linear outputs in bf16, LayerNorms in fp32; the packed moves keep dtypes."""
    hf = make_tiny("bert", **no_dropout("bert")).train()
    un = unpad_model_(copy.deepcopy(hf))
    batch = padded_batch("bert", [7, 2, 5])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a, b = hf(**batch), un(**batch)
    b.loss.backward()
    torch.testing.assert_close(b.logits.float(), a.logits.float(), atol=5e-2, rtol=5e-2)
    assert all(torch.isfinite(p.grad).all() for p in un.parameters() if p.grad is not None)
