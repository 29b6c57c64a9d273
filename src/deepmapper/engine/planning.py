"""Which passes to train next: the accept/retry rule, shared by ``deepmapper run`` and Nextflow.

A pass is *accepted* when it passes the accuracy gate (``train.py``). The analysis wants
``passes`` accepted passes and tries at most ``max_tries`` (0: 2 x passes). Passes are
trained in rounds:

1. round 1 trains passes ``0 .. passes-1``;
2. a middle round trains as many more as the acceptance rate so far says are missing
   (``ceil(missing / rate)``, rate = accepted / tried, at least 1 / tried);
3. the last round (round :data:`ROUNDS`) trains every try that is left.

A round is planned only while fewer than ``passes`` are accepted and tries remain, so
a run needs at most :data:`ROUNDS` rounds. The findings use the first ``passes``
accepted passes by index, whatever the rounds were.

:func:`next_round` is a pure function of the verdicts so far. The embedded path
(``runner.train_until_accepted``) calls it between rounds; the Nextflow pipeline runs
``deepmapper plan`` (:func:`plan`) between rounds, which reads the verdicts of the
pass files, calls the same function and writes the plan as JSON, over which the
workflow maps (one task per entry of ``tasks``). The number of rounds is fixed so the
workflow can be written as a static DAG (subworkflows/local/train_passes).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from deepmapper.errors import FormatError

ROUNDS = 3
# Passes one pipeline task trains (`deepmapper plan --passes-per-task`, the pipeline's
# --passes_per_task): the runtime owns the default, the Nextflow generator reads it.
PASSES_PER_TASK = 4
PLAN_FORMAT = "deepmapper-plan"
VERDICTS_FORMAT = "deepmapper-verdicts"


def _check(verdicts: dict[int, bool]) -> int:
    """Number of passes tried; the verdicts must be those of passes 0 .. n-1."""
    n = len(verdicts)
    if sorted(verdicts) != list(range(n)):
        missing = sorted(set(range(max(verdicts, default=-1) + 1)) - set(verdicts))
        raise FormatError(f"the verdicts are not those of passes 0..{n - 1}: missing pass(es) "
                          f"{', '.join(map(str, missing[:10]))}", field="pass_index",
                          fix="give the verdicts (or pass files) of every pass trained so far.")
    return n


def next_round(verdicts: dict[int, bool], *, wanted: int, max_tries: int, round_index: int) -> list[int]:
    """Pass indices of the next round (empty: stop), from the verdicts of passes 0 .. n-1.

    ``round_index`` counts the rounds already trained (0 before the first); ``max_tries``
    is the effective limit (``Config.effective_max_tries``).
    """
    if wanted < 1 or max_tries < wanted:
        raise ValueError(f"need 1 <= passes <= max_tries (got {wanted}, {max_tries})")
    tried = _check(verdicts)
    accepted = sum(bool(v) for v in verdicts.values())
    left = max_tries - tried
    if accepted >= wanted or left <= 0 or round_index >= ROUNDS:
        return []
    missing = wanted - accepted
    if round_index == 0:
        size = missing
    elif round_index == ROUNDS - 1:
        size = left
    else:
        rate = max(accepted, 1) / tried
        size = math.ceil(missing / rate - 1e-9)
    return list(range(tried, tried + min(size, left)))


def task_chunks(indices: list[int], per_task: int) -> list[dict]:
    """Consecutive chunks of ``per_task`` passes: one Nextflow task each."""
    per_task = max(int(per_task), 1)
    return [{"start": indices[i], "count": len(indices[i:i + per_task])} for i in range(0, len(indices), per_task)]


def stacking_warning(kind: str, passes_per_step: int, per_task: int, n_passes: int) -> str | None:
    """Why tasks of ``per_task`` passes give other results than ``deepmapper run``, or None.

    Stackable backbones train ``passes_per_step`` passes together and a pass's result
    depends (slightly) on its group: a task must cut the passes where ``run`` groups them.
    """
    from deepmapper.model.backbones import stackable

    if not stackable(kind) or passes_per_step <= 1 or per_task >= n_passes or per_task % passes_per_step == 0:
        return None
    return (f"--passes_per_task {per_task} is not a multiple of --passes_per_step {passes_per_step} "
            f"(backbone {kind} trains stacked groups): results will differ from `deepmapper run` with the "
            "same seed (still valid, not identical)")


# -- files: the verdicts train-pass writes, the plan the workflow reads ---------------------------

def write_verdicts(path: Path, results, *, device: str, gpu_expected: bool) -> None:
    from deepmapper._utils.atomic import write_json

    write_json(path, {"format": VERDICTS_FORMAT, "version": 1, "device": device, "gpu_expected": bool(gpu_expected),
                      "passes": [{"pass_index": int(r.pass_index), "accepted": bool(r.accepted),
                                  "accuracy": round(float(r.accuracy), 6)} for r in results]})


def read_verdicts(paths: list[Path]) -> tuple[dict[int, bool], list[str]]:
    """({pass index: accepted}, warnings) from verdict JSON files or pass files (``.npz``)."""
    verdicts: dict[int, bool] = {}
    warnings: list[str] = []
    for path in paths:
        path = Path(path)
        if path.suffix == ".npz":
            from deepmapper.engine.passfile import read_pass

            p = read_pass(path)
            entries = [{"pass_index": p.pass_index, "accepted": p.accepted}]
        else:
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise FormatError(f"cannot read verdicts: {exc}", where=str(path),
                                  fix="give the verdicts.json written by `deepmapper train-pass`.") from None
            if not isinstance(data, dict) or data.get("format") != VERDICTS_FORMAT:
                raise FormatError("not a verdicts file", where=str(path), field="format",
                                  fix="give the verdicts.json written by `deepmapper train-pass`.")
            entries = data["passes"]
            if data.get("gpu_expected") and data.get("device") != "cuda" and entries:
                first, last = entries[0]["pass_index"], entries[-1]["pass_index"]
                warnings.append(f"passes {first}-{last} were meant for a GPU but trained on {data.get('device')}: "
                                "no GPU was visible to the task (see its .command.log)")
        for e in entries:
            i = int(e["pass_index"])
            if i in verdicts:
                raise FormatError(f"pass {i} given twice", where=str(path), field="pass_index",
                                  fix="give each pass's verdict once.")
            verdicts[i] = bool(e["accepted"])
    return verdicts, warnings


def plan(verdicts: dict[int, bool], cfg, *, round_index: int, per_task: int) -> dict:
    """The plan of the next round as the workflow reads it (``tasks``: start/count per task)."""
    wanted, max_tries = cfg.run.passes, cfg.effective_max_tries()
    if round_index > 0 and not verdicts:
        raise FormatError(f"round {round_index + 1} needs the verdicts of the earlier rounds, and none were given",
                          field="verdicts", fix="give the verdicts.json files (or pass files) of rounds "
                                                f"1..{round_index}.")
    indices = next_round(verdicts, wanted=wanted, max_tries=max_tries, round_index=round_index)
    warnings = []
    if round_index == 0:
        w = stacking_warning(cfg.backbone.kind, cfg.run.passes_per_step, per_task, wanted)
        if w:
            warnings.append(w)
    accepted = sum(verdicts.values())
    if not indices and accepted < wanted:
        warnings.append(f"only {accepted} of {wanted} passes passed the accuracy gate after {len(verdicts)} tries "
                        f"(--max_tries {max_tries}): the findings use the {accepted} accepted ones")
    return {"format": PLAN_FORMAT, "version": 1, "round": round_index + 1, "rounds": ROUNDS,
            "wanted": wanted, "max_tries": max_tries, "tried": len(verdicts), "accepted": accepted,
            "done": not indices, "passes": indices, "tasks": task_chunks(indices, per_task), "warnings": warnings}
