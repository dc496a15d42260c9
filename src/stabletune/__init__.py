"""stabletune: stable few-sample fine-tuning of BERT-family encoders (Zhang et al., ICLR 2021).

Public API::

    from stabletune import RunConfig, make_config, train
    result = train(make_config({"task": "rte", "data_dir": "../shared/data/glue", "max_steps": 50}), "runs/rte")

    from stabletune import fit, predict_file        # the practitioner's path: search, then apply
    res = fit(train_file="train.csv", dev_file="val.csv", text_columns=["review"], label_column="sentiment",
              out="sentiment-model")
    predict_file("sentiment-model", "new.csv", "predictions.csv")
"""

from __future__ import annotations

__version__ = "0.1.0"

from stabletune.config import RunConfig, make_config  # noqa: E402

__all__ = ["RunConfig", "make_config", "train", "fit", "predict_file", "StudySpec", "load_study", "run_study",
           "load_results", "__version__"]


def __getattr__(name: str):  # lazy: importing stabletune must not import torch (analysis code relies on it)
    if name == "train":
        from stabletune.training import train

        return train
    if name == "fit":
        from stabletune.fitting import fit

        return fit
    if name == "predict_file":
        from stabletune.predict import predict_file

        return predict_file
    if name in ("StudySpec", "load_study", "run_study", "load_results"):
        from stabletune import study

        return getattr(study, name)
    raise AttributeError(name)
