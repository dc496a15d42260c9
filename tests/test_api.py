"""The documented Python API, as a user's script meets it: ``from stabletune import train, fit, predict_file,
run_study`` in a fresh interpreter gives the four functions, and each runs (tiny model, tiny data). Issue 24:
``train`` used to be the module ``stabletune.train`` (not callable) once anything had imported it, and ``fit`` a
callable-module wrapper written to dodge the same clash."""

from __future__ import annotations

import json
import subprocess
import sys

from tinymodel import write_user_data

SCRIPT = """
import json, sys
import stabletune.training, stabletune.fitting.recipe  # importing the modules must not rebind the names
from stabletune import train, fit, predict_file, run_study, make_config
from stabletune.fitting import SearchSpace

model, data, tmp = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
assert all(callable(f) and type(f).__name__ == "function" for f in (train, fit, predict_file, run_study))
user = dict(train_file=data["train"], dev_file=data["val"], text_columns=["review"], label_column="verdict")
run = train(make_config({**user, "model": model, "max_steps": 4, "batch_size": 8, "num_evals": 1,
                         "max_seq_length": 32, "threads": 1, "progress": False}), tmp + "/run")
if __name__ == "__main__":
    res = fit(**user, model=model, out=tmp + "/fitted", workers=0, progress=False, batch_size=16, num_evals=1,
              threads=1, space=SearchSpace(lrs=(1e-2,), layers=(0,), updates=(6,), anchor_lr=1e-2, anchor_layers=0))
    pred = predict_file(tmp + "/fitted", data["test"], tmp + "/pred.csv")
    with open(tmp + "/study.yaml", "w") as f:
        f.write("name: api\\nbase: {max_steps: 4, num_evals: 1, batch_size: 8, max_seq_length: 32, model: %s}\\n"
                "methods: {standard: {}}\\ntasks:\\n  - {train_file: %s, dev_file: %s, text_columns: [review],"
                " label_column: verdict, split: files, name: reviews}\\nseeds: 2\\nbaseline: standard\\n"
                % (model, data["train"], data["val"]))
    outcome = run_study(tmp + "/study.yaml", backend="inline", progress=False)
    print(json.dumps({"train": run.status, "fit": res.choice["seeds"], "predict": pred.rows,
                      "study": outcome.counts.get("finished")}))
"""


def test_the_public_api_in_a_fresh_interpreter(tiny_model, tmp_path):
    data = {k: str(v) for k, v in write_user_data(tmp_path / "data").items()}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tiny_model), json.dumps(data), str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"train": "finished", "fit": 3, "predict": 24,
                                                                 "study": 2}
