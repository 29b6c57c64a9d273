"""``deepmapper plan``: which passes the next round trains (the pipeline's rule, in Python).

It reads the verdicts of the passes trained so far (the ``verdicts.json`` files that
``train-pass --verdicts`` writes, or the pass files themselves), applies
:func:`deepmapper.engine.planning.next_round` (the rule ``deepmapper run`` applies between its
rounds) and writes the plan as JSON: ``tasks`` holds one ``{start, count}`` per task,
empty when enough passes are accepted or the tries are spent. The Nextflow workflow
maps over ``tasks``; it never parses printed output.
"""
from __future__ import annotations

from pathlib import Path

import click

from deepmapper.cli._options import OUT_FILE, build_config, config_options
from deepmapper.engine.planning import PASSES_PER_TASK


@click.command("plan")
@click.option("--round", "round_number", type=click.IntRange(min=1), required=True,
              help="The round to plan: 1 is the first (no verdicts needed), then 2, 3 ... "
                   "(the verdicts of every earlier round are needed).")
@click.option("--verdicts", "verdicts", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="verdicts.json of train-pass, or a pass_NNN.npz (repeatable): every pass trained so far.")
@click.option("--verdicts-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="A folder searched (recursively) for verdicts*.json files, instead of --verdicts "
                   "(a folder that does not exist holds none: the first round).")
@click.option("--passes-per-task", type=click.IntRange(min=1), default=PASSES_PER_TASK,
              show_default=True, help="Passes per task (the pipeline's --passes_per_task, same default).")
@click.option("--out", required=True, type=OUT_FILE, help="plan.json to write.")
@config_options("plan")
def plan_cmd(round_number, verdicts, verdicts_dir, passes_per_task, out, config_path, **params):
    """Plan the next round of passes from the verdicts so far; writes plan.json."""
    from deepmapper._utils.atomic import write_json
    from deepmapper.engine.planning import plan, read_verdicts

    cfg = build_config(config_path, params)
    paths = list(verdicts) + (sorted(verdicts_dir.rglob("verdicts*.json")) if verdicts_dir and verdicts_dir.is_dir() else [])
    found, warnings = read_verdicts(paths)
    result = plan(found, cfg, round_index=round_number - 1, per_task=passes_per_task)
    result["warnings"] = warnings + result["warnings"]
    write_json(out, result)
    for w in result["warnings"]:
        click.echo(f"warning: {w}", err=True)
    what = (f"passes {result['passes'][0]}-{result['passes'][-1]} in {len(result['tasks'])} task(s)"
            if result["passes"] else "nothing more to train")
    click.echo(f"round {result['round']}: {result['accepted']}/{result['tried']} accepted so far "
               f"(want {result['wanted']}, at most {result['max_tries']} tries): {what}")


COMMANDS = [plan_cmd]
