"""Studies: methods x tasks x seeds from one YAML file, stored in SQLite, resumable, on a process pool or Ray.

A study is a layer over runs (a run never knows it belongs to one)::

    from stabletune.study import load_study, run_study, load_results, load_frames

    spec = load_study("studies/smoke.yaml")       # validated: every run config is built once
    run_study(spec, backend="local", workers=2)   # resumable: rerun after any crash
    df = load_results("studies/smoke.yaml")       # one row per run
    frames = load_frames("studies/smoke.yaml")    # ResultsFrames for stabletune.analysis

See ``docs/studies.md``. Importing this package does not import torch.
"""

from __future__ import annotations

from stabletune.study.results import export_frames, export_results, load_frames, load_results
from stabletune.study.runner import EarlyKill, StudyOutcome, run_study, study_status
from stabletune.study.spec import MethodSpec, RunSpec, Seeds, StudySpec, TaskEntry, load_study, parse_study
from stabletune.study.store import SCHEMA_VERSION, Store

__all__ = [
    "EarlyKill", "MethodSpec", "RunSpec", "SCHEMA_VERSION", "Seeds", "Store", "StudyOutcome", "StudySpec",
    "TaskEntry", "export_frames", "export_results", "load_frames", "load_results", "load_study", "parse_study",
    "run_study", "study_status",
]
