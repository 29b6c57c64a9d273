"""The accept/retry rule (deepmapper.engine.planning), shared by `deepmapper run` and the pipeline.

The embedded path (runner.train_until_accepted) and the pipeline's plan step
(`deepmapper plan`, round after round on the verdict files the pass tasks write) must
train the same passes in the same rounds for the same verdicts. The trainer is replaced
by an oracle of verdicts, so each case runs in milliseconds and covers gates that
accept everything, nothing, or a seeded random part.
"""
from __future__ import annotations

import json
import random
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

from deepmapper.engine import planning
from deepmapper.config import Config
from deepmapper.errors import FormatError
from deepmapper.engine.passfile import PassResult

REPO = Path(__file__).resolve().parent.parent


def fake_pass(i: int, accepted: bool) -> PassResult:
    z = np.zeros(3, np.float32)
    return PassResult(pass_index=i, seed=i, accuracy=0.9 if accepted else 0.1, accepted=accepted, stop_epoch=1,
                      best_epoch=1, early_stopped=False, importance=z, class_importance=np.zeros((2, 3), np.float32),
                      train_loss=z[:1], val_loss=z[:1], heldout_index=np.arange(2), heldout_proba=np.zeros((2, 2)),
                      classes=["a", "b"])


def embedded_rounds(monkeypatch, cfg: Config, oracle) -> list[list[int]]:
    """The rounds `deepmapper run` trains (runner.train_until_accepted) when pass i's verdict is oracle(i)."""
    from deepmapper.pipeline import runner
    from deepmapper.engine import train

    rounds: list[list[int]] = []
    real = planning.next_round

    def spy(*args, **kw):
        todo = real(*args, **kw)
        if todo:
            rounds.append(list(todo))
        return todo

    monkeypatch.setattr(planning, "next_round", spy)
    monkeypatch.setattr(train, "train_group", lambda data, cfg, group, **kw: [fake_pass(i, oracle(i)) for i in group])
    # the training itself is faked: the data only has to say that the cells form one block (no cap)
    one_block = SimpleNamespace(n_blocks=lambda: 1)
    results = runner.train_until_accepted(one_block, cfg, device="cpu", progress=False)
    assert [r.pass_index for r in results] == [i for r in rounds for i in r]
    return rounds


def pipeline_rounds(tmp_path: Path, cfg: Config, oracle, per_task: int) -> list[list[int]]:
    """The rounds the pipeline trains: `deepmapper plan --round N` on the verdict files of the tasks so
    far, one task per entry of `tasks`, for at most planning.ROUNDS rounds (train_passes/main.nf)."""
    from deepmapper.cli import cli

    verdict_dir = tmp_path / "verdicts"
    verdict_dir.mkdir()
    options = ["--passes", str(cfg.run.passes), "--max-tries", str(cfg.run.max_tries),
               "--passes-per-step", str(cfg.run.passes_per_step), "--backbone", cfg.backbone.kind]
    rounds = []
    for number in range(1, planning.ROUNDS + 1):
        out = tmp_path / f"plan_round{number}.json"
        res = CliRunner().invoke(cli, ["plan", "--round", str(number), "--verdicts-dir", str(verdict_dir),
                                       "--passes-per-task", str(per_task), "--out", str(out), *options])
        assert res.exit_code == 0, res.output
        plan = json.loads(out.read_text())
        assert plan["round"] == number
        if not plan["tasks"]:
            continue
        trained = []
        for task in plan["tasks"]:  # one DEEPMAPPER_TRAINPASS task each, writing its verdicts file
            group = list(range(task["start"], task["start"] + task["count"]))
            planning.write_verdicts(verdict_dir / f"verdicts_{task['start']}.json",
                                    [fake_pass(i, oracle(i)) for i in group], device="cpu", gpu_expected=False)
            trained += group
        assert trained == plan["passes"]
        rounds.append(trained)
    return rounds


def oracles():
    yield "all accepted", lambda i: True
    yield "none accepted", lambda i: False
    yield "every third rejected", lambda i: i % 3 != 2
    yield "first five rejected", lambda i: i >= 5
    for seed in range(6):
        rng = random.Random(seed)
        rate = rng.choice([0.2, 0.5, 0.8])
        draws = [rng.random() < rate for _ in range(1000)]
        yield f"random {rate} seed {seed}", lambda i, d=draws: d[i]


CASES = [(name, oracle, passes, max_tries, per_task)
         for name, oracle in oracles()
         for passes, max_tries, per_task in [(1, 0, 1), (4, 0, 2), (10, 0, 4), (10, 10, 3), (7, 30, 4)]]


