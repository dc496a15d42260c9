"""`stabletune predict MODEL_DIR --input FILE --output FILE`: apply a saved classifier to a CSV/JSONL file."""

from __future__ import annotations

import argparse
import json


def register(sub) -> None:
    p = sub.add_parser("predict", help="predict a CSV/JSONL file with a saved model (fit, train --save-model, HF)",
                       description="Predict every row of a CSV/JSONL file with the model that `stabletune fit` or "
                                   "`stabletune train --save-model` wrote (or any Hugging Face sequence-"
                                   "classification folder). The output keeps the input's rows, order and columns "
                                   "and adds prediction (a label name, or a regression's score) and prob_<label> "
                                   "per class. Example: stabletune predict sentiment-model --input new.csv "
                                   "--output predictions.csv")
    p.add_argument("model_dir", metavar="MODEL_DIR", help="fit output folder, train run folder or HF model folder")
    p.add_argument("--input", required=True, metavar="FILE", help="CSV (header row), TSV or JSONL file to predict")
    p.add_argument("--output", required=True, metavar="FILE", help="where to write (.csv, .tsv, .jsonl or .json)")
    p.add_argument("--text-columns", metavar="A[,B]", help="text column(s) (default: the ones the model was "
                                                             "trained on)")
    p.add_argument("--label-column", metavar="NAME", help="gold labels to score against (default: the training "
                                                           "label column, when the file has it)")
    p.add_argument("--batch-size", type=int, metavar="N", help="rows per forward pass (default 128)")
    p.add_argument("--max-seq-length", type=int, metavar="N", help="truncation (default: the training one, or 128)")
    p.add_argument("--device", default="auto", help="auto (a GPU if there is one), cpu, cuda, cuda:1 ...")
    p.add_argument("--threads", type=int, metavar="N", help="torch threads (default: torch's choice)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from stabletune.errors import ConfigError
    from stabletune.predict import predict_file

    for name in ("batch_size", "max_seq_length", "threads"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise ConfigError(f"invalid option --{name.replace('_', '-')}: must be > 0, got {value}")
    res = predict_file(args.model_dir, args.input, args.output, text_columns=args.text_columns,
                       label_column=args.label_column, batch_size=args.batch_size,
                       max_seq_length=args.max_seq_length, device=args.device, threads=args.threads,
                       progress=args.progress)
    summary = {"rows": res.rows, "output": res.output}
    if res.metrics is not None:
        summary.update(metric=res.metric, metrics=res.metrics, majority_baseline=res.majority_baseline)
    print(json.dumps(summary, default=str))
    return 0
