"""A scripted probe of bad input across every command (issue 23: at least 150 cases, 0 tracebacks, 0 hangs,
0 silent acceptances, 0 leftovers).

The cases are generated from the command line itself, so a new option is probed without anyone writing a case:
for every subcommand's option that takes a number, the values ``abc``, ``nan``, ``inf`` and the empty string
(none is a number any option can mean); for every option with choices, a value outside them; for every option
that names an input file or folder, a path that does not exist. Each case runs the CLI in process on a minimal,
otherwise valid command line and must end with exit 2 and one line on stderr that names the option, before any
training, study run or report work starts (those functions are replaced by ones that fail the case), and must
leave the folder as it found it. The hand-written cases with their exact messages are in test_bad_input.py.
"""

from __future__ import annotations

import argparse
import importlib
import typing
from dataclasses import dataclass
from pathlib import Path

import pytest

from stabletune.cli import build_parser, main
from stabletune.config import FIELDS, field_type

NOT_NUMBERS = ("abc", "nan", "inf", "")
MISSING = "does-not-exist/nowhere.csv"
#: options that name something to read (a missing one must be refused before any work)
INPUTS = {"--config", "--train-file", "--dev-file", "--test-file", "--init-from", "--input", "--from-csv",
          "--from-export", "--data-dir", "--model"}
#: work that must not start when an input is refused
FORBIDDEN = ("stabletune.training:train", "stabletune.training:train_ensemble", "stabletune.fitting.recipe:Search",
             "stabletune.study.runner:_Driver", "stabletune.analysis.report:write_report",
             "stabletune.analysis.plots:plot_bias_ratio", "stabletune.predict:load_classifier")


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, prefix + (name,))
            return
    yield prefix, parser


def _is_number(command: tuple[str, ...], action: argparse.Action) -> bool:
    if action.type in (int, float):
        return True
    if command == ("train",) and action.dest in FIELDS:  # train's options are typed by RunConfig
        t = field_type(action.dest)
        return bool({int, float} & {t, *typing.get_args(t)}) and bool not in (t, *typing.get_args(t))
    return False


@dataclass(frozen=True)
class Probe:
    command: tuple[str, ...]
    option: str
    value: str

    @property
    def id(self) -> str:
        return f"{' '.join(self.command)} {self.option}={self.value or '<empty>'}"


def probes() -> list[Probe]:
    out = []
    for command, parser in _commands(build_parser()):
        for action in parser._actions:
            if not action.option_strings or action.nargs == 0 or isinstance(action, argparse._HelpAction):
                continue
            option = action.option_strings[-1]
            if _is_number(command, action):
                out += [Probe(command, option, v) for v in NOT_NUMBERS]
            if action.choices:
                out.append(Probe(command, option, "not-a-choice"))
            if option in INPUTS and not (command == ("train",) and option == "--model"):
                out.append(Probe(command, option, MISSING))
    return out


PROBES = probes()
STUDY = """
name: pr
base: {max_steps: 6, num_evals: 3}
methods:
  standard: {}
tasks: [rte]
seeds: 2
baseline: standard
"""


def _base(command: tuple[str, ...], tmp: Path, model: Path) -> list[str]:
    """A minimal command line that would start real work."""
    (tmp / "train.csv").write_text("sentence,label\n" + "".join(f"text {i},{'ab'[i % 2]}\n" for i in range(60)))
    (tmp / "dev.csv").write_text("sentence,label\n" + "".join(f"dev {i},{'ab'[i % 2]}\n" for i in range(20)))
    (tmp / "st.yaml").write_text(STUDY)
    (tmp / "glue").mkdir(exist_ok=True)
    user = ["--train-file", str(tmp / "train.csv"), "--dev-file", str(tmp / "dev.csv"), "--text-columns",
            "sentence", "--model", str(model)]
    return {
        ("train",): ["train", *user, "--out", str(tmp / "run")],
        ("fit",): ["fit", *user, "--label-column", "label", "--out", str(tmp / "fitted"), "--no-progress"],
        ("predict",): ["predict", str(model), "--input", str(tmp / "dev.csv"), "--output", str(tmp / "p.csv")],
        ("study", "run"): ["study", "run", str(tmp / "st.yaml"), "--data-dir", str(tmp / "glue")],
        ("study", "status"): ["study", "status", str(tmp / "st.yaml")],
        ("study", "export"): ["study", "export", str(tmp / "st.yaml")],
        ("report",): ["report", "--from-csv", str(_results_csv(tmp)), "--out", str(tmp / "rep")],
        ("plot",): ["plot", "bias-ratio", "--out", str(tmp / "f.png")],
    }[command]


def _results_csv(tmp: Path) -> Path:
    p = tmp / "res.csv"
    p.write_text("method,task,seed,metric,value\n" + "".join(f"{m},rte,{s},test_acc,0.{s + 5}\n"
                                                               for m in ("a", "b") for s in range(3)))
    return p


def _with(argv: list[str], option: str, value: str) -> list[str]:
    argv = list(argv)
    if option in argv:
        argv[argv.index(option) + 1] = value
        return argv
    if option == "--model" and argv[0] == "predict":
        return argv
    return argv + [option, value]


def _forbid(monkeypatch) -> None:
    for target in FORBIDDEN:
        module, attr = target.split(":")
        mod = importlib.import_module(module)

        def called(*a, _t=target, **k):
            raise AssertionError(f"{_t} was called: the input should have been refused before it")
        monkeypatch.setattr(mod, attr, called)


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_the_probe_has_at_least_150_cases():
    assert len(PROBES) >= 150, len(PROBES)
    assert {p.command for p in PROBES} >= {("train",), ("fit",), ("predict",), ("study", "run"), ("report",),
                                           ("plot",)}


@pytest.mark.parametrize("probe", PROBES, ids=[p.id for p in PROBES])
def test_probe(probe: Probe, tmp_path, tiny_model, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = _with(_base(probe.command, tmp_path, tiny_model), probe.option, probe.value)
    if argv[0] == "predict" and probe.option == "--model":
        pytest.skip("predict takes the model as its first argument")
    before = _tree(tmp_path)
    _forbid(monkeypatch)
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    _, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err, err
    assert code == 2 and len(lines) == 1, (code, err)
    assert lines[0].startswith("stabletune"), lines[0]
    named = {probe.option, probe.option.lstrip("-").replace("-", "_"), "nowhere.csv", "does-not-exist"}
    assert any(n in lines[0] for n in named), f"the line does not name {probe.option}: {lines[0]}"
    assert _tree(tmp_path) == before, "left behind: " + ", ".join(sorted(set(_tree(tmp_path)) - set(before)))
