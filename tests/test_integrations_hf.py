"""The Hugging Face Trainer integration takes the same parameter updates as stabletune's own loop.

Both sides start from the same loaded model and init seed and see the same batches (stabletune's sampler and
collator fed to Trainer through a DataLoader); dropout and Mixout are off, so the only differences left would be
in the optimizer, the order of re-init / parameter groups / the post-step hook, the schedule and the clipping.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

pytest.importorskip("accelerate")  # Trainer needs it (extra `bench`/`hf`)

from stabletune.config import make_config  # noqa: E402
from stabletune.data import load_task_data, make_splits  # noqa: E402
from stabletune.data.batching import collate, epoch_batches, steps_per_epoch  # noqa: E402
from stabletune.integrations.hf import prepare_for_trainer  # noqa: E402
from stabletune.model import load_model  # noqa: E402
from stabletune.engine.setup import derive_seed, encode_splits  # noqa: E402
from stabletune.training import train  # noqa: E402

WORDS = "the a cat dog sat ran on under mat log big small red blue quickly slowly".split()


def _write_csv(path, n, seed):
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["premise", "hypothesis", "label"])
        for _ in range(n):
            a = " ".join(rng.choice(WORDS, rng.integers(3, 14)))
            b = " ".join(rng.choice(WORDS, rng.integers(2, 9)))
            w.writerow([a, b, int(rng.integers(0, 2))])
    return str(path)


class _Batches:
    """stabletune's epoch order (epoch_batches with the run's order generator) as a DataLoader batch sampler."""

    def __init__(self, lengths, batch_size, generator, group_by_length):
        self.lengths, self.batch_size, self.generator, self.group = lengths, batch_size, generator, group_by_length

    def __iter__(self):
        yield from (b.tolist() for b in epoch_batches(self.lengths, batch_size=self.batch_size,
                                                       generator=self.generator, group_by_length=self.group))

    def __len__(self):
        return steps_per_epoch(len(self.lengths), self.batch_size)


@pytest.mark.parametrize("techniques", [
    dict(optimizer="bertadam", reinit_layers=1, reinit_pooler=True, llrd=0.8, pretrained_wd=0.5),
    dict(optimizer="adamw", weight_decay=0.01, pretrained_wd=0.3, pretrained_wd_new_params="zero"),
], ids=["bertadam-reinit-llrd-pwd", "adamw-wd-pwd-zero"])
def test_trainer_takes_the_same_updates_as_stabletune(tmp_path, tiny_model, techniques):
    from torch.utils.data import DataLoader
    from transformers import Trainer, TrainingArguments

    torch.set_num_threads(1)
    opts = dict(train_file=_write_csv(tmp_path / "train.csv", 40, 0), dev_file=_write_csv(tmp_path / "dev.csv", 16, 1),
                text_columns="premise,hypothesis", model=str(tiny_model), dropout=0.0, batch_size=8, max_steps=7,
                warmup_steps=2, lr=2e-3, num_evals=1, seed=3, threads=1, progress=False, save_model=True,
                **techniques)
    cfg = make_config(opts)
    res = train(cfg, str(tmp_path / "run"))  # stabletune's loop; num_evals=1: the saved best model is the last
    assert res.status == "finished" and res.best["step"] == 7

    # --- the same start: model + head from the init seed, the same splits and tokens --------------------------
    spec, train_rows, dev_rows = load_task_data(task=None, data_dir=None, train_file=cfg.train_file,
                                                dev_file=cfg.dev_file, text_columns=cfg.text_columns)
    splits = make_splits(spec, train_rows, dev_rows, split=cfg.split, seed=cfg.split_seed)
    init_gen = torch.Generator().manual_seed(cfg.resolved_init_seed)
    loaded = load_model(cfg.model, num_labels=spec.num_labels, dropout=0.0, attn_implementation="sdpa",
                        init_generator=init_gen)
    enc = encode_splits(loaded.tokenizer, splits, max_length=cfg.max_seq_length, is_regression=False)["train"]
    pad_id = loaded.tokenizer.pad_token_id

    args = TrainingArguments(
        output_dir=str(tmp_path / "hf"), learning_rate=cfg.lr, weight_decay=cfg.weight_decay, max_steps=7,
        warmup_steps=2, lr_scheduler_type="linear", max_grad_norm=1.0, per_device_train_batch_size=8,
        report_to="none", save_strategy="no", logging_strategy="no", use_cpu=True, disable_tqdm=True,
        dataloader_num_workers=0, seed=123)
    techniques = {k: v for k, v in techniques.items() if k != "weight_decay"}
    st = prepare_for_trainer(loaded.model, args, init_generator=init_gen, new_param_names=loaded.new_param_names,
                             **techniques)
    order_gen = torch.Generator().manual_seed(derive_seed(cfg.resolved_data_seed, "order"))
    batches = _Batches(enc.lengths, 8, order_gen, cfg.group_by_length)  # random batches by default, as the run
    loader = DataLoader(list(range(len(enc))), batch_sampler=batches,
                        collate_fn=lambda idx: collate(enc, idx, pad_id=pad_id))

    class StabletuneBatches(Trainer):
        def get_train_dataloader(self):
            return self.accelerator.prepare(loader)

    trainer = StabletuneBatches(model=st.model, args=args, train_dataset=list(range(len(enc))),
                                optimizers=st.optimizers, callbacks=st.callbacks)
    out = trainer.train()
    assert out.global_step == 7

    from transformers import AutoModelForSequenceClassification

    ours = AutoModelForSequenceClassification.from_pretrained(tmp_path / "run" / "model").state_dict()
    theirs = st.model.state_dict()
    assert set(ours) <= set(theirs)
    start = load_model(cfg.model, num_labels=spec.num_labels, dropout=0.0, attn_implementation="sdpa",
                       init_generator=torch.Generator().manual_seed(cfg.resolved_init_seed)).model.state_dict()
    moved = [k for k in ours if not torch.equal(ours[k], start[k])]
    assert len(moved) > 0.9 * len(ours)  # the runs really trained
    diff = {k: (ours[k] - theirs[k]).abs().max().item() for k in ours if ours[k].is_floating_point()}
    worst = max(diff, key=diff.get)
    # Equal up to float32 rounding, not bit for bit: Trainer runs the forward/backward through other call sites, and
    # oneDNN picks its matmul blocking by CPU (measured: 0.0 with AVX-512, 1.07e-6 with ONEDNN_MAX_CPU_ISA=AVX2).
    # Adam turns a rounding-level gradient difference into a relative update difference of the same size, so over
    # `steps` updates of at most `lr` each an element moves apart by ~ steps * lr * 1e-4 at most (1.4e-6 here).
    # Any real divergence (another optimizer, schedule, clipping or order of the hooks) moves elements by a
    # sizeable fraction of one step's lr (>= 1e-4 here), so a bound of steps * lr * 1e-3 keeps a 10x margin on both.
    steps, lr = cfg.max_steps, cfg.lr
    tolerance = steps * lr * 1e-3
    moved_by = max((ours[k] - start[k]).abs().max().item() for k in ours if ours[k].is_floating_point())
    assert moved_by > 100 * tolerance  # the bound is far below what training changed
    assert diff[worst] <= tolerance, f"{worst} differs by {diff[worst]} (tolerance {tolerance:.2g})"


def test_forgotten_optimizer_is_refused(tmp_path, make_tiny, make_batch):
    from transformers import Trainer, TrainingArguments

    model = make_tiny("bert", num_labels=2)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=1, report_to="none", use_cpu=True,
                             save_strategy="no", disable_tqdm=True)
    st = prepare_for_trainer(model, args, reinit_layers=1)
    batch = make_batch("bert", num_labels=2)
    rows = [{k: v[i] for k, v in batch.items()} for i in range(4)]
    trainer = Trainer(model=st.model, args=args, train_dataset=rows, callbacks=st.callbacks)  # no optimizers=
    with pytest.raises(ValueError, match="optimizers=st.optimizers"):
        trainer.train()


def test_reinit_happens_at_prepare_and_bad_values_are_value_errors(make_tiny):
    from transformers import TrainingArguments

    model = make_tiny("bert", num_labels=2)
    top = model.bert.encoder.layer[-1].attention.self.query.weight
    before = top.detach().clone()
    args = TrainingArguments(output_dir="unused", report_to="none", use_cpu=True, seed=5)
    st = prepare_for_trainer(model, args, reinit_layers=1, llrd=0.5)
    assert not torch.equal(before, top)  # re-initialised before any Trainer exists
    assert st.model is model and st.optimizers[1] is None
    lrs = sorted({g["lr"] for g in st.optimizer.param_groups})
    assert lrs[-1] == pytest.approx(args.learning_rate) and len(lrs) > 2  # LLRD: one peak rate per depth
    with pytest.raises(ValueError, match="^invalid reinit_layers: 99 exceeds"):  # names the argument, not an option
        prepare_for_trainer(make_tiny("bert", num_labels=2), args, reinit_layers=99)