@pytest.mark.parametrize("name, oracle, passes, max_tries, per_task", CASES,
                         ids=[f"{c[0]}-p{c[2]}-t{c[3]}-k{c[4]}" for c in CASES])
def test_plan_command_reproduces_the_embedded_decisions(name, oracle, passes, max_tries, per_task, monkeypatch,
                                                        tmp_path):
    cfg = Config().with_params({"passes": passes, "max_tries": max_tries, "passes_per_step": 2, "backbone": "mlp"})
    embedded = embedded_rounds(monkeypatch, cfg, oracle)
    monkeypatch.undo()
    assert pipeline_rounds(tmp_path, cfg, oracle, per_task) == embedded
    # and the rule itself: stop once enough are accepted or the tries are spent, never beyond them
    tried = [i for r in embedded for i in r]
    assert tried == list(range(len(tried))) and len(tried) <= cfg.effective_max_tries()
    accepted = sum(oracle(i) for i in tried)
    assert accepted >= passes or len(tried) == cfg.effective_max_tries() or len(embedded) == planning.ROUNDS
    if accepted >= passes and len(embedded) > 1:  # the last round was needed
        assert sum(oracle(i) for i in tried[:-len(embedded[-1])]) < passes


def test_rounds_follow_the_acceptance_rate():
    v = {i: i % 2 == 0 for i in range(10)}  # 5 of 10 accepted, rate 1/2
    assert planning.next_round({}, wanted=10, max_tries=30, round_index=0) == list(range(10))
    assert planning.next_round(v, wanted=10, max_tries=30, round_index=1) == list(range(10, 20))  # 5 missing / 0.5
    assert planning.next_round(v, wanted=10, max_tries=30, round_index=2) == list(range(10, 30))  # last: all left
    assert planning.next_round(v, wanted=10, max_tries=12, round_index=1) == [10, 11]  # capped by max_tries
    assert planning.next_round(v, wanted=5, max_tries=30, round_index=1) == []  # enough accepted
    assert planning.next_round(v, wanted=10, max_tries=30, round_index=planning.ROUNDS) == []
    with pytest.raises(FormatError, match="missing pass"):
        planning.next_round({0: True, 2: True}, wanted=5, max_tries=10, round_index=1)


def test_plan_needs_the_earlier_verdicts_and_warns(tmp_path):
    cfg = Config().with_params({"passes": 4, "backbone": "cnn", "passes_per_step": 4})
    with pytest.raises(FormatError, match="round 2 needs the verdicts"):
        planning.plan({}, cfg, round_index=1, per_task=4)
    first = planning.plan({}, cfg, round_index=0, per_task=3)
    assert any("not a multiple of --passes_per_step 4" in w for w in first["warnings"])
    assert not planning.plan({}, cfg, round_index=0, per_task=8)["warnings"]
    # a backbone the registry does not stack never warns
    assert not planning.plan({}, Config().with_params({"passes": 4, "backbone": "vit"}), round_index=0,
                             per_task=3)["warnings"]
    spent = planning.plan({i: False for i in range(8)}, cfg, round_index=2, per_task=4)
    assert spent["done"] and any("only 0 of 4 passes" in w for w in spent["warnings"])
    # a task meant for a GPU that trained on the CPU is reported by the next plan
    path = tmp_path / "verdicts_0.json"
    planning.write_verdicts(path, [fake_pass(0, True)], device="cpu", gpu_expected=True)
    _, warnings = planning.read_verdicts([path])
    assert warnings and "meant for a GPU" in warnings[0]


def test_the_workflow_unrolls_as_many_rounds_as_the_rule_has():
    text = (REPO / "subworkflows" / "local" / "train_passes" / "main.nf").read_text()
    aliases = re.findall(r"include \{ TRAIN_ROUND as (TRAIN_ROUND_\d+) \}", text)
    assert aliases == [f"TRAIN_ROUND_{n}" for n in range(1, planning.ROUNDS + 1)]
    for n in range(1, planning.ROUNDS + 1):
        before = "channel.value([])" if n == 1 else f"TRAIN_ROUND_{n - 1}.out.verdicts"
        assert f"TRAIN_ROUND_{n}(ch_inputs, {before}, {n}, per_task)" in text
    round_nf = (REPO / "subworkflows" / "local" / "train_round" / "main.nf").read_text()
    assert "splitJson(path: 'tasks')" in round_nf and "stdout" not in round_nf and "==~" not in round_nf
