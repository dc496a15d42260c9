"""`stabletune fit`: search the paper's recipe on validation within a time budget; write the chosen model."""

from __future__ import annotations

import argparse
import json
import sys


def register(sub) -> None:
    from stabletune.fitting import DEFAULT_BUDGET, DEFAULT_SEEDS

    p = sub.add_parser(
        "fit", help="stable fine-tuning in one command: the paper's recipe searched on validation",
        description="Fine-tune stably without knowing the paper: debiased Adam always; the learning rate, the "
                    "number of re-initialised top layers and the number of updates chosen on validation, each "
                    f"recipe judged by its mean over {DEFAULT_SEEDS} seeds, within a time budget. Resumable: rerun "
                    "the same command after an interruption. See docs/fit.md. Example: stabletune fit "
                    "--train-file train.csv --dev-file val.csv --test-file test.csv --text-columns review "
                    "--label-column sentiment --out sentiment-model")
    d = p.add_argument_group("data (your files, or a GLUE task)")
    d.add_argument("--train-file", metavar="FILE", help="CSV (header row) or JSONL training file")
    d.add_argument("--dev-file", metavar="FILE", help="validation file (default: 10 %% of the training file)")
    d.add_argument("--test-file", metavar="FILE", help="test file, scored once on the final model")
    d.add_argument("--text-columns", metavar="A[,B]", help="one or two text columns")
    d.add_argument("--label-column", default="label", metavar="NAME", help="the label column (default: label)")
    d.add_argument("--task-type", choices=("auto", "classification", "regression"), default="auto",
                   help="auto: regression if every label is a number and one is not an integer (default)")
    d.add_argument("--task", metavar="NAME", help="a GLUE task (rte, mrpc, sts-b, cola, sst-2, ...) or a name for "
                                                  "your data")
    d.add_argument("--data-dir", metavar="DIR", help="GLUE folder (default: $STABLETUNE_DATA_DIR)")
    d.add_argument("--split", choices=("paper-small", "paper-1k", "dev-as-test"),
                   help="GLUE tasks: the validation/test split (default paper-small; paper-1k for the large tasks)")
    s = p.add_argument_group("search")
    s.add_argument("--model", default="minilm-l6", help="hub name, local folder, or minilm-l6 (embedded; default)")
    s.add_argument("--metric", metavar="NAME",
                   help="what to select on: acc, f1 (of the second label), f1:LABEL, f1_macro, mcc, pearson, "
                        "spearman (default: acc for classes, spearman for regression)")
    s.add_argument("--budget", default=DEFAULT_BUDGET, metavar="TIME",
                   help=f"wall time for the whole fit: 900, 90s, 20m, 1.5h, or auto (default {DEFAULT_BUDGET}: "
                        "a fifth of what the exhaustive grid would take, estimated from the first run; with "
                        "MiniLM on ~1,000 rows and 2 cores ~20 min for short texts, ~45 min for pairs; docs/fit.md)")
    s.add_argument("--seeds", type=int, default=DEFAULT_SEEDS, metavar="N",
                   help=f"seeds per recipe, at least 3 (default {DEFAULT_SEEDS})")
    s.add_argument("--max-seq-length", type=int, metavar="N", help="truncate texts to N tokens (default 128)")
    s.add_argument("--batch-size", type=int, metavar="N", help="training batch size (default 32)")
    x = p.add_argument_group("execution")
    x.add_argument("--out", required=True, metavar="DIR", help="output folder (an unfinished fit there is resumed)")
    x.add_argument("--overwrite", action="store_true", help="start over if OUT holds a finished fit")
    x.add_argument("--workers", type=int, metavar="N", help="concurrent runs (default: one per core up to 4)")
    x.add_argument("--device", metavar="DEV", help="auto (default), cpu, cuda")
    x.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), help="default auto")
    x.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from stabletune.fitting import fit, parse_budget

    options = {k: getattr(args, k) for k in ("max_seq_length", "batch_size", "device", "precision", "split")
               if getattr(args, k) is not None}
    res = fit(out=args.out, train_file=args.train_file, dev_file=args.dev_file, test_file=args.test_file,
              task=args.task, data_dir=args.data_dir, text_columns=args.text_columns,
              label_column=args.label_column, task_type=args.task_type, model=args.model, metric=args.metric,
              budget=parse_budget(args.budget), seeds=args.seeds, workers=args.workers, overwrite=args.overwrite,
              progress=args.progress, **options)
    ch, rec = res.choice, res.record
    sys.stderr.write(f"stabletune fit: chose {ch['recipe']} (validation {rec['metric']} {ch['mean_val']:.4f} "
                     f"+- {ch['std_val']:.4f} over {ch['seeds']} seeds); shipped seed {ch['shipped_seed']}\n")
    if res.test is not None and res.test.get("score") is not None:
        base = res.test.get("majority_baseline")
        where = (f"{res.test['rows']} rows of {res.test['file']}" if res.test.get("file")
                 else f"the {res.test['split']} test split")
        sys.stderr.write(f"stabletune fit: test {rec['metric']} {res.test['score']:.4f} on {where}"
                         + (f" (majority baseline {base:.4f})" if base is not None else "") + "\n")
    sys.stderr.write(f"stabletune fit: wrote {res.out_dir} (model, fit.json, README.md, fit.png) in "
                     f"{rec['timings']['wall_s'] / 60:.1f} min; next: stabletune predict {res.out_dir} --input FILE "
                     "--output FILE\n")
    print(json.dumps({"out": res.out_dir, "choice": ch, "test": res.test, "wall_s": rec["timings"]["wall_s"]},
                     default=str))
    return 0
