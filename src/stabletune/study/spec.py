"""Study files: methods x tasks x seeds (+ hyperparameter search) expanded into validated run configs.

A study is a layer over runs: it turns one YAML file into :class:`stabletune.config.RunConfig` objects and
never changes what a run does. The file (see ``docs/studies.md``)::

    name: smoke                      # names the database: <name>.db next to this file
    data_dir: ../../shared/data/glue # relative to this file; --data-dir overrides it
    base: {train_size: 32, max_steps: 4}       # RunConfig keys shared by every run
    methods:                         # name -> RunConfig overrides (+ search, search_seeds)
      bertadam: {optimizer: bertadam}
      adamw: {optimizer: adamw}
      mixout:
        search: {mixout: [0.1, 0.3, 0.5]}     # Appendix H: pick by mean validation score
        search_seeds: 8
    tasks: [rte, {task: sst-2, split: paper-1k, name: sst-2-1k}]
    seeds: 3                         # or [0, 5, 9], or {init: 10, data: 10} (Appendix B)
    baseline: adamw                  # the method reports compare against
    equivalence_margin: 1.0          # optional: points (score x 100) within which "no gain" claims are tested (TOST)

Precedence of run options (lowest to highest): RunConfig defaults < ``base`` < task entry < method <
search candidate < seeds; the study's ``data_dir`` fills runs that set none; ``--data-dir`` wins over all.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from stabletune.config import FIELDS, RunConfig, coerce, make_config
from stabletune.errors import ConfigError
from stabletune.tasks import NAME_RE

STUDY_KEYS = ("name", "description", "base", "methods", "tasks", "seeds", "search_seeds", "baseline", "data_dir",
              "equivalence_margin")
METHOD_KEYS = ("search", "search_seeds")
PHASES = ("search", "final")

#: Run options a study decides itself; setting them in base/methods/tasks is an error.
RESERVED = {
    "task": "tasks come from the study's `tasks:` list",
    "seed": "seeds come from the study's `seeds:`",
    "init_seed": "seeds come from the study's `seeds:` (use `seeds: {init: [...], data: [...]}`)",
    "data_seed": "seeds come from the study's `seeds:` (use `seeds: {init: [...], data: [...]}`)",
    "out": "a study stores its results in its SQLite database, not in run folders",
    "overwrite": "a study writes no run folders",
    "save_model": "a study writes no run folders (train a chosen configuration with `stabletune train`)",
}

#: Config keys that do not change what a run computes: left out of the run id, so a study resumes on
#: another machine, data location or thread count, and with or without logging (``report_to``, ``logging_dir``).
HASH_EXCLUDE = ("data_dir", "threads", "progress", "out", "overwrite", "report_to", "logging_dir")

#: RunConfig's fields when run ids were introduced (2026-11-26). A field added since enters a run's id only when
#: it is set away from its default, so the runs a study stored before that field existed keep their ids (and the
#: study resumes instead of recomputing everything).
HASHED_FIELDS_V1 = frozenset((
    "adam_beta1", "adam_beta2", "adam_eps", "attn_implementation", "batch_size", "data_dir", "data_seed", "dev_file",
    "device", "dropout", "epochs", "eval_batch_size", "group_by_length", "init_from", "init_seed", "label_column",
    "llrd", "lr", "max_grad_norm", "max_seq_length", "max_steps", "mixout", "mixout_granularity", "mixout_targets",
    "model", "num_evals", "optimizer", "out", "overwrite", "precision", "pretrained_wd", "pretrained_wd_new_params",
    "progress", "reinit_layers", "reinit_pooler", "save_model", "seed", "split", "split_seed", "task", "task_type",
    "text_columns", "threads", "track_param_distance", "train_file", "train_size", "warmup_ratio", "warmup_steps",
    "weight_decay"))

#: Path-valued options resolved relative to the study file.
PATH_KEYS = ("data_dir", "train_file", "dev_file", "init_from", "logging_dir")



# ------------------------------------------------------------------------------------------------
# YAML with duplicate-key detection
# ------------------------------------------------------------------------------------------------
class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    out: dict = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in out:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        out[key] = loader.construct_object(value_node, deep=deep)
    return out


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _parse_yaml(text: str, where: str) -> Any:
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{where}{line}: invalid YAML: {problem}") from None


# ------------------------------------------------------------------------------------------------
# The pieces of a study
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Seeds:
    """The seeds of one run. ``init_seed``/``data_seed`` None means "same as seed" (RunConfig's rule)."""

    seed: int
    init_seed: int | None = None
    data_seed: int | None = None

    def overrides(self) -> dict[str, int | None]:
        return {"seed": self.seed, "init_seed": self.init_seed, "data_seed": self.data_seed}

    def label(self) -> str:
        if self.init_seed is None and self.data_seed is None:
            return f"s{self.seed}"
        return f"i{self.init_seed}d{self.data_seed}"


@dataclass
class MethodSpec:
    """One method: RunConfig overrides, and optionally a search space picked on the search seeds."""

    name: str
    overrides: dict[str, Any]
    search: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    """option -> {task name or "*": values}: a search space may differ per task (Section 6)."""
    search_seeds: list[Seeds] | None = None

    def values(self, key: str, task: str) -> list[Any]:
        per_task = self.search[key]
        return per_task.get(task, per_task.get("*", []))

    def candidates(self, task: str = "*") -> list[dict[str, Any]]:
        """Every point of the search grid for ``task``, in file order ([{}] without a search)."""
        if not self.search:
            return [{}]
        keys = list(self.search)
        return [dict(zip(keys, values)) for values in itertools.product(*(self.values(k, task) for k in keys))]


@dataclass
class TaskEntry:
    """One entry of ``tasks:``: a label (``name``) and the RunConfig keys it sets (at least ``task``)."""

    name: str
    overrides: dict[str, Any]


@dataclass
class RunSpec:
    """One planned run of a study."""

    run_id: str
    method: str
    task: str
    phase: str
    seeds: Seeds
    candidate: dict[str, Any]
    config: RunConfig
    order: tuple

    @property
    def group(self) -> tuple[str, str, str, str]:
        """Runs that differ only in their seeds (peers for early kill, a point of a search)."""
        return (self.method, self.task, self.phase, canonical_json(self.candidate))

    def label(self) -> str:
        cand = "".join(f" {k}={v}" for k, v in self.candidate.items())
        return f"{self.method}/{self.task}/{self.seeds.label()}{cand}"


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def run_id_for(method: str, task: str, phase: str, cfg: RunConfig, *, split_version: int | None = None) -> str:
    """Stable id of a run: a hash of its resolved config (seeds included), method, task, phase and the version of
    its split's definition.

    Options in :data:`HASH_EXCLUDE` (data location, threads, progress) are left out, and so are options added
    after :data:`HASHED_FIELDS_V1` while they keep their default. The split version
    (:data:`stabletune.data.splits.SPLIT_VERSIONS`, or ``split_version`` to ask what id a run drawn with another
    definition had) enters the hash only from version 2 on: runs of a split that never changed keep their ids,
    and runs drawn with an older definition are never reused as results of the current one.

    Changing the *default* of a field in :data:`HASHED_FIELDS_V1` (``group_by_length`` became False on
    2026-12-01) changes the id of every run that relies on it: those fields are always hashed with their
    value, so a stored run made under the old default is never taken for a run of the new one.

    The encoder path is hashed as it resolves, not as written (``encoder_impl`` itself is left out): a run on
    the unpadded encoder carries ``"encoder": "unpadded"`` in its key, a run on the Hugging Face path carries
    nothing. So runs stored before the unpadded encoder existed (all Hugging Face runs) keep their ids exactly
    when they still resolve to the Hugging Face path (``encoder_impl: hf``, or a family without the unpadded
    encoder), and a run that now computes unpadded gets a new id: one id never holds runs of both paths.
    """
    from stabletune.data.splits import SPLIT_VERSIONS
    from stabletune.model import run_encoder

    defaults = RunConfig()
    conf = {k: v for k, v in cfg.to_dict().items() if k not in HASH_EXCLUDE and k != "encoder_impl"
            and (k in HASHED_FIELDS_V1 or v != getattr(defaults, k))}
    key: dict[str, Any] = {"method": method, "task": task, "phase": phase, "config": conf}
    if run_encoder(cfg) == "unpadded":
        key["encoder"] = "unpadded"
    version = SPLIT_VERSIONS.get(cfg.split, 1) if split_version is None else split_version
    if version != 1:
        key["split_version"] = version
    return hashlib.sha256(canonical_json(key).encode()).hexdigest()[:16]


@dataclass
class StudySpec:
    """A parsed, validated study file. Build with :func:`load_study` or :func:`parse_study`."""

    name: str
    path: Path | None
    text: str
    base: dict[str, Any]
    methods: dict[str, MethodSpec]
    tasks: list[TaskEntry]
    seeds: list[Seeds]
    baseline: str | None = None
    description: str | None = None
    data_dir: str | None = None
    data_dir_override: str | None = None
    equivalence_margin: float | None = None

    # --- derived -------------------------------------------------------------------------------
    @property
    def default_db(self) -> Path:
        """``<name>.db`` next to the study file (the working directory for a spec without a file)."""
        folder = self.path.parent if self.path is not None else Path.cwd()
        return folder / f"{self.name}.db"

    @property
    def where(self) -> str:
        return str(self.path) if self.path is not None else f"study {self.name!r}"

    def with_data_dir(self, data_dir: str | None) -> "StudySpec":
        """A copy whose every run reads data from ``data_dir`` (the CLI's ``--data-dir``)."""
        if data_dir is None:
            return self
        return dataclasses.replace(self, data_dir_override=str(Path(data_dir).expanduser().resolve()))

    def run_overrides(self, method: str, task: str, seeds: Seeds, candidate: dict[str, Any]) -> dict[str, Any]:
        entry = next(t for t in self.tasks if t.name == task)
        values: dict[str, Any] = {"progress": False}
        values.update(self.base)
        values.update(entry.overrides)
        values.update(self.methods[method].overrides)
        values.update(candidate)
        values.update(seeds.overrides())
        if self.data_dir_override is not None:
            values["data_dir"] = self.data_dir_override
        elif values.get("data_dir") is None and self.data_dir is not None:
            values["data_dir"] = self.data_dir
        return values

    def make_run(self, method: str, task: str, seeds: Seeds, phase: str,
                 candidate: dict[str, Any] | None = None) -> RunSpec:
        """The planned run of (method, task, seeds, phase, candidate); raises ConfigError naming the file."""
        candidate = dict(candidate or {})
        try:
            cfg = make_config(self.run_overrides(method, task, seeds, candidate))
        except ConfigError as e:
            cand = f" (search candidate {canonical_json(candidate)})" if candidate else ""
            raise ConfigError(f"{self.where}: method {method!r} on task {task!r}{cand}: {e}") from None
        m_idx = list(self.methods).index(method)
        t_idx = [t.name for t in self.tasks].index(task)
        seed_list = self.seeds if phase == "final" else self.search_seeds(method)
        s_idx = seed_list.index(seeds) if seeds in seed_list else len(seed_list)
        cands = self.methods[method].candidates(task)
        c_idx = cands.index(candidate) if phase == "search" and candidate in cands else 0
        order = (0 if phase == "search" else 1, s_idx, t_idx, m_idx, c_idx)
        return RunSpec(run_id=run_id_for(method, task, phase, cfg), method=method, task=task, phase=phase,
                       seeds=seeds, candidate=candidate, config=cfg, order=order)

    def search_seeds(self, method: str) -> list[Seeds]:
        m = self.methods[method]
        return m.search_seeds if m.search_seeds is not None else self.seeds

    def search_runs(self) -> list[RunSpec]:
        """Every run of the search phase (methods with ``search:``), in scheduling order."""
        runs = [self.make_run(m.name, t.name, s, "search", c)
                for m in self.methods.values() if m.search
                for t in self.tasks for c in m.candidates(t.name) for s in self.search_seeds(m.name)]
        return sorted(runs, key=lambda r: r.order)

    def final_runs(self, method: str, task: str, candidate: dict[str, Any] | None = None) -> list[RunSpec]:
        """The final-phase runs of one (method, task) with the chosen search values."""
        return [self.make_run(method, task, s, "final", candidate) for s in self.seeds]

    def search_groups(self) -> list[tuple[str, str]]:
        return [(m.name, t.name) for m in self.methods.values() if m.search for t in self.tasks]

    def num_runs(self) -> int:
        """Runs of the whole study: search runs plus final runs (known before the search ends)."""
        n_search = sum(len(m.candidates(t.name)) * len(self.search_seeds(m.name))
                       for m in self.methods.values() if m.search for t in self.tasks)
        return n_search + len(self.methods) * len(self.tasks) * len(self.seeds)


# ------------------------------------------------------------------------------------------------
# Parsing
# ------------------------------------------------------------------------------------------------
def load_study(path: str | Path) -> StudySpec:
    """Read and validate a study file.

    Args:
        path: the study YAML.

    Returns:
        The validated :class:`StudySpec` (every run config it can produce has been built once).

    Raises:
        ConfigError: naming the file for a missing file, bad YAML, unknown key, unknown or invalid run
            option of any method, task or search candidate, an empty grid or duplicate names.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"study file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read study file: {e}") from None
    return parse_study(text, p)


def parse_study(text: str, path: str | Path | None = None) -> StudySpec:
    """Parse study YAML text (``path`` names it in errors and anchors relative paths)."""
    p = Path(path).resolve() if path is not None else None
    where = str(path) if path is not None else "study"
    raw = _parse_yaml(text, where)

    def bad(msg: str) -> ConfigError:
        return ConfigError(f"{where}: {msg}")

    if not isinstance(raw, dict):
        raise bad("a study file must be a mapping with name, base, methods, tasks and seeds")
    unknown = [k for k in raw if k not in STUDY_KEYS]
    if unknown:
        import difflib

        close = difflib.get_close_matches(str(unknown[0]), STUDY_KEYS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise bad(f"unknown key '{unknown[0]}'{hint}; study keys are: {', '.join(STUDY_KEYS)}")
    for key in ("name", "methods", "tasks", "seeds"):
        if raw.get(key) is None:
            raise bad(f"missing required key '{key}'")
    name = raw["name"]
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise bad(f"name must be a word of letters, digits, '.', '_' or '-' (it names the database), got {name!r}")
    anchor = p.parent if p is not None else Path.cwd()

    base = _run_options(raw.get("base") or {}, "base", bad, anchor)
    seeds = _parse_seeds(raw["seeds"], "seeds", bad)
    default_search_seeds = _parse_seeds(raw["search_seeds"], "search_seeds", bad) if raw.get("search_seeds") else None

    tasks_raw = raw["tasks"]
    if isinstance(tasks_raw, (str, dict)):
        tasks_raw = [tasks_raw]
    if not isinstance(tasks_raw, list):
        raise bad("tasks must be a list of task names or {task: ..., split: ..., name: ...} entries")
    if not tasks_raw:
        raise bad("empty grid: tasks has no entries")
    tasks: list[TaskEntry] = []
    for i, t in enumerate(tasks_raw):
        what = f"tasks[{i}]"
        if isinstance(t, str):
            t = {"task": t}
        if not isinstance(t, dict):
            raise bad(f"{what} must be a task name or a mapping with task/name and run options")
        t = dict(t)
        label = t.pop("name", None)
        task = t.pop("task", None)
        opts = _run_options(t, what, bad, anchor, allow_task=True)
        if task is None and opts.get("train_file") is None:
            raise bad(f"{what} needs 'task' (a GLUE task) or train_file/dev_file (your own data)")
        if task is not None:
            opts = {"task": str(task), **opts}
        label = str(label if label is not None else (task if task is not None else Path(opts["train_file"]).stem))
        if not NAME_RE.match(label):
            raise bad(f"{what}: task name {label!r} must be a word of letters, digits, '.', '_' or '-'")
        if any(e.name == label for e in tasks):
            raise bad(f"task {label!r} is listed twice; give each entry its own `name:`")
        tasks.append(TaskEntry(label, opts))

    task_names = [t.name for t in tasks]

    methods_raw = raw["methods"]
    if not isinstance(methods_raw, dict):
        raise bad("methods must be a mapping of method name -> run options")
    if not methods_raw:
        raise bad("empty grid: methods has no entries")
    methods: dict[str, MethodSpec] = {}
    for mname, mval in methods_raw.items():
        if not isinstance(mname, str) or not NAME_RE.match(mname):
            raise bad(f"method name {mname!r} must be a word of letters, digits, '.', '_' or '-'")
        what = f"methods.{mname}"
        mval = {} if mval is None else mval
        if not isinstance(mval, dict):
            raise bad(f"{what} must be a mapping of run options (or empty for the base recipe)")
        search_raw = mval.get("search")
        ss_raw = mval.get("search_seeds")
        overrides = _run_options({k: v for k, v in mval.items() if k not in METHOD_KEYS}, what, bad, anchor)
        search: dict[str, list[Any]] = {}
        if search_raw is not None:
            if not isinstance(search_raw, dict) or not search_raw:
                raise bad(f"{what}.search must be a non-empty mapping of option -> [values]")
            for k, vals in search_raw.items():
                key = str(k).replace("-", "_")
                if key in overrides:
                    raise bad(f"{what}: '{key}' is both set and searched")
                per_task = vals if isinstance(vals, dict) else {"*": vals}
                for tname in per_task:
                    if tname != "*" and tname not in task_names:
                        raise bad(f"{what}.search.{k}: {tname!r} is not a task of this study "
                                  f"({', '.join(task_names)}); use '*' for the others")
                if "*" not in per_task and set(per_task) != set(task_names):
                    raise bad(f"{what}.search.{k}: give values for every task or a '*' default")
                search[key] = {}
                for tname, tvals in per_task.items():
                    where_k = f"{what}.search.{k}" + ("" if tname == "*" else f".{tname}")
                    if not isinstance(tvals, list) or not tvals:
                        raise bad(f"{where_k} must be a non-empty list of values")
                    coerced = [_run_options({key: v}, f"{what}.search", bad, anchor)[key] for v in tvals]
                    if len({canonical_json(v) for v in coerced}) != len(coerced):
                        raise bad(f"{where_k} lists a value twice")
                    search[key][str(tname)] = coerced
        elif ss_raw is not None:
            raise bad(f"{what}.search_seeds needs a search: mapping")
        search_seeds = None
        if search:
            search_seeds = (_parse_seeds(ss_raw, f"{what}.search_seeds", bad) if ss_raw is not None
                            else default_search_seeds)
        methods[mname] = MethodSpec(mname, overrides, search, search_seeds)

    baseline = raw.get("baseline")
    if baseline is not None and baseline not in methods:
        raise bad(f"baseline {baseline!r} is not one of the methods ({', '.join(methods)})")
    data_dir = raw.get("data_dir")
    if data_dir is not None:
        data_dir = _resolve_path(str(data_dir), anchor)
    description = raw.get("description")
    margin = raw.get("equivalence_margin")
    if margin is not None:
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not (0 < margin < float("inf")):
            raise bad(f"equivalence_margin: {margin!r} is not a positive number (points, score x 100)")
        margin = float(margin)
    spec = StudySpec(name=name, path=p, text=text, base=base, methods=methods, tasks=tasks, seeds=seeds,
                     baseline=baseline, description=None if description is None else str(description),
                     data_dir=data_dir, equivalence_margin=margin)
    _validate_runs(spec)
    return spec


def _validate_runs(spec: StudySpec) -> None:
    """Build one run config per (method, task, search candidate): every option error surfaces now
    (seeds cannot make a config invalid)."""
    for m in spec.methods.values():
        for t in spec.tasks:
            for c in m.candidates(t.name):
                spec.make_run(m.name, t.name, spec.seeds[0], "final", c)


def _resolve_path(value: str, anchor: Path) -> str:
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (anchor / p).resolve())


def _run_options(values: Any, what: str, bad, anchor: Path, *, allow_task: bool = False) -> dict[str, Any]:
    """Check a mapping of RunConfig keys (unknown key, reserved key, bad value) and coerce the values."""
    if not isinstance(values, dict):
        raise bad(f"{what} must be a mapping of run options")
    out: dict[str, Any] = {}
    for k, v in values.items():
        key = str(k).replace("-", "_")
        if key in RESERVED and not (allow_task and key == "task"):
            raise bad(f"{what}: '{key}' cannot be set here: {RESERVED[key]}")
        if key not in FIELDS:
            import difflib

            close = difflib.get_close_matches(key, list(FIELDS) + list(METHOD_KEYS), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise bad(f"{what}: unknown run option '{key}'{hint}")
        try:
            value = coerce(key, v, source="run option")
        except ConfigError as e:
            raise bad(f"{what}: {e}") from None
        if key in PATH_KEYS and isinstance(value, str):
            value = _resolve_path(value, anchor)
        out[key] = value
    return out


def _parse_seeds(value: Any, what: str, bad) -> list[Seeds]:
    """``N`` (seeds 0..N-1), a list of seeds, or ``{init: N|[...], data: N|[...]}`` (Appendix B grid)."""
    def seed_list(v: Any, key: str) -> list[int]:
        if isinstance(v, bool):
            raise bad(f"{key} must be a count or a list of seeds, got {v!r}")
        if isinstance(v, int):
            if v <= 0:
                raise bad(f"empty grid: {key} is {v}")
            return list(range(v))
        if isinstance(v, list):
            if not v:
                raise bad(f"empty grid: {key} is an empty list")
            if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in v):
                raise bad(f"{key} must list non-negative integers, got {v!r}")
            if len(set(v)) != len(v):
                raise bad(f"{key} lists a seed twice")
            return list(v)
        raise bad(f"{key} must be a count, a list of seeds or {{init: ..., data: ...}}, got {v!r}")

    if isinstance(value, dict):
        extra = set(value) - {"init", "data"}
        if extra or not {"init", "data"} <= set(value):
            raise bad(f"{what} as a grid needs exactly the keys init and data (got {', '.join(map(str, value))})")
        inits = seed_list(value["init"], f"{what}.init")
        datas = seed_list(value["data"], f"{what}.data")
        return [Seeds(seed=i * len(datas) + j, init_seed=a, data_seed=b)
                for i, a in enumerate(inits) for j, b in enumerate(datas)]
    return [Seeds(seed=s) for s in seed_list(value, what)]
