"""The Nextflow pipeline, checked without the Nextflow engine (issues 3 and 14).

* every .nf / .config file parses (reftrace), and a broken copy does not;
* includes resolve, every called process/workflow is defined or included, and
  broken copies are caught;
* every module has the nf-core anatomy (conda + container, environment.yml and
  meta.yml beside it); its command exists and every option it passes (script and
  ext.args) is in that command's --help; each step command takes exactly the settings
  its step declares; its version commands run here;
* the generated files (params, schema, ext.args) equal what deepmapper._dev.nfgen writes
  (tests/test_nfgen.py shows that a stale one fails);
* the channels the workflow wires: every call passes as many channels as the callee
  declares, and the pair screen's table reaches every pass task and the baselines
  (with --interactions false: nf-core's empty optional input, and no --interactions-tsv);
* the modules' real commands run on the bundled pbmc68k_reduced test data, chained
  as the workflow chains them (ingest -> pair screen -> plan -> pass tasks -> plan ->
  accumulate / evaluate / baselines -> report -> MultiQC), and write what each process
  declares; the gathered findings equal those of the embedded `deepmapper run`;
* every stub block creates the declared outputs;
* profiles, environment files, containers and docs agree with each other.
"""
from __future__ import annotations

import csv
import functools
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import nfcheck
from nfcheck import REPO, NfError

NEXTFLOW_CONFIG = REPO / "nextflow.config"
UTILS = REPO / "subworkflows" / "local" / "utils_deepmapper_pipeline" / "main.nf"
INSTALLED_ONLY = os.environ.get("DEEPMAPPER_INSTALLED_ONLY") == "1"
CONFIG_FILES = [NEXTFLOW_CONFIG, *sorted((REPO / "conf").glob("*.config"))]
NF_FILES = nfcheck.nf_files()
PLUGINS = nfcheck.plugin_ids(NEXTFLOW_CONFIG)
PROCESSES = {p.name: p for f in NF_FILES for p in nfcheck.processes(f)}
EXT_ARGS = nfcheck.ext_args(REPO / "conf" / "modules.config")
# Params as `-profile test` sees them: nextflow.config overlaid with conf/test.config.
PARAMS = nfcheck.config_params(NEXTFLOW_CONFIG)
TEST_PARAMS = {**PARAMS, **nfcheck.config_params(REPO / "conf" / "test.config")}
TEST_INPUT = REPO / "assets" / "test" / "pbmc68k_reduced.h5ad"

# Which step each generated process runs (deepmapper._dev.nfgen), and the command of each step.
from deepmapper._dev import nfgen  # noqa: E402

from deepmapper.config import STEPS  # noqa: E402

STEP_OF = {**{nfgen.process_of(step): step for step in STEPS},
           **{p: step for p, (step, _) in nfgen.PROCESS_PARTS.items()}}


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


@functools.cache
def help_text(command: tuple[str, ...]) -> str:
    proc = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"`{' '.join(command)} --help` failed: {proc.stderr.strip()[-300:]}"
    return proc.stdout


SETUP = ("echo", "printf")  # a line that writes a small file before the command (assembler.txt ...)


def command_of(proc: nfcheck.Process) -> tuple[str, ...]:
    """The command a process runs: `deepmapper <sub> [<subsub>]` or an external tool."""
    lines = [line for line in proc.script.body.strip().splitlines() if line.split()[:1] and line.split()[0] not in SETUP]
    words = "\n".join(lines).split()
    if words[0] != "deepmapper":
        return (words[0],)
    cmd = ["deepmapper"]
    for word in words[1:3]:
        if not re.fullmatch(r"[a-z][a-z0-9-]*", word):
            break
        if re.search(rf"^\s+{re.escape(word)}\s", help_text(tuple(cmd)).split("Commands:")[-1], re.M) is None:
            break
        cmd.append(word)
    return tuple(cmd)


def options_used(proc: nfcheck.Process) -> set[str]:
    text = proc.script.body + "\n" + "\n".join(proc.script.defs.values()) + "\n" + "\n".join(EXT_ARGS.get(proc.name, []))
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", text))


# -- syntax ---------------------------------------------------------------------------------

@pytest.mark.parametrize("path", NF_FILES, ids=rel)
def test_nf_file_parses(path):
    mod = nfcheck.parse_nf(path)
    assert mod.dsl_version == 2


@pytest.mark.parametrize("path", CONFIG_FILES, ids=rel)
def test_config_file_parses(path):
    nfcheck.parse_config(path)


def test_parser_rejects_broken_module_and_config(tmp_path):
    module = REPO / "modules" / "local" / "deepmapper" / "trainpass" / "main.nf"
    broken = tmp_path / "main.nf"
    text = module.read_text()
    line = "tuple val(meta), path(dataset), path(interactions)\n"
    assert line in text
    broken.write_text(text.replace(line, line.replace("path(interactions)", "path(interactions"), 1))
    nfcheck.parse_nf(module)  # the original parses ...
    with pytest.raises(NfError, match="main.nf"):
        nfcheck.parse_nf(broken)  # ... the copy with one parenthesis missing does not

    config = tmp_path / "base.config"
    config.write_text((REPO / "conf" / "base.config").read_text().replace("withLabel: process_low {", "withLabel: process_low {{", 1))
    with pytest.raises(NfError):
        nfcheck.parse_config(config)


# -- structure: includes and calls ------------------------------------------------------------

@pytest.mark.parametrize("path", NF_FILES, ids=rel)
def test_includes_resolve_and_calls_are_defined(path):
    nfcheck.check_calls(path, PLUGINS)


def test_every_process_and_subworkflow_is_used():
    called = set()
    for path in NF_FILES:
        called |= nfcheck.check_calls(path, PLUGINS)
    alias = nfcheck.aliases(NF_FILES)  # TRAIN_ROUND_1..3 are TRAIN_ROUND
    called |= {alias[name] for name in called if name in alias}
    subworkflows = {w.name for p in REPO.glob("subworkflows/**/*.nf") for w in nfcheck.parse_nf(p).workflows}
    assert set(PROCESSES) - called == set()
    assert subworkflows - called == set()
    assert {"DEEPMAPPER"} <= called  # main.nf runs the workflow


def test_broken_include_is_caught(tmp_path):
    root = nfcheck.copy_tree(tmp_path / "copy")
    module = root / "modules" / "local" / "deepmapper" / "evaluate" / "main.nf"
    module.write_text(module.read_text().replace("process DEEPMAPPER_EVALUATE {", "process DEEPMAPPER_EVAL {"))
    with pytest.raises(NfError, match="'DEEPMAPPER_EVALUATE' is not defined"):
        nfcheck.check_includes(root / "workflows" / "deepmapper.nf", PLUGINS)

    shutil.copy2(REPO / "modules" / "local" / "deepmapper" / "evaluate" / "main.nf", module)
    nfcheck.check_includes(root / "workflows" / "deepmapper.nf", PLUGINS)  # repaired copy passes
    shutil.rmtree(root / "modules" / "local" / "multiqc")
    with pytest.raises(NfError, match="does not resolve to a file"):
        nfcheck.check_includes(root / "workflows" / "deepmapper.nf", PLUGINS)


def test_undefined_call_is_caught(tmp_path):
    root = nfcheck.copy_tree(tmp_path / "copy")
    workflow = root / "workflows" / "deepmapper.nf"
    text = workflow.read_text()
    assert "DEEPMAPPER_EVALUATE(ch_dataset_passes)" in text
    workflow.write_text(text.replace("DEEPMAPPER_EVALUATE(ch_dataset_passes)", "DEEPMAPPER_EVALUATES(ch_dataset_passes)"))
    with pytest.raises(NfError, match="DEEPMAPPER_EVALUATES, which is neither defined nor included"):
        nfcheck.check_calls(workflow, PLUGINS)


def test_unknown_plugin_function_is_caught(tmp_path):
    root = nfcheck.copy_tree(tmp_path / "copy")
    utils = root / UTILS.relative_to(REPO)
    text = utils.read_text()
    assert "paramsSummaryLog; " in text
    utils.write_text(text.replace("paramsSummaryLog; ", "paramsSummaryLogg; "))
    with pytest.raises(NfError, match="provides no 'paramsSummaryLogg'"):
        nfcheck.check_includes(utils, PLUGINS)


@pytest.mark.parametrize("path", NF_FILES, ids=rel)
def test_calls_pass_every_declared_channel(path):
    """Each call of an included process or workflow passes as many arguments as it declares inputs or
    take: channels (Nextflow would stop at run time otherwise)."""
    nfcheck.check_call_arity(path, PLUGINS)


def test_call_with_a_channel_missing_is_caught(tmp_path):
    root = nfcheck.copy_tree(tmp_path / "copy")
    workflow = root / "workflows" / "deepmapper.nf"
    assert nfcheck.check_call_arity(workflow, PLUGINS) >= 9
    text = workflow.read_text()
    call = "TRAIN_PASSES(ch_dataset, ch_interactions, params.passes_per_task)"
    assert call in text
    workflow.write_text(text.replace(call, "TRAIN_PASSES(ch_dataset, params.passes_per_task)"))
    with pytest.raises(NfError, match="calls TRAIN_PASSES with 2 argument.*it has 3 take: channels"):
        nfcheck.check_call_arity(workflow, PLUGINS)
    workflow.write_text(text.replace("DEEPMAPPER_BASELINE(ch_dataset.join(ch_interactions))",
                                     "DEEPMAPPER_BASELINE(ch_dataset, ch_interactions)"))
    with pytest.raises(NfError, match="calls DEEPMAPPER_BASELINE with 2 argument.*it has 1 input declarations"):
        nfcheck.check_call_arity(workflow, PLUGINS)


def test_workflow_feeds_the_screen_to_the_passes_and_baselines():
    """DEEPMAPPER_INTERACTIONS runs once; its table (or [meta, []] with --interactions false) is joined by
    meta to the dataset for TRAIN_PASSES, whose rounds hand [meta + range, dataset, interactions] to every
    DEEPMAPPER_TRAINPASS task, and for DEEPMAPPER_BASELINE; the report gets it with the findings."""
    wf = nfcheck.workflow_body(REPO / "workflows" / "deepmapper.nf", "DEEPMAPPER")
    assigned = nfcheck.assignments(wf)
    assert nfcheck.call_args(wf, "DEEPMAPPER_INTERACTIONS") == [["ch_dataset"]]
    assert assigned["ch_interactions"] == ["DEEPMAPPER_INTERACTIONS.out.interactions",
                                           "ch_dataset.map { meta, _dataset -> [meta, []] }"]
    assert nfcheck.call_args(wf, "TRAIN_PASSES") == [["ch_dataset", "ch_interactions", "params.passes_per_task"]]
    assert nfcheck.call_args(wf, "DEEPMAPPER_BASELINE") == [["ch_dataset.join(ch_interactions)"]]
    assert ".join(ch_interactions)" in assigned["ch_findings"][0]
    assert "interactions" in PROCESSES["DEEPMAPPER_INTERACTIONS"].emits()

    passes = REPO / "subworkflows" / "local" / "train_passes" / "main.nf"
    [workflow] = nfcheck.parse_nf(passes).workflows
    assert list(workflow.takes) == ["ch_dataset", "ch_interactions", "per_task"]
    body = nfcheck.workflow_body(passes, "TRAIN_PASSES")
    assert nfcheck.assignments(body)["ch_inputs"] == ["ch_dataset.join(ch_interactions)"]
    for k in (1, 2, 3):
        [args] = nfcheck.call_args(body, f"TRAIN_ROUND_{k}")
        assert args[0] == "ch_inputs", f"TRAIN_ROUND_{k} gets {args[0]}"

    round_ = REPO / "subworkflows" / "local" / "train_round" / "main.nf"
    [workflow] = nfcheck.parse_nf(round_).workflows
    assert list(workflow.takes)[0] == "ch_inputs"
    body = nfcheck.workflow_body(round_, "TRAIN_ROUND")
    assert nfcheck.call_args(body, "DEEPMAPPER_TRAINPASS") == [["ch_tasks"]]
    [tasks] = nfcheck.assignments(body)["ch_tasks"]
    assert tasks.startswith("ch_inputs .combine(ch_plan_file.splitJson(path: 'tasks'))")
    closure = re.search(r"\.map \{ (\w+), (\w+), (\w+), (\w+) -> \[(.*)\] \}$", tasks)
    assert closure and closure.groups()[:4] == ("meta", "dataset", "interactions", "chunk")
    element = nfcheck.split_args(closure.group(5))
    assert element[1:] == ["dataset", "interactions"]
    assert "start: chunk.start" in element[0] and "count: chunk.count" in element[0]  # the range in meta
    [plan_in] = nfcheck.assignments(body)["ch_plan_in"]
    assert plan_in.startswith("ch_inputs .map { meta, _dataset, _interactions -> meta }")
    # ... and both processes take exactly [meta, dataset, interactions]
    for name in ("DEEPMAPPER_TRAINPASS", "DEEPMAPPER_BASELINE"):
        [decl] = PROCESSES[name].inputs
        assert [(kind, n) for kind, n, _ in decl.items] == [("val", "meta"), ("path", "dataset"),
                                                             ("path", "interactions")]


def step_command(name: str):
    from deepmapper.cli.data import baseline_cmd
    from deepmapper.cli.engine import train_pass

    return {"DEEPMAPPER_TRAINPASS": train_pass, "DEEPMAPPER_BASELINE": baseline_cmd}[name]


@pytest.mark.parametrize("name", ["DEEPMAPPER_TRAINPASS", "DEEPMAPPER_BASELINE"])
def test_screen_table_is_passed_only_when_given(name, tmp_path, monkeypatch):
    """nf-core's optional input: a staged interactions.tsv becomes `--interactions-tsv interactions.tsv`,
    an empty list (--interactions false) no option at all; the rendered command line, parsed by the
    step's own click command, hands the staged file to the step (or nothing)."""
    import shlex

    proc = PROCESSES[name]
    command = step_command(name)
    assert "--interactions-tsv" in next(o for o in command.params if o.name == "interactions_path").opts
    src = tmp_path / "src"
    src.mkdir()
    for f in ("dataset.h5ad", "interactions.tsv"):
        (src / f).touch()
    for given in (src / "interactions.tsv", []):
        work = tmp_path / ("with" if given else "without")
        work.mkdir()
        ctx = {"meta": STUB_META, "task": {"cpus": 1, "process": name, "ext": {"args": "", "use_gpu": None}}}
        [decl] = proc.inputs
        ctx.update(nfcheck.stage(decl.items, {"meta": STUB_META, "dataset": src / "dataset.h5ad",
                                              "interactions": given}, work))
        script, _ = nfcheck.render_template(proc.script, ctx)
        words = shlex.split(script.replace("\\\n", " "))
        assert words[:2] == ["deepmapper", command.name]
        assert words.count("--interactions-tsv") == (1 if given else 0)
        monkeypatch.chdir(work)  # the task's directory: the staged names resolve there
        with command.make_context(command.name, words[2:]) as click_ctx:
            staged = click_ctx.params["interactions_path"]
        assert staged == (Path("interactions.tsv") if given else None)
        if given:
            assert (work / staged).resolve() == (src / "interactions.tsv").resolve()


# -- module anatomy ---------------------------------------------------------------------------

def base_labels() -> set[str]:
    return set(re.findall(r"withLabel:\s*(\w+)", (REPO / "conf" / "base.config").read_text()))


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_module_anatomy(name):
    import yaml

    proc = PROCESSES[name]
    assert proc.path.relative_to(REPO).parts[:2] == ("modules", "local") and proc.path.name == "main.nf"
    assert re.search(r"(?m)^\s*tag\s+\"\$\{meta\.id\}\"", proc.directives), "tag \"${meta.id}\""
    assert proc.labels() and set(proc.labels()) <= base_labels(), "labels must be defined in conf/base.config"
    container = re.search(r"(?m)^\s*container\s+'([^']+)'", proc.directives)
    assert container and re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+[\w.-]*", container.group(1)), "pinned container"
    assert re.search(r'(?m)^\s*conda\s+"\$\{moduleDir\}/environment\.yml"', proc.directives), "conda directive"
    assert (proc.path.parent / "environment.yml").is_file()
    assert proc.inputs[0].items[0][:2] == ("val", "meta"), "first input is tuple val(meta), path(...)"
    assert any(kind == "path" for kind, _, _ in proc.inputs[0].items)
    for out in proc.outputs:
        assert out.emit, f"output without emit: {out.decl}"
        if out.patterns:
            assert out.decl.startswith("tuple val(meta)"), f"file outputs carry meta: {out.decl}"
    assert proc.when == "task.ext.when == null || task.ext.when"
    assert proc.script.defs.get("args") == "task.ext.args ?: ''" and "${args}" in proc.script.body
    assert proc.stub is not None and proc.stub.body.strip()
    versions = [o for o in proc.outputs if o.evals]
    assert versions, "versions are reported with eval(...)"
    if name != "MULTIQC":  # MULTIQC consumes the topic, so it cannot also feed it
        assert all(o.topic == "versions" for o in versions)
    # meta.yml (nf-core): the module's own name, its tools, every input and every emit
    meta = yaml.safe_load((proc.path.parent / "meta.yml").read_text())
    assert meta["name"] == name.lower() and meta["description"] and meta["authors"]
    inputs = [[next(iter(item)) for item in channel] for channel in meta["input"]]
    assert inputs == [[item[1] for item in decl.items] for decl in proc.inputs]
    assert list(meta["output"]) == [o.emit for o in proc.outputs]
    tools = {next(iter(t)) for t in meta["tools"]}
    env_tools = {dep.split("::")[-1].split("=")[0] for dep in environment(proc.path.parent) if isinstance(dep, str)}
    assert tools - {"deepmapper"} <= env_tools and ("deepmapper" in tools) == (name != "MULTIQC")


def environment(folder: Path) -> list:
    import yaml

    return yaml.safe_load((folder / "environment.yml").read_text())["dependencies"]


FACTS = json.loads((REPO / "tests" / "data" / "nextflow_facts.json").read_text())


def gpu_profile() -> str:
    return nfcheck.block_body(nfcheck.block_body(NEXTFLOW_CONFIG.read_text(), "profiles"), "gpu")


def test_gpu_profile_requests_the_gpu_everywhere():
    """-profile gpu: the CUDA image (and CUDA conda environment), accelerator (AWS Batch, Kubernetes,
    Google Batch, and the local executor from Nextflow 26.10), clusterOptions on grid executors only,
    the engine's GPU flag, and --expect-gpu for the loud line."""
    gpu = {n for n, p in PROCESSES.items() if "process_gpu" in p.labels()}
    assert gpu == {"DEEPMAPPER_TRAINPASS", "DEEPMAPPER_INTERACTIONS"}
    # every process given --device gets the GPU under the profile: `--device cuda` in a CPU-only
    # task would stop the run (device._choose refuses cuda without one)
    assert {n for n, args in EXT_ARGS.items() if any("--device" in a for a in args)} == gpu
    block = gpu_profile()
    assert "withLabel: process_gpu" in block
    version = nfgen.version()
    for needle in ("accelerator      = 1", "'--nv'", "ext.use_gpu      = true",
                   f"container        = 'deepmapper-nf/deepmapper:{version}-cuda'",
                   'conda            = "${projectDir}/containers/environment.cuda.yml"'):
        assert needle in block, needle
    assert (REPO / "containers" / "environment.cuda.yml").is_file()
    assert PARAMS["gpu_cluster_options"] == "--gres=gpu:1" and PARAMS["cluster_options"] is None
    # without the profile nothing asks for a GPU (base.config), and the task says so only under it
    base = nfcheck.block_body((REPO / "conf" / "base.config").read_text(), "withLabel: process_gpu")
    assert "ext.use_gpu = false" in base and "accelerator" not in base and "clusterOptions" not in base
    trainpass = PROCESSES["DEEPMAPPER_TRAINPASS"].script
    assert trainpass.defs["gpu"] == "task.ext.use_gpu ? '--expect-gpu' : '--no-expect-gpu'"
    for use_gpu, flag in ((True, "--expect-gpu"), (None, "--no-expect-gpu")):
        assert nfcheck.evaluate(trainpass.defs["gpu"], {"task": {"ext": {"use_gpu": use_gpu}}}) == flag


def grid_executors_in(text: str) -> list[str]:
    m = re.search(r"task\.executor in \[([^\]]*)\]", text)
    return re.findall(r"'([a-z]+)'", m.group(1)) if m else []


def test_gpu_request_adds_to_the_sites_cluster_options_on_grid_executors_only():
    """Grid executors submit clusterOptions and ignore accelerator (Nextflow's ExecutorFactory list, in
    tests/data/nextflow_facts.json); the others ignore clusterOptions. The GPU tasks' clusterOptions is
    the site's --cluster_options followed by --gpu_cluster_options on a grid executor (a list: Nextflow
    submits each element), and never replaces them with SLURM syntax elsewhere."""
    block = gpu_profile()
    cluster = block[block.index("clusterOptions   = {"):block.index("containerOptions")]
    assert sorted(grid_executors_in(cluster)) == sorted(FACTS["nextflow"]["grid_executors"])
    assert "[params.cluster_options, params.gpu_cluster_options].findAll { opt -> opt }" in cluster
    assert ": (params.cluster_options ?: null)" in cluster
    # the warning's list (utils) is the same list
    assert sorted(grid_executors_in("task.executor in " + nfcheck.block_body(UTILS.read_text(), "def gridExecutors()")
                                    .split("return", 1)[1].strip())) == sorted(FACTS["nextflow"]["grid_executors"])
    schema = json.loads((REPO / "nextflow_schema.json").read_text())
    props = {k: v for g in schema["$defs"].values() for k, v in g["properties"].items()}
    assert "cluster_options" in props and "replaces" in props["cluster_options"]["help_text"]


def test_one_gpu_per_concurrent_task_under_docker():
    """Not `--gpus all` alone: Nextflow (>= 26.10, local executor) hands each accelerator task its own
    device in CUDA_VISIBLE_DEVICES, from the list the user exports; the profile passes that variable
    into Docker and Podman containers (docker.envWhitelist), so torch there sees one device. Podman
    takes GPUs through CDI (--device nvidia.com/gpu=all), Singularity/Apptainer through --nv."""
    block = gpu_profile()
    facts = FACTS["nextflow"]["local_accelerator"]
    for engine in ("docker", "podman"):
        assert re.search(rf"(?m)^\s*{engine}\.envWhitelist\s*=\s*'{facts['env']}'", block), engine
    options = block[block.index("containerOptions"):]
    assert "workflow.containerEngine == 'docker' ? '--gpus all'" in options
    assert "workflow.containerEngine == 'podman' ? '--device nvidia.com/gpu=all'" in options
    assert "accelerator      = 1" in block
    # the run warns when the local executor cannot give each task its own GPU, naming the version
    utils = UTILS.read_text()
    assert f"matches('>={facts['since']}')" in utils and "CUDA_VISIBLE_DEVICES" in utils
    usage = (REPO / "docs" / "usage.md").read_text()
    assert "export CUDA_VISIBLE_DEVICES=" in usage and f"Nextflow {facts['since']}" in usage


# -- commands and options -------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_module_command_and_options_exist(name):
    proc = PROCESSES[name]
    command = command_of(proc)
    tool = shutil.which(command[0]) or (REPO / "bin" / command[0]).is_file()
    assert tool, f"{name}: command {command[0]} is neither on PATH nor in bin/"
    if command[0] == "deepmapper":
        assert len(command) >= 2, f"{name}: `deepmapper {proc.script.body.split()[1]}` is not a command"
    helptext = help_text(command)
    missing = sorted(opt for opt in options_used(proc) if not re.search(rf"(?<![\w-]){opt}(?![\w-])", helptext))
    assert not missing, f"{name}: `{' '.join(command)}` has no {', '.join(missing)}"


def test_ext_args_name_existing_processes():
    alias = nfcheck.aliases(NF_FILES)
    with_name = re.findall(r"withName:\s*'([^']+)'", (REPO / "conf" / "modules.config").read_text())
    named = {n for sel in with_name for n in sel.split("|")}
    assert named <= set(PROCESSES) | set(alias) and set(EXT_ARGS) <= named
    # withName matches the alias, not the original name: an aliased process needs its own selector
    for new, old in alias.items():
        assert EXT_ARGS.get(new) == EXT_ARGS.get(old), f"{new} (alias of {old}) gets other ext.args"


def params_in(name: str) -> set[str]:
    return {m for a in EXT_ARGS[name] for m in re.findall(r"params\.(\w+)", a)}


def config_options_of(command: tuple[str, ...]) -> set[str]:
    """The config params a command accepts (its --help options that are config fields)."""
    from deepmapper.config import defaults_flat

    text = help_text(command)
    return {p for p in defaults_flat() if re.search(rf"(?<![\w-])--{p.replace('_', '-')}(?![\w-])", text)}


@pytest.mark.parametrize("name", sorted(set(STEP_OF) & set(PROCESSES)))
def test_each_step_gets_exactly_the_settings_it_declares(name):
    """A step process's ext.args carry exactly the settings whose `steps` name its step (less those the
    module passes itself), and its command accepts exactly that step's settings: nothing more, so
    changing a setting on -resume re-runs only the tasks that use it."""
    from deepmapper.config import step_fields

    step = STEP_OF[name]
    only = nfgen.PROCESS_PARTS.get(name, (step, None))[1]
    expected = {f.metadata["param"] for f in nfgen.step_arg_fields(step, only)}
    assert (params_in(name) if name in EXT_ARGS else set()) == expected
    if name == "DEEPMAPPER_AUCELL":
        return  # part of ingest (inputs.derive): `deepmapper aucell` takes only what derive uses
    declared = {f.metadata["param"] for _, f in step_fields(step)}
    own = {"label_key"}
    assert config_options_of(command_of(PROCESSES[name])) - own == declared - own
    # what the module passes itself: the staged files and label_key (meta)
    staged = {f.metadata["param"] for _, f in step_fields(step) if f.metadata.get("file")}
    script = PROCESSES[name].script
    for param in staged | (own & declared):
        assert f"--{param.replace('_', '-')}" in script.body + " ".join(script.defs.values()), param


def test_training_settings_never_reach_the_other_steps():
    """The expensive step is the only one whose inputs change with the training settings, and
    accumulate/evaluate do not get them either (they record them from the pass files). Accumulate
    gets the threads: its sample-level test fits PyDESeq2 on that many processes."""
    assert "epochs" in params_in("DEEPMAPPER_TRAINPASS")
    for name in ("DEEPMAPPER_INGEST", "DEEPMAPPER_ACCUMULATE", "DEEPMAPPER_EVALUATE", "DEEPMAPPER_PLAN"):
        assert not {"epochs", "learning_rate", "attribution", "ig_steps"} & params_in(name), name
    assert params_in("DEEPMAPPER_ACCUMULATE") == {"passes", "max_tries", "top_k", "threads"}
    assert not {"top_k", "passes", "max_tries", "matrix", "normalize"} & params_in("DEEPMAPPER_TRAINPASS")


def render_args(name: str, params: dict, cpus: int = 1) -> list[str]:
    """ext.args of a process as the task's command line sees them (shell words)."""
    import shlex

    return shlex.split(nfcheck.render_ext_args(EXT_ARGS[name], {"params": params, "task": {"cpus": cpus}}))


def as_strict_cli(params: dict) -> dict:
    """Params as the strict syntax parser hands command-line values over: every value a string."""
    return {k: (v if v is None else ("true" if v is True else "false" if v is False else str(v)))
            for k, v in params.items()}


# Every input setting away from its default, booleans both ways: what a user could set.
FLIPPED = {"modality": "atac", "geneset_min_size": 3, "cluster": True, "cluster_resolution": 0.5,
           "small_stem": False, "threads": 0, "rotate_validation": False, "epochs": 7, "learning_rate": 0.01}


@pytest.mark.parametrize("strict", [False, True], ids=["legacy-parser", "strict-parser"])
@pytest.mark.parametrize("overrides", [{}, FLIPPED], ids=["test-profile", "flipped"])
def test_ext_args_parse_to_the_run_configuration(overrides, strict, tmp_path):
    """The step commands, parsed by their own click commands from the rendered ext.args, build the
    configuration the params describe (booleans as --x/--no-x flags), with typed params (legacy
    parser, config files) and with the strings the strict parser gives for command-line values."""
    from deepmapper.cli._options import build_config
    from deepmapper.cli.data import ingest_cmd
    from deepmapper.cli.engine import accumulate_cmd, train_pass
    from deepmapper.cli.plan import plan_cmd
    from deepmapper.config import step_params

    params = {**TEST_PARAMS, **overrides}
    given = as_strict_cli(params) if strict else params
    dataset = tmp_path / "dataset.h5ad"
    dataset.touch()
    commands = [("DEEPMAPPER_TRAINPASS", train_pass, ["--dataset", str(dataset), "--outdir", str(tmp_path)]),
                ("DEEPMAPPER_ACCUMULATE", accumulate_cmd, ["--dataset", str(dataset), "--outdir", str(tmp_path),
                                                           "--passes-dir", str(tmp_path)]),
                ("DEEPMAPPER_INGEST", ingest_cmd, ["--input", str(dataset), "--out", str(tmp_path / "o.h5ad")]),
                ("DEEPMAPPER_PLAN", plan_cmd, ["--round", "1", "--out", str(tmp_path / "p.json")])]
    for name, command, fixed in commands:
        argv = [*fixed, *render_args(name, given, cpus=2)]
        with command.make_context(command.name, argv) as ctx:
            values = dict(ctx.params)
        cfg = build_config(values.pop("config_path"), values).flat()
        for key in step_params(STEP_OF[name]):
            if key in ("label_key", "genesets"):
                continue  # passed by the module itself (meta, staged file)
            want = params[key]
            if key == "threads" and name in ("DEEPMAPPER_TRAINPASS", "DEEPMAPPER_ACCUMULATE"):
                want = params["threads"] or 2  # 0: the task's cpus
            assert cfg[key] == want and type(cfg[key]) is type(want), f"{name}: {key} {cfg[key]!r} != {want!r}"


def test_workflow_reads_boolean_params_as_text():
    """Under the strict parser `--skip_multiqc false` is the string 'false', which Groovy finds true:
    every boolean param the .nf files test goes through isTrue(), which compares the text."""
    booleans = {p["name"] for p in nfgen.pipeline_params() if p["type"] == "boolean"}
    from deepmapper.config import iter_fields, value_type

    booleans |= {f.metadata["param"] for _, f in iter_fields() if value_type(f) == "bool"}
    checked = 0
    # main.nf hands the help and validation params to PIPELINE_INITIALISATION, which tests its take:s
    handed = {"help_full", "show_hidden", "validate_params"}
    for path in NF_FILES:
        text = nfcheck.mask(path.read_text(), keep_comment_marks=True)
        for name in booleans:
            for m in re.finditer(rf"params\.{name}\b", text):
                before = text[max(0, m.start() - 7):m.start()]
                if path.name == "main.nf" and name in handed:
                    continue
                assert before.endswith("isTrue("), f"{rel(path)}: params.{name} used without isTrue()"
                checked += 1
    assert checked >= 5
    utils = UTILS.read_text()
    for name in handed:
        assert f"isTrue({name})" in utils
    # one definition of each shared helper, in the utils subworkflow; the others include it
    for helper in ("isTrue", "isSamplesheet", "versionsYaml", "methodsDescription", "byName"):
        defined = [rel(p) for p in NF_FILES if re.search(rf"(?m)^def {helper}\(", p.read_text())]
        assert defined == [rel(UTILS)], f"{helper} defined in {defined}"


def test_label_sources_are_checked_by_ingest(tmp_path):
    """Labels come from one place: INGEST (deepmapper.features.inputs.load, as `deepmapper run`) stops with one
    line naming both when --cluster meets --label-key or --labels; the workflow no longer repeats it."""
    labels = tmp_path / "labels.csv"
    labels.write_text("cell,label\n")
    for extra, named in ((["--label-key", "bulk_labels"], "--label-key"), (["--labels", str(labels)], "--labels")):
        done = subprocess.run(["deepmapper", "ingest", "--input", str(TEST_INPUT), "--cluster", *extra,
                               "--out", str(tmp_path / "o.h5ad")], capture_output=True, text=True, timeout=300)
        assert done.returncode != 0 and "Traceback" not in done.stderr
        errors = [line for line in done.stderr.splitlines() if line.startswith("Error")]
        assert len(errors) == 1 and "--cluster" in errors[0] and named in errors[0]
    text = (REPO / "workflows" / "deepmapper.nf").read_text() + UTILS.read_text()
    assert "labelSourceProblem" not in text and "--cluster cannot be combined with --denovo" in text


def test_multiqc_stays_offline():
    script = PROCESSES["MULTIQC"].script.body
    assert "--no-version-check" in script and "--no-ai" in script  # both are in `multiqc --help` (checked above)


@functools.cache
def run_version_command(cmd: str) -> tuple[int, str, str]:
    import tempfile

    with tempfile.TemporaryDirectory() as work:
        # DENOVO_ASSEMBLE's command reads the assembler that ran from its work directory
        Path(work, "assembler.txt").write_text("rnaspades\n")
        done = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=60, cwd=work)
    return done.returncode, done.stdout, done.stderr


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_version_commands_run_here(name):
    """Every eval(...) version command prints a version with the tools installed here."""
    ran = 0
    for out in PROCESSES[name].outputs:
        for cmd in out.evals:
            cmd = nfcheck.render(cmd, {})
            tool = "rnaspades.py" if cmd.startswith("if ") else cmd.split()[0]
            if not shutil.which(tool):
                continue  # an alternative (Trinity) not installed here; another one must run
            code, stdout, stderr = run_version_command(cmd)
            assert code == 0, f"{cmd}: {stderr[-200:]}"
            assert re.fullmatch(r"v?\d+(\.\d+)+\S*", stdout.strip()), f"{cmd} printed {stdout!r}"
            ran += 1
        if out.evals:
            assert ran, f"{name}: none of {out.evals} can run here"


# -- params, schema, profiles ------------------------------------------------------------------

@pytest.fixture(scope="module")
def schema():
    return json.loads((REPO / "nextflow_schema.json").read_text())


def schema_params(schema) -> dict:
    return {k: v for group in schema["$defs"].values() for k, v in group["properties"].items()}


def test_schema_is_valid_draft_2020_12(schema):
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert [a["$ref"] for a in schema["allOf"]] == [f"#/$defs/{k}" for k in schema["$defs"]]
    # the params as nextflow.config sets them validate against the schema
    # (input/outdir are required only on the command line)
    given = {k: v for k, v in TEST_PARAMS.items() if v is not None}
    jsonschema.Draft202012Validator(schema).validate(given)


def test_schema_file_params_are_checked(schema):
    """--genesets must be an existing file (nf-schema checks format/exists); enums and bounds bite."""
    import jsonschema

    props = schema_params(schema)
    assert props["genesets"]["format"] == "file-path" and props["genesets"]["exists"] is True
    validator = jsonschema.Draft202012Validator(schema)
    given = {k: v for k, v in TEST_PARAMS.items() if v is not None}
    validator.validate({**given, "genesets": str(REPO / "tests" / "data" / "pbmc_markers.gmt")})
    for bad in ({"cluster": "yes"}, {"cluster_resolution": 0}, {"modality": "dna"}, {"geneset_min_size": 0},
                {"backbone": "resnet99"}, {"backbone": "timm:"}, {"test_fraction": 0.9}, {"passes": 0}):
        with pytest.raises(jsonschema.ValidationError):
            validator.validate({**given, **bad})
    validator.validate({**given, "backbone": "timm:convnext_tiny"})


def test_config_schema_and_docs_agree(schema):
    """The committed files agree with each other (the generator keeps them so, test_generated_files
    checks it): the same params, the same defaults; each param and profile is in docs/usage.md."""
    props = schema_params(schema)
    assert set(props) == set(PARAMS), "nextflow_schema.json and nextflow.config name the same params"
    for name, value in PARAMS.items():
        assert props[name].get("default") == value and type(props[name].get("default")) is type(value), name
        assert props[name].get("description"), f"{name} is documented"
    usage = (REPO / "docs" / "usage.md").read_text()
    undocumented = sorted(p for p in PARAMS if f"`--{p}`" not in usage)
    assert not undocumented, f"docs/usage.md does not document {undocumented}"
    missing = sorted(p for p in nfcheck.profiles(NEXTFLOW_CONFIG) if f"`{p}`" not in usage)
    assert not missing, f"docs/usage.md does not describe the profiles {missing}"
    for image in (f"deepmapper-nf/deepmapper:{nfgen.version()}", f"deepmapper-nf/deepmapper:{nfgen.version()}-cuda"):
        assert image in usage
    for how in ("containers/build.sh", "--sif", "-profile test,docker", "-profile test,local", "-profile conda",
                "-profile mamba", "wave", "NXF_SINGULARITY_CACHEDIR", "NXF_SYNTAX_PARSER"):
        assert how in usage, how


def test_schema_constraints_agree_with_config_validation(schema):
    """Every enum value the schema allows is a valid config; every bound is the config's bound."""
    from deepmapper.config import Config, defaults_flat
    from deepmapper.errors import ConfigError

    props = schema_params(schema)
    checked = 0
    for name in defaults_flat():
        spec = props[name]
        for value in spec.get("enum", []):
            Config().with_params({name: value})
            checked += 1
        step = 1 if spec["type"] == "integer" else 1e-6
        outside = []
        if "minimum" in spec:
            outside.append(spec["minimum"] - step)
        if "maximum" in spec:
            outside.append(spec["maximum"] + step)
        outside += [spec[k] for k in ("exclusiveMinimum", "exclusiveMaximum") if k in spec]
        for bad in outside:
            with pytest.raises(ConfigError):
                Config().with_params({name: bad})
            checked += 1
    assert checked > 40


def test_required_profiles_exist():
    names = nfcheck.profiles(NEXTFLOW_CONFIG)
    assert {"test", "test_full", "docker", "podman", "singularity", "apptainer", "conda", "mamba", "wave", "local",
            "gpu", "slurm", "awsbatch", "kubernetes"} <= names
    text = NEXTFLOW_CONFIG.read_text()
    manifest = nfcheck.block_body(text, "manifest")
    for key in ("name", "contributors", "homePage", "description", "mainScript", "defaultBranch", "nextflowVersion",
                "version", "doi", "license"):
        assert re.search(rf"(?m)^\s*{key}\s*=", manifest), f"manifest.{key}"
    assert "includeConfig 'conf/test.config'" in text
    # the institutional profiles of nf-core/configs, skipped offline
    include = ("includeConfig params.custom_config_base && (!System.getenv('NXF_OFFLINE') || "
               "!params.custom_config_base.startsWith('http')) ? \"${params.custom_config_base}/nfcore_custom.config\" "
               ": \"/dev/null\"")
    assert include in text.splitlines()
    assert PARAMS["custom_config_base"] == "https://raw.githubusercontent.com/nf-core/configs/master"
    # --custom_config_version picks the nf-core/configs commit (it was a parameter nothing read)
    base = re.search(r"(?m)^\s*custom_config_base\s*=\s*(.+)$", nfcheck.block_body(text, "params")).group(1)
    assert nfcheck.evaluate(base, {"params": {"custom_config_version": "abc123"}}).endswith("/configs/abc123")
    # current nf-schema (3.x: CLI values cast to the schema's types under the strict parser too)
    assert re.search(r"id 'nf-schema@3\.\d+\.\d+'", text)
    profiles = nfcheck.block_body(text, "profiles")
    mamba = nfcheck.block_body(profiles, "mamba")
    assert "conda.useMamba          = true" in mamba and "conda.enabled           = true" in mamba
    wave = nfcheck.block_body(profiles, "wave")
    assert "wave.enabled            = true" in wave and "'conda,container'" in wave
    local = nfcheck.block_body(profiles, "local")
    assert all(f"{engine}.enabled" in local for engine in ("conda", "docker", "podman", "singularity", "apptainer"))
    assert "enabled           = true" not in local and "= true" not in local


TEST_PROFILES = {"test": "test.config", "test_populations": "test_populations.config",
                 "test_denovo": "test_denovo.config"}


@pytest.mark.parametrize("profile", sorted(TEST_PROFILES))
def test_test_profile_inputs_ship_and_are_valid(profile):
    """Each test profile's files are in the repository and its settings form a valid config."""
    from deepmapper.config import Config

    config = REPO / "conf" / TEST_PROFILES[profile]
    assert f"includeConfig 'conf/{TEST_PROFILES[profile]}'" in NEXTFLOW_CONFIG.read_text()
    params = {**PARAMS, **nfcheck.config_params(config)}
    for key in ("input", "reference"):
        if params.get(key):
            assert Path(params[key]).exists(), f"{profile}: {key} {params[key]} is missing"
    if params["input"].endswith(".csv"):
        sheet = Path(params["input"])
        for row in samplesheet_rows(sheet):
            for key in ("path", "fastq_1", "fastq_2"):
                if key in row:
                    # from any launch directory: relative to the sheet's own folder, which
                    # resolveSamplesheetPath falls back to, and not to the repository root
                    assert not Path(row[key]).is_absolute() and (sheet.parent / row[key]).exists(), row[key]
                    assert not (REPO / row[key]).exists(), f"{profile}: {row[key]} only works from the repository root"
    Config().with_params({k: params[k] for k in params if k in Config().flat()})
    text = config.read_text()
    assert "resourceLimits" in text and "bin/make_test_data.py" in text
    assert (REPO / "bin" / "make_test_data.py").is_file()


def test_test_full_profile_generates_its_larger_input(tmp_path):
    """test_full reads a seeded planted dataset that `bin/make_test_data.py --full` writes (kept out of
    git): generated here at a small size, it lands where the profile looks, labelled as the profile says."""
    import anndata as ad

    params = {**PARAMS, **nfcheck.config_params(REPO / "conf" / "test_full.config", {"projectDir": str(tmp_path)})}
    done = subprocess.run(["python", str(REPO / "bin" / "make_test_data.py"), "--full", "--full-cells", "400",
                           "--root", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-1000:]
    data = ad.read_h5ad(params["input"])
    assert data.n_obs == 400 and data.n_vars == 2000 and data.obs[params["label_key"]].nunique() == 4
    truth = json.loads((Path(params["input"]).parent / "truth.json").read_text())
    assert set(truth["marginal"]) <= set(data.var_names)
    assert params["passes"] >= 50 and "bin/make_test_data.py --full" in (REPO / "conf" / "test_full.config").read_text()
    assert "/assets/test_full/" in (REPO / ".gitignore").read_text()


def test_bundled_test_data_is_small():
    size = sum(f.stat().st_size for f in (REPO / "assets" / "test").rglob("*") if f.is_file())
    assert 0 < size < 2_000_000


def nf_schema_cell(text: str):
    """A CSV cell as nf-schema hands it to the validator (utils/Types.inferType: org.json's
    JSONObject.stringToValue): true/false/null by name, a number where it parses as one, else text."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if text.lower() == "null":
        return None
    if text[:1].isdigit() or text[:1] == "-":
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
    return text


def samplesheet_rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        # nf-schema drops empty cells before validating, and types the others
        return [{k: nf_schema_cell(v) for k, v in row.items() if v} for row in csv.DictReader(fh)]


def test_samplesheets_validate_against_schema_input(tmp_path):
    import jsonschema

    schema = json.loads((REPO / "assets" / "schema_input.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    sheets = sorted((REPO / "assets").glob("samplesheet_*.csv"))
    assert sheets
    for sheet in sheets:
        rows = samplesheet_rows(sheet)
        validator.validate(rows)
        for row in rows:
            for key in ("path", "fastq_1", "fastq_2"):
                if key in row:
                    assert (sheet.parent / row[key]).exists(), f"{sheet.name}: {row[key]} does not exist"
    good = {"sample": "a", "path": "x/", "label": "T"}
    validator.validate([good, {**good, "sample": "b"}])
    # sample ids 1, 2, labels 0 / 1 or true / false, a folder named 7: nf-schema types those cells as
    # numbers and booleans, and a "string"-only schema refused them (nextflow-io/nf-schema#81)
    numeric = tmp_path / "numeric.csv"
    numeric.write_text("sample,path,label\n1,7,0\n2,x/,true\n")
    rows = samplesheet_rows(numeric)
    assert rows[0] == {"sample": 1, "path": 7, "label": 0} and rows[1]["label"] is True
    validator.validate(rows)
    strict = json.loads(json.dumps(schema))
    for key in ("sample", "path", "label"):
        strict["items"]["properties"][key]["type"] = "string"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(strict).validate(rows)
    readsheet = (REPO / "subworkflows" / "local" / "utils_deepmapper_pipeline" / "main.nf").read_text()
    assert "id: meta.id.toString(), label: meta.label.toString()" in readsheet    # text again for the steps
    for bad in ({"sample": "a b", "path": "x", "label": "T"},          # space in sample
                {"sample": "a", "label": "T"},                         # neither path nor fastq_1
                {"sample": "a", "path": "x", "fastq_1": "r.fq.gz", "label": "T"},  # both
                {"sample": "a", "fastq_1": "reads.bam", "label": "T"},  # not FASTQ
                {"sample": "a", "path": "x"}):                         # no label
        with pytest.raises(jsonschema.ValidationError):
            validator.validate([bad, {**good, "sample": "z"}])


# -- running the modules' commands, chained like the workflow ------------------------------------

class Task:
    """One process execution in its own work directory, like a Nextflow task."""

    def __init__(self, name: str, workroot: Path, tag: str):
        self.proc = PROCESSES[name]
        self.dir = workroot / f"{name.lower()}_{tag}"
        self.dir.mkdir(parents=True)

    def run(self, sources: dict, meta: dict, given: dict | None = None, stub: bool = False,
            params: dict | None = None, cpus: int = 1) -> dict[str, list[Path]]:
        ctx = {"meta": meta, "task": {"cpus": cpus, "process": self.proc.name, "ext": {}}}
        for decl in self.proc.inputs:
            ctx.update(nfcheck.stage(decl.items, sources, self.dir))
        ext = EXT_ARGS.get(self.proc.name, [])
        args_ctx = {"params": params or TEST_PARAMS, "task": ctx["task"]}
        ctx["task"]["ext"]["args"] = nfcheck.render_ext_args(ext, args_ctx)
        script, _ = nfcheck.render_template(self.proc.stub if stub else self.proc.script, ctx, given)
        (self.dir / ".command.sh").write_text(script)
        env = dict(os.environ)
        if not INSTALLED_ONLY:  # the rehearsal runs the wheel's console script instead of bin/'s shim
            env["PATH"] = f"{REPO / 'bin'}:{env['PATH']}"  # Nextflow puts bin/ on a task's PATH
        done = subprocess.run(["bash", "-euo", "pipefail", ".command.sh"], cwd=self.dir, capture_output=True,
                              text=True, timeout=600, env=env)
        assert done.returncode == 0, (f"{self.proc.name} failed ({done.returncode}):\n{script}\n"
                                      f"{done.stderr[-2000:]}")
        outputs = nfcheck.collect_outputs(self.proc, self.dir, ctx)
        for emit, files in outputs.items():
            for f in files:
                assert stub or f.is_dir() or f.stat().st_size > 0, f"{self.proc.name}.{emit}: {f.name} is empty"
        for out in self.proc.outputs:
            if re.search(r"\bstdout\b", out.decl):  # `stdout` outputs: what the script printed
                outputs[out.emit] = done.stdout
        return outputs


def train_rounds(work: Path, meta: dict, dataset: Path, params: dict, cpus: int = 1, interactions=()) -> dict:
    """subworkflows/local/train_passes and train_round: per round, DEEPMAPPER_PLAN on the verdicts so
    far, then one DEEPMAPPER_TRAINPASS task per entry of the plan's `tasks` (the workflow's
    splitJson(path: 'tasks')), each with the dataset and the pair screen's table (``interactions``:
    DEEPMAPPER_INTERACTIONS' file, or [] as with --interactions false), until the plans are empty or
    planning.ROUNDS rounds are done. Also returns each task's command line (``scripts``)."""
    from deepmapper.engine.planning import ROUNDS

    interactions = list(interactions) if isinstance(interactions, (list, tuple)) else interactions
    verdicts, passes, plans, scripts = [], [], [], []
    for round_number in range(1, ROUNDS + 1):
        plan_out = Task("DEEPMAPPER_PLAN", work, str(round_number)).run(
            {"meta": meta, "verdicts": list(verdicts), "round": round_number, "per_task": params["passes_per_task"]},
            meta, params=params)
        plan = json.loads(plan_out["plan"][0].read_text())
        assert plan_out["plan"][0].name == f"plan_round{round_number}.json" and plan["round"] == round_number
        plans.append(plan)
        for task in plan["tasks"]:
            chunk = {**meta, "start": task["start"], "count": task["count"], "id": f"{meta['id']}_pass{task['start']:03d}"}
            one = Task("DEEPMAPPER_TRAINPASS", work, f"{round_number}_{task['start']}")
            res = one.run({"meta": chunk, "dataset": dataset, "interactions": interactions}, chunk, params=params,
                          cpus=cpus)
            want = [f"pass_{i:03d}.npz" for i in range(task["start"], task["start"] + task["count"])]
            assert [f.name for f in res["passes"]] == want
            passes += res["passes"]
            verdicts += res["verdicts"]
            scripts.append((one.dir / ".command.sh").read_text())
    return {"passes": sorted(passes, key=lambda f: f.name), "verdicts": verdicts, "plans": plans, "scripts": scripts}


@pytest.fixture(scope="module")
def dag(tmp_path_factory):
    """The DAG of workflows/deepmapper.nf on the test profile: one dict of outputs per step."""
    if INSTALLED_ONLY:  # scripts/release_rehearsal.sh: the installed wheel, never the source tree
        import deepmapper

        found = shutil.which("deepmapper")
        assert REPO not in Path(deepmapper.__file__).resolve().parents, deepmapper.__file__
        assert found and REPO not in Path(found).resolve().parents, found
    work = tmp_path_factory.mktemp("work")
    p = TEST_PARAMS
    meta = {"id": TEST_INPUT.stem, "label_key": p["label_key"]}
    out = {}
    out["ingest"] = Task("DEEPMAPPER_INGEST", work, "1").run(
        {"meta": meta, "inputs": [TEST_INPUT], "labels": [], "genesets": []}, meta,
        given={"sources": f"--input 'input01/{TEST_INPUT.name}'", "sample_names": ""})  # the single-matrix branch
    dataset = out["ingest"]["dataset"][0]
    assert p["interactions"] is True  # the test profile runs the pair screen
    out["interactions"] = Task("DEEPMAPPER_INTERACTIONS", work, "1").run({"meta": meta, "dataset": dataset}, meta)
    [screen] = out["interactions"]["interactions"]
    out.update(train_rounds(work, meta, dataset, p, interactions=screen))
    gathered = {"meta": meta, "dataset": dataset, "passes": out["passes"]}
    out["baseline"] = Task("DEEPMAPPER_BASELINE", work, "1").run(
        {"meta": meta, "dataset": dataset, "interactions": screen}, meta)
    # the workflow joins the baselines to the passes: the trust verdict compares with logistic regression
    out["accumulate"] = Task("DEEPMAPPER_ACCUMULATE", work, "1").run(
        {**gathered, "baselines": out["baseline"]["baselines"]}, meta)
    out["evaluate"] = Task("DEEPMAPPER_EVALUATE", work, "1").run(gathered, meta)
    # the workflow's ch_findings: the findings, the placed pairs and the screen's table
    findings = [*out["accumulate"]["findings"], *out["accumulate"]["pairs"], screen]
    out["report"] = Task("DEEPMAPPER_REPORT", work, "1").run(
        {"meta": meta, "dataset": dataset, "passes": out["passes"], "findings": findings,
         "baselines": out["baseline"]["baselines"], "evaluation": out["evaluate"]["evaluation"][0]}, meta)
    import deepmapper
    import torch

    out["torch_version"] = torch.__version__
    versions = work / "pipeline_software_mqc_versions.yml"
    versions.write_text(f"DEEPMAPPER_TRAINPASS:\n    deepmapper: {deepmapper.__version__}\n    torch: {torch.__version__}\n")
    out["multiqc"] = Task("MULTIQC", work, "1").run(
        {"meta": meta, "multiqc_files": [*out["report"]["mqc"], versions],
         "multiqc_config": REPO / "assets" / "multiqc_config.yml"}, meta)
    return out


def test_dag_ingest_and_passes(dag):
    import anndata as ad

    data = ad.read_h5ad(dag["ingest"]["dataset"][0], backed="r")
    assert data.shape == (700, 765)
    assert [f.name for f in dag["passes"]] == [f"pass_{i:03d}.npz" for i in range(TEST_PARAMS["passes"])]


def test_dag_rounds_are_planned_from_the_verdicts(dag, tmp_path):
    """Round 1 trains passes 0..passes-1 in tasks of passes_per_task; the verdict files say what the gate
    decided (the same as the pass files); with every pass accepted, rounds 2 and 3 plan nothing. A
    rejected pass (verdicts rewritten) makes the plan command schedule more, from the next index on."""
    from deepmapper.engine.passfile import read_pass

    p = TEST_PARAMS
    first = dag["plans"][0]
    assert first["passes"] == list(range(p["passes"]))
    assert first["tasks"] == [{"start": s, "count": min(p["passes_per_task"], p["passes"] - s)}
                              for s in range(0, p["passes"], p["passes_per_task"])]
    recorded = {}
    for path in dag["verdicts"]:
        data = json.loads(path.read_text())
        assert data["device"] == "cpu" and data["gpu_expected"] is False
        recorded.update({v["pass_index"]: v["accepted"] for v in data["passes"]})
    assert recorded == {read_pass(f).pass_index: read_pass(f).accepted for f in dag["passes"]}
    if all(recorded.values()):
        assert [plan["tasks"] for plan in dag["plans"][1:]] == [[], []] and dag["plans"][1]["done"]
    # the same command on verdicts with passes 1 and 2 rejected: 2 of 4 accepted, rate 1/2 -> 4 more
    rejected = tmp_path / "verdicts"
    rejected.mkdir()
    for path in dag["verdicts"]:
        data = json.loads(path.read_text())
        for v in data["passes"]:
            v["accepted"] = v["pass_index"] not in (1, 2)
        (rejected / path.name).write_text(json.dumps(data))
    meta = {"id": "again"}
    plan = Task("DEEPMAPPER_PLAN", tmp_path, "2").run(
        {"meta": meta, "verdicts": sorted(rejected.iterdir()), "round": 2, "per_task": p["passes_per_task"]},
        meta, params=p)
    plan = json.loads(plan["plan"][0].read_text())
    assert plan["accepted"] == p["passes"] - 2 and plan["passes"] == list(range(p["passes"], 2 * p["passes"]))


def test_dag_findings_rank_every_feature(dag):
    import pandas as pd

    tsv, js, per_class = dag["accumulate"]["findings"]
    table = pd.read_csv(tsv, sep="\t")
    assert len(table) == 765 and table["feature"].is_unique
    summary = json.loads(js.read_text())
    assert len(summary["pass_indices"]) <= TEST_PARAMS["passes"]
    evaluation = json.loads(dag["evaluate"]["evaluation"][0].read_text())
    assert evaluation["accuracy"] > evaluation["majority_rate"]  # the ensembled model learned something


def test_dag_passes_read_the_screen_table(dag):
    """Every pass task stages DEEPMAPPER_INTERACTIONS' table and passes it on (no task runs the screen
    again); the pairs each pass placed are the table's (interactions.select_pairs on it)."""
    import anndata as ad

    from deepmapper.config import Config
    from deepmapper.engine.interactions import read_table, select_pairs
    from deepmapper.engine.passfile import read_pass

    [screen] = dag["interactions"]["interactions"]
    assert dag["scripts"] and all("--interactions-tsv interactions.tsv" in s for s in dag["scripts"])
    staged = {(f.parent / "interactions.tsv").resolve() for f in dag["verdicts"]}
    assert staged == {screen.resolve()}
    cfg = Config().with_params({k: TEST_PARAMS[k] for k in Config().flat() if k in TEST_PARAMS})
    names = list(ad.read_h5ad(dag["ingest"]["dataset"][0], backed="r").var_names)
    want, _, _ = select_pairs(read_table(screen), names, q_threshold=cfg.interactions.q_threshold,
                              max_pairs=cfg.interactions.max_pairs)
    for f in dag["passes"]:
        assert read_pass(f).pairs.tolist() == want.tolist(), f.name


def test_pass_task_places_the_pairs_of_the_table_it_is_given(dag, tmp_path):
    """The pass task uses the table it stages, not a screen of its own: the same table with one pair's q
    set below --interaction_q (the screen itself finds no such pair on these data) gives a pass with
    exactly that pair side by side."""
    import anndata as ad
    import pandas as pd

    from deepmapper.engine.passfile import read_pass

    [screen] = dag["interactions"]["interactions"]
    table = pd.read_csv(screen, sep="\t")
    picked = table.index[table["q_value"] >= TEST_PARAMS["interaction_q"]][0]
    table.loc[picked, "q_value"] = TEST_PARAMS["interaction_q"] / 10
    crafted = tmp_path / "crafted" / "interactions.tsv"
    crafted.parent.mkdir()
    table.to_csv(crafted, sep="\t", index=False)
    meta = {"id": "crafted", "label_key": TEST_PARAMS["label_key"], "start": 0, "count": 1}
    params = {**TEST_PARAMS, "epochs": 1, "min_epochs": 1, "passes_per_step": 1}
    res = Task("DEEPMAPPER_TRAINPASS", tmp_path, "crafted").run(
        {"meta": meta, "dataset": dag["ingest"]["dataset"][0], "interactions": crafted}, meta, params=params)
    [pass_file] = res["passes"]
    names = list(ad.read_h5ad(dag["ingest"]["dataset"][0], backed="r").var_names)
    placed = [[names[i] for i in pair] for pair in read_pass(pass_file).pairs]
    assert placed == [[table.loc[picked, "feature_a"], table.loc[picked, "feature_b"]]]


def test_dag_baselines_include_the_screen_alone(dag):
    """Given the screen's table, DEEPMAPPER_BASELINE also writes baselines/interactions.tsv (every feature,
    genes by their best screened pair), declared by its output pattern; the report shows it."""
    import pandas as pd

    files = {f.name: f for f in dag["baseline"]["baselines"]}
    assert set(files) == {"logistic.tsv", "wilcoxon.tsv", "interactions.tsv", "baselines.json"}
    [screen] = dag["interactions"]["interactions"]
    table = pd.read_csv(screen, sep="\t")
    alone = pd.read_csv(files["interactions.tsv"], sep="\t")
    assert list(alone.columns) == ["feature", "rank", "score"] and len(alone) == 765 and alone["feature"].is_unique
    passed = table[table["q_value"] < TEST_PARAMS["interaction_q"]]
    pool = passed if len(passed) else table  # genes of pairs below the threshold rank first
    best = pool.loc[pool["score"].abs().idxmax()]
    assert set(alone["feature"][:2]) == {best["feature_a"], best["feature_b"]}
    summary = json.loads(files["baselines.json"].read_text())
    assert summary["methods"] == ["logistic", "wilcoxon", "interactions"]
    assert summary["interactions"]["n_pairs"] == int((table["q_value"] < TEST_PARAMS["interaction_q"]).sum())
    assert "the pair screen alone" in dag["report"]["html"][0].read_text()


def test_dag_report_and_multiqc(dag):
    assert "<html" in dag["report"]["html"][0].read_text()[:2000].lower()
    html = dag["multiqc"]["report"][0].read_text()
    assert "deepmapper" in html.lower()
    # the per-process versions gathered from the `versions` topic reach the report
    data = dag["multiqc"]["data"][0]
    versions = "".join(f.read_text() for f in data.glob("*software_versions*"))
    assert "DEEPMAPPER_TRAINPASS" in versions and dag["torch_version"] in versions
    # and MultiQC's own version, which cannot come through the topic MULTIQC consumes
    import multiqc

    [table] = [f for f in data.glob("*software_versions*.txt")]  # process x tool, tab-separated
    header, *rows = [line.split("\t") for line in table.read_text().splitlines()]
    reported = {row[0]: dict(zip(header[1:], row[1:])) for row in rows}
    assert reported["MULTIQC"]["multiqc"] == multiqc.__version__, versions


def run_options(params: dict) -> list[str]:
    """`deepmapper run` options for the run-configuration params (not label_key; null ones left out)."""
    from deepmapper.config import defaults_flat

    opts = []
    for key in defaults_flat():
        value, name = params[key], key.replace("_", "-")
        if key == "label_key" or value is None:
            continue
        opts.append((f"--{name}" if value else f"--no-{name}") if isinstance(value, bool) else f"--{name}={value}")
    return opts


def test_dag_equals_embedded_run(dag, tmp_path):
    """Distributed (task per chunk of passes, gathered) and embedded give the same findings."""
    # torch's numerics depend on its thread count: the pass tasks ran with
    # --threads <task.cpus> (threads 0) = 1 thread, so the embedded run does too
    p = {**TEST_PARAMS, "threads": TEST_PARAMS["threads"] or 1}
    done = subprocess.run(["deepmapper", "run", "--input", str(TEST_INPUT), "--label-key", p["label_key"],
                           "--outdir", str(tmp_path / "run"), "--no-report", *run_options(p)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    tsv, js, per_class = dag["accumulate"]["findings"]
    # both compared the passes with the same logistic regression (the trust verdict)
    assert json.loads(js.read_text())["trust"]["baseline_accuracy"] is not None
    assert (tmp_path / "run" / "findings.tsv").read_bytes() == tsv.read_bytes()
    assert (tmp_path / "run" / "findings_per_class.tsv").read_bytes() == per_class.read_bytes()
    # accumulate got only --passes/--max-tries/--top-k and recorded the rest from the dataset
    # (ingest's settings) and the pass files (training's): the same record as the embedded run
    assert (tmp_path / "run" / "findings.json").read_bytes() == js.read_bytes()


# -- conditions across donors through the DAG (--sample_key), and what the pipeline publishes ----

from deepmapper.results import layout  # noqa: E402

PUBLISH_RULES = nfcheck.publish_rules(REPO / "conf" / "modules.config")


def task_dir(path: Path, process: str) -> Path:
    """The work directory of the :class:`Task` that wrote ``path`` (``<work>/<process>_<tag>``)."""
    for parent in Path(path).parents:
        if parent.name.startswith(process.lower() + "_"):
            return parent
    raise AssertionError(f"{path} was not written by a {process} task")


def published(tasks: dict[str, list[Path]], params: dict) -> set[str]:
    """Every file the pipeline publishes under ``--outdir``, given each process's output files: the
    publishDir rules of conf/modules.config applied as Nextflow applies them (nfcheck.publish); a
    folder published whole is listed file by file."""
    out = set()
    for process, files in tasks.items():
        by_dir = {}
        for f in files:
            by_dir.setdefault(task_dir(f, process), []).append(f)
        for wd, group in by_dir.items():
            for source, dest in nfcheck.publish(PUBLISH_RULES.get(process, []), group, wd, {"params": params}):
                if source.is_dir():
                    out |= {f"{dest}/{f.relative_to(source).as_posix()}" for f in source.rglob("*") if f.is_file()}
                else:
                    out.add(dest)
    return out


def run_layout(outdir: Path) -> set[str]:
    return {f.relative_to(outdir).as_posix() for f in outdir.rglob("*")
            if f.is_file() and ".deepmapper" not in f.relative_to(outdir).parts}


DONOR_PARAMS = {**TEST_PARAMS, "label_key": "condition", "sample_key": "donor", "passes": 4, "passes_per_task": 2,
                "epochs": 3, "top_k": 10, "outdir": "DIR"}


@pytest.fixture(scope="module")
def donor_dag(tmp_path_factory):
    """workflows/deepmapper.nf with --sample_key on simulated donors (4 per condition, counts): every
    process that the sample key reaches, as Nextflow would chain them."""
    from deepmapper.datasets import donors

    work = tmp_path_factory.mktemp("donors")
    source = work / "donors.h5ad"
    donors.simulate(4, n_genes=60, mean_cells=30, seed=3).write_h5ad(source)
    p = DONOR_PARAMS
    meta = {"id": "donors", "label_key": p["label_key"]}
    out = {"input": source}
    out["ingest"] = Task("DEEPMAPPER_INGEST", work, "1").run(
        {"meta": meta, "inputs": [source], "labels": [], "genesets": []}, meta, params=p,
        given={"sources": f"--input 'input01/{source.name}'", "sample_names": ""})
    dataset = out["ingest"]["dataset"][0]
    out["interactions"] = Task("DEEPMAPPER_INTERACTIONS", work, "1").run({"meta": meta, "dataset": dataset}, meta,
                                                                         params=p)
    [screen] = out["interactions"]["interactions"]
    out.update(train_rounds(work, meta, dataset, p, interactions=screen))
    out["baseline"] = Task("DEEPMAPPER_BASELINE", work, "1").run(
        {"meta": meta, "dataset": dataset, "interactions": screen}, meta, params=p)
    gathered = {"meta": meta, "dataset": dataset, "passes": out["passes"]}
    out["accumulate"] = Task("DEEPMAPPER_ACCUMULATE", work, "1").run(
        {**gathered, "baselines": out["baseline"]["baselines"]}, meta, params=p)
    out["evaluate"] = Task("DEEPMAPPER_EVALUATE", work, "1").run(gathered, meta, params=p)
    findings = [*out["accumulate"]["findings"], *out["accumulate"]["pairs"], screen]
    out["report"] = Task("DEEPMAPPER_REPORT", work, "1").run(
        {"meta": meta, "dataset": dataset, "passes": out["passes"], "findings": findings,
         "baselines": out["baseline"]["baselines"], "evaluation": out["evaluate"]["evaluation"][0]}, meta, params=p)
    out["multiqc"] = Task("MULTIQC", work, "1").run(
        {"meta": meta, "multiqc_files": out["report"]["mqc"], "multiqc_config": REPO / "assets" / "multiqc_config.yml"},
        meta, params=p)
    return out


def test_donor_dag_tests_at_the_level_of_the_sample(donor_dag):
    """--sample_key reaches ingest; accumulate writes the sample-level columns and the per-sample
    table; the baseline task fits the pseudobulk GLM (PyDESeq2, which the environments pin)."""
    import anndata as ad

    data = ad.read_h5ad(donor_dag["ingest"]["dataset"][0], backed="r")
    assert data.uns["deepmapper"]["sample_key"] == "donor"
    tsv, js, _ = donor_dag["accumulate"]["findings"]
    assert {"sample_p", "sample_q"} <= set(tsv.read_text().splitlines()[0].split("\t"))
    assert json.loads(js.read_text())["sample_level"]["test"].startswith("pseudobulk")
    [samples] = donor_dag["accumulate"]["samples"]
    assert samples.name == "findings_samples.tsv"
    assert "pseudobulk.tsv" in {f.name for f in donor_dag["baseline"]["baselines"]}


def test_the_pipeline_publishes_the_layout_of_deepmapper_run(donor_dag, tmp_path):
    """conf/modules.config's publishDir rules, applied to the tasks' outputs as Nextflow applies them,
    give `deepmapper run --outdir`'s layout (docs/output.md): the same files, byte for byte where
    both are deterministic, less what only `run` writes and plus Nextflow's pipeline_info."""
    p = {**DONOR_PARAMS, "threads": DONOR_PARAMS["threads"] or 1}
    done = subprocess.run(["deepmapper", "run", "--input", str(donor_dag["input"]), "--label-key", p["label_key"],
                           "--outdir", str(tmp_path / "run"), *run_options(p)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    run = run_layout(tmp_path / "run")
    steps = {"DEEPMAPPER_INGEST": "ingest", "DEEPMAPPER_INTERACTIONS": "interactions", "DEEPMAPPER_BASELINE": "baseline",
             "DEEPMAPPER_ACCUMULATE": "accumulate", "DEEPMAPPER_EVALUATE": "evaluate", "DEEPMAPPER_REPORT": "report",
             "MULTIQC": "multiqc"}
    tasks = {proc: [f for files in donor_dag[key].values() if isinstance(files, list) for f in files]
             for proc, key in steps.items()}
    tasks["DEEPMAPPER_TRAINPASS"] = donor_dag["passes"] + donor_dag["verdicts"]
    pipeline = published(tasks, p)
    only_run = {layout.RUN_INFO, layout.RUN_LOG, layout.MANIFEST}
    assert only_run <= run
    # the MultiQC report differs in its software-versions file (run: the report's own; the
    # pipeline: the `versions` topic's, in pipeline_info) and in the folders MultiQC names by date
    def comparable(paths):
        return {x for x in paths if not x.startswith(f"{layout.MULTIQC}/") and "_mqc_versions" not in x}
    assert comparable(pipeline) == comparable(run - only_run), (
        sorted(comparable(pipeline) ^ comparable(run - only_run)))
    assert f"{layout.MULTIQC}/{layout.MULTIQC_REPORT}" in pipeline
    for name in (layout.FINDINGS, layout.FINDINGS_PER_CLASS, layout.FINDINGS_SAMPLES, layout.INTERACTIONS,
                 f"{layout.BASELINES}/pseudobulk.tsv"):
        assert name in pipeline
    tsv, js, per_class = donor_dag["accumulate"]["findings"]
    assert (tmp_path / "run" / layout.FINDINGS).read_bytes() == tsv.read_bytes()
    [samples] = donor_dag["accumulate"]["samples"]
    assert (tmp_path / "run" / layout.FINDINGS_SAMPLES).read_bytes() == samples.read_bytes()


def test_publish_simulation_follows_nextflow(tmp_path):
    """nfcheck.publish as PublishDir.apply1: the glob is matched against the path relative to the
    task directory (`*` stays within a folder), saveAs renames or (null) skips, folders go whole."""
    wd = tmp_path / "t"
    (wd / "report" / "mqc").mkdir(parents=True)
    files = [wd / "report" / "report.html", wd / "report" / "mqc" / "a_mqc.tsv", wd / "findings.tsv"]
    rules = [nfcheck.PublishRule('{ "${params.outdir}/x" }', "report/*", "{ f -> f.replaceFirst('^report/', '') }")]
    got = nfcheck.publish(rules, files, wd, {"params": {"outdir": "OUT"}})
    assert [d for _, d in got] == ["x/report.html"]          # `*` does not cross into report/mqc/
    skip = [nfcheck.PublishRule('{ "${params.outdir}" }', None, "{ f -> null }")]
    assert nfcheck.publish(skip, files, wd, {"params": {"outdir": "OUT"}}) == []
    whole = [nfcheck.PublishRule('{ "${params.outdir}" }', "report/**", None)]
    assert [d for _, d in nfcheck.publish(whole, files, wd, {"params": {"outdir": "OUT"}})] == [
        "report/report.html", "report/mqc/a_mqc.tsv"]


def test_ingest_of_samplesheet_populations(tmp_path):
    """The samplesheet branch: one LABEL=PATH input per row, 10x directories staged as input??/."""
    import anndata as ad

    rows = samplesheet_rows(REPO / "assets" / "samplesheet_test_populations.csv")
    meta = {"id": "samplesheet_test_populations", "labels": [r["label"] for r in rows],
            "samples": [r["sample"] for r in rows]}
    dirs = [REPO / "assets" / r["path"] for r in rows]  # resolveSamplesheetPath: beside the sheet
    # the value of `def sources` for these rows: [meta.labels, inputs].transpose().collect {...}
    sources = " ".join(f"--input '{r['label']}=input{k:02d}/{d.name}'" for k, (r, d) in enumerate(zip(rows, dirs), 1))
    # and of `def sample_names`: the sheet's ids, which staging (input??/<name>) does not keep
    names = " ".join(f"--sample-name '{r['sample']}'" for r in rows)
    task = Task("DEEPMAPPER_INGEST", tmp_path, "sheet")
    out = task.run({"meta": meta, "inputs": dirs, "labels": [], "genesets": []}, meta,
                   given={"sources": sources, "sample_names": names})
    assert names in (task.dir / ".command.sh").read_text()
    data = ad.read_h5ad(out["dataset"][0])
    key = data.uns["deepmapper"]["label_key"]
    assert sorted(data.obs[key].unique()) == sorted(r["label"] for r in rows)
    assert data.n_obs == 129 + 95 + 31 and data.n_vars == 765


GMT = REPO / "tests" / "data" / "pbmc_markers.gmt"


@pytest.fixture(scope="module")
def derived_dag(tmp_path_factory):
    """--cluster and --genesets (issue 7): INGEST builds the dataset as `deepmapper run` does
    (inputs.load: Leiden labels, then AUCell scores of the staged GMT); its dataset then feeds the
    rounds of passes, accumulate, evaluate and the baselines. AUCELL (the de-novo branch's
    inputs.derive) runs on the genes-only dataset and must give the same dataset."""
    import anndata as ad

    work = tmp_path_factory.mktemp("derived")
    # every 5th cell of the test input: 140 cells, unlabelled for this purpose (4 Leiden clusters)
    small = work / "pbmc140.h5ad"
    ad.read_h5ad(TEST_INPUT)[::5].copy().write_h5ad(small)
    # min size 2: the bundled GMT's third set has only two genes in these data. Three features
    # make a 2 x 2 image: the mlp learns the clusters from them within 30 short epochs (both
    # passes pass the gate, so the embedded run below trains no third pass either)
    params = {**TEST_PARAMS, "input": str(small), "label_key": None, "cluster": True, "genesets": str(GMT),
              "geneset_min_size": 2, "passes": 2, "passes_per_task": 2, "threads": 1, "backbone": "mlp",
              "epochs": 30, "min_epochs": 5, "patience": 5, "interactions": False}
    meta = {"id": small.stem, "label_key": None}
    out = {"params": params, "input": small}
    out["ingest"] = Task("DEEPMAPPER_INGEST", work, "1").run(
        {"meta": meta, "inputs": [small], "labels": [], "genesets": GMT}, meta, params=params,
        given={"sources": f"--input 'input01/{small.name}'", "sample_names": ""})
    dataset = out["ingest"]["dataset"][0]
    genes_only = {**params, "genesets": None}
    out["ingest_genes"] = Task("DEEPMAPPER_INGEST", work, "genes").run(
        {"meta": meta, "inputs": [small], "labels": [], "genesets": []}, meta, params=genes_only,
        given={"sources": f"--input 'input01/{small.name}'", "sample_names": ""})
    out["aucell"] = Task("DEEPMAPPER_AUCELL", work, "1").run(
        {"meta": meta, "dataset": out["ingest_genes"]["dataset"][0], "genesets": GMT}, meta, params=params)
    # --interactions false: no DEEPMAPPER_INTERACTIONS, the workflow's [meta, []] reaches the tasks
    out.update(train_rounds(work, meta, dataset, params, interactions=[]))
    gathered = {"meta": meta, "dataset": dataset, "passes": out["passes"]}
    out["baseline"] = Task("DEEPMAPPER_BASELINE", work, "1").run({"meta": meta, "dataset": dataset, "interactions": []},
                                                                 meta, params=params)
    out["accumulate"] = Task("DEEPMAPPER_ACCUMULATE", work, "1").run(
        {**gathered, "baselines": out["baseline"]["baselines"]}, meta, params=params)
    out["evaluate"] = Task("DEEPMAPPER_EVALUATE", work, "1").run(gathered, meta, params=params)
    return out


def test_cluster_labels_and_genesets_in_ingest(derived_dag):
    """INGEST with --cluster: Leiden clusters are the classes (label key 'cluster'); with the GMT the
    features are the AUCell scores; AUCELL on the genes-only dataset gives the same dataset."""
    import numpy as np

    from deepmapper import io

    data = io.read_dataset(derived_dag["ingest"]["dataset"][0])
    genes = io.read_dataset(derived_dag["ingest_genes"]["dataset"][0])
    assert data.uns["deepmapper"]["label_key"] == "cluster" and 2 <= data.obs["cluster"].nunique() <= 10
    assert genes.n_vars == 765 and data.n_obs == genes.n_obs == 140
    assert list(data.obs["cluster"].astype(str)) == list(genes.obs["cluster"].astype(str))
    derived = io.read_dataset(derived_dag["aucell"]["dataset"][0])
    assert list(derived.var_names) == list(data.var_names)
    assert np.array_equal(np.asarray(derived.X), np.asarray(data.X))
    settings = json.loads(data.uns["deepmapper"]["settings"])
    assert settings["cluster"] is True and settings["geneset_min_size"] == 2
    # the same settings; the GMT was staged under another folder by each task
    derived_settings = json.loads(derived.uns["deepmapper"]["settings"])
    assert Path(settings.pop("genesets")).name == Path(derived_settings.pop("genesets")).name == GMT.name
    assert settings == derived_settings


def test_geneset_dataset_feeds_the_later_steps(derived_dag):
    """The gene-set dataset is one `train-pass --dataset` (and accumulate, evaluate, baseline) accept:
    cells x gene sets, the cluster labels and uns['deepmapper'] carried over."""
    import pandas as pd

    from deepmapper import io

    data = io.read_dataset(derived_dag["ingest"]["dataset"][0])
    assert list(data.var_names) == ["B_CELL_MARKERS", "NK_CELL_MARKERS", "TOO_SMALL_AFTER_MATCHING"]
    assert float(data.X.min()) >= 0.0 and float(data.X.max()) <= 1.0  # AUC fractions
    assert [f.name for f in derived_dag["passes"]] == ["pass_000.npz", "pass_001.npz"]
    table = pd.read_csv(derived_dag["accumulate"]["findings"][0], sep="\t")
    assert sorted(table["feature"]) == sorted(data.var_names)
    evaluation = json.loads(derived_dag["evaluate"]["evaluation"][0].read_text())
    assert evaluation["classes"] == sorted(data.obs["cluster"].astype(str).unique())


def test_without_the_screen_no_task_gets_a_table(derived_dag):
    """--interactions false: the empty optional input gives no --interactions-tsv, passes without pairs
    and the baselines without the screen alone."""
    from deepmapper.engine.passfile import read_pass

    assert derived_dag["scripts"] and not any("--interactions-tsv" in s for s in derived_dag["scripts"])
    assert all("--no-interactions" in s for s in derived_dag["scripts"])
    assert all(read_pass(f).pairs.shape == (0, 2) for f in derived_dag["passes"])
    assert {f.name for f in derived_dag["baseline"]["baselines"]} == {"logistic.tsv", "wilcoxon.tsv", "baselines.json"}


def test_derived_dag_equals_embedded_run(derived_dag, tmp_path):
    """`deepmapper run --cluster --genesets` in one process builds the same dataset and the same
    findings (and records the same configuration) as the chained processes."""
    import anndata as ad
    import numpy as np

    p = derived_dag["params"]
    done = subprocess.run(["deepmapper", "run", "--input", str(derived_dag["input"]), "--outdir", str(tmp_path / "run"),
                           "--no-report", "--no-baselines", *run_options(p)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    embedded, chained = ad.read_h5ad(tmp_path / "run" / "dataset.h5ad"), ad.read_h5ad(derived_dag["ingest"]["dataset"][0])
    assert list(embedded.var_names) == list(chained.var_names)
    assert list(embedded.obs["cluster"].astype(str)) == list(chained.obs["cluster"].astype(str))
    assert np.array_equal(np.asarray(embedded.X), np.asarray(chained.X))
    tsv, js, per_class = derived_dag["accumulate"]["findings"]
    assert (tmp_path / "run" / "findings.tsv").read_bytes() == tsv.read_bytes()
    assert (tmp_path / "run" / "findings_per_class.tsv").read_bytes() == per_class.read_bytes()
    recorded = json.loads((tmp_path / "run" / "findings.json").read_text())["config"]
    chained_config = json.loads(js.read_text())["config"]
    # the task saw the GMT staged as genesets/<name>; every other setting is recorded the same
    assert chained_config["input"].pop("genesets") == f"genesets/{GMT.name}"
    assert recorded["input"].pop("genesets") == str(GMT)
    assert chained_config == recorded and recorded["input"]["cluster"] is True


@pytest.fixture(scope="module")
def denovo_dag(tmp_path_factory):
    """subworkflows/local/denovo_assembly on the test_denovo profile's simulated reads."""
    work = tmp_path_factory.mktemp("denovo")
    params = {**PARAMS, **nfcheck.config_params(REPO / "conf" / "test_denovo.config")}
    sheet = Path(params["input"])
    rows = samplesheet_rows(sheet)
    ref_meta = {"id": "reference"}
    reference = Path(params["reference"])
    out = {"index": Task("DENOVO_INDEX", work, "1").run({"meta": ref_meta, "reference": reference}, ref_meta,
                                                          params=params)}
    index = out["index"]["index"][0]
    reads = {r["sample"]: [REPO / "assets" / r["fastq_1"], REPO / "assets" / r["fastq_2"]] for r in rows}
    metas = {r["sample"]: {"id": r["sample"], "label": r["label"], "single_end": False} for r in rows}
    unaligned = []
    for sample, fastqs in reads.items():
        res = Task("DENOVO_ALIGN", work, sample).run(
            {"meta": metas[sample], "reads": fastqs, "meta2": ref_meta, "index": index}, metas[sample], params=params)
        unaligned += res["unaligned"]
    mates = {m: sorted((f for f in unaligned if f.name.endswith(f".unaligned_{m}.fastq.gz")), key=lambda f: f.name)
             for m in (1, 2)}
    pool_meta = {"id": "pooled", "assembler": params["assembler"]}
    out["pool"] = Task("DENOVO_POOL", work, "1").run(
        {"meta": pool_meta, "reads_1": mates[1], "reads_2": mates[2]}, pool_meta, params=params,
        given={"mate_1": " ".join(f"--reads-1 r1/{f.name}" for f in mates[1]),
               "mate_2": " ".join(f"--reads-2 r2/{f.name}" for f in mates[2])})
    pooled = out["pool"]["reads"]
    names = [f.name for f in pooled]
    out["assemble"] = Task("DENOVO_ASSEMBLE", work, "1").run(
        {"meta": pool_meta, "reads": pooled}, pool_meta, params=params, cpus=2,
        given={"names": names, "memory_gb": 4,
               "mate_2": "--reads-2 pooled_2.fastq.gz" if "pooled_2.fastq.gz" in names else "",
               "single": "--single pooled_single.fastq.gz" if "pooled_single.fastq.gz" in names else ""})
    out["tag"] = Task("DENOVO_TAG", work, "1").run(
        {"meta": pool_meta, "assembly": out["assemble"]["assembly"][0], "reference": reference}, pool_meta,
        params=params)
    denovo = out["tag"]["fasta"][0]
    out["hybrid"] = Task("DENOVO_HYBRID", work, "1").run(
        {"meta": ref_meta, "reference": reference, "denovo": denovo}, ref_meta, params=params)
    quants = []
    for sample, fastqs in reads.items():
        res = Task("DENOVO_QUANT", work, sample).run(
            {"meta": metas[sample], "reads": fastqs, "meta2": ref_meta, "index": out["hybrid"]["index"][0]},
            metas[sample], params=params)
        quants += res["quant"]
    run_meta = {"id": sheet.stem}
    out["table"] = Task("DENOVO_TABLE", work, "1").run(
        {"meta": run_meta, "samplesheet": sheet, "quants": sorted(quants, key=lambda f: f.name), "denovo": denovo},
        run_meta, params=params)
    return out


@pytest.mark.tools
def test_denovo_modules_chain(denovo_dag):
    import anndata as ad

    assert denovo_dag["tag"]["fasta"][0].read_text().startswith(">DENOVO_")
    data = ad.read_h5ad(denovo_dag["table"]["dataset"][0])
    assert data.n_obs == 6
    assert any(name.startswith("DENOVO_") for name in data.var_names)
    assert "\tDENOVO_" in "\t" + "\t".join(denovo_dag["table"]["table"][0].read_text().split())


# -- stubs -------------------------------------------------------------------------------------

STUB_META = {"id": "S1", "start": 3, "count": 2, "single_end": False, "assembler": "rnaspades", "label_key": "x"}
STUB_SOURCES = {
    "dataset": "dataset.h5ad", "inputs": ["a.h5ad"], "labels": [], "passes": ["pass_000.npz"],
    "findings": ["findings.tsv"], "baselines": ["logistic.tsv"], "evaluation": "evaluation.json",
    "multiqc_files": ["x_mqc.tsv"], "multiqc_config": "multiqc_config.yml", "reference": "ref.fa",
    "reads": ["S1_1.fastq.gz", "S1_2.fastq.gz"], "index": "index", "reads_1": ["S1.unaligned_1.fastq.gz"],
    "reads_2": ["S1.unaligned_2.fastq.gz"], "assembly": "assembly.fa", "denovo": "denovo.fa",
    "samplesheet": "samplesheet.csv", "quants": ["S1"], "h5ad": "input.h5ad", "genesets": "sets.gmt",
    "verdicts": ["verdicts_0.json"], "interactions": "interactions.tsv",
}
STUB_VALUES = {"round": 2, "per_task": 2}


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_stub_creates_declared_outputs(name, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    sources = {"meta": STUB_META, "meta2": {"id": "ref"}, **STUB_VALUES}
    for key, value in STUB_SOURCES.items():
        names = value if isinstance(value, list) else [value]
        for n in names:
            (src / n).touch()
        sources[key] = [src / n for n in names] if isinstance(value, list) else src / value
    outputs = Task(name, tmp_path, "stub").run(sources, STUB_META, stub=True)
    assert all(files for files in outputs.values())
    if name == "DEEPMAPPER_TRAINPASS":
        assert [f.name for f in outputs["passes"]] == ["pass_003.npz", "pass_004.npz"]
    if name == "DEEPMAPPER_INTERACTIONS":
        # an empty table with the real columns: what the pass tasks and the baselines read
        from deepmapper.engine.interactions import COLUMNS, read_table

        [table] = outputs["interactions"]
        assert tuple(read_table(table).columns) == COLUMNS and len(read_table(table)) == 0
    if name == "DEEPMAPPER_BASELINE":
        # the screen alone only when the screen's table is given (as the real command)
        with_screen = {f.name for f in outputs["baselines"]}
        without = Task(name, tmp_path, "stub_no_screen").run({**sources, "interactions": []}, STUB_META, stub=True)
        assert with_screen - {f.name for f in without["baselines"]} == {"interactions.tsv"}


def test_a_reference_named_like_a_tasks_own_file_is_staged_apart(tmp_path):
    """A user's --reference named assembly.fa or denovo.fa: Nextflow stops a task whose inputs
    collide ("input file name collision"); the de-novo tasks stage the reference in its own folder."""
    src = tmp_path / "src"
    src.mkdir()
    for name, sources in (("DENOVO_TAG", {"assembly": "assembly.fa", "reference": "assembly.fa"}),
                          ("DENOVO_HYBRID", {"reference": "denovo.fa", "denovo": "denovo.fa"}),
                          ("DENOVO_INDEX", {"reference": "denovo.fa"})):
        staged = {"meta": STUB_META}
        for key, file_name in sources.items():
            (src / key).mkdir(exist_ok=True)
            (src / key / file_name).write_text(">x\nACGT\n")
            staged[key] = src / key / file_name
        outputs = Task(name, tmp_path, "collide").run(staged, STUB_META, stub=True)
        assert all(outputs.values()), name


# -- documentation -------------------------------------------------------------------------------

# Intermediates that stay in the work directory (conf/modules.config publishes nothing of them).
NOT_PUBLISHED = {("DENOVO_INDEX", "index"), ("DENOVO_POOL", "reads"), ("DENOVO_ALIGN", "unaligned"),
                 ("DENOVO_HYBRID", "index"), ("DEEPMAPPER_TRAINPASS", "verdicts")}


def test_output_docs_cover_every_published_file():
    doc = (REPO / "docs" / "output.md").read_text()
    checked = 0
    for proc in PROCESSES.values():
        for out in proc.outputs:
            if (proc.name, out.emit) in NOT_PUBLISHED:
                continue
            for pat in out.patterns:
                templated = pat.replace("${meta.id}", "\x00").replace("${round}", "\x00")
                for alt in nfcheck._braces(templated):
                    parts = alt.split("/")
                    # a wildcard leaf is only meaningful with its folder (baselines/*.tsv)
                    tail = "/".join(parts[-2:]) if "*" in parts[-1] and len(parts) > 1 else parts[-1]
                    tail = tail.replace("report/", "")  # published without the task's report/ folder
                    regex = re.escape(tail).replace(r"\*", r"[\w.*<>+-]*")
                    regex = regex.replace(re.escape("\x00"), r"\S+")
                    assert re.search(regex, doc), f"docs/output.md does not mention {alt} ({proc.name}.{out.emit})"
                    checked += 1
    assert checked >= 15
    usage = (REPO / "docs" / "usage.md").read_text()
    for word in ("-resume", "passes_per_task", "slurm", "awsbatch", "-profile test", "DEEPMAPPER_PLAN",
                 "DEEPMAPPER_AUCELL", "DEEPMAPPER_INGEST", "deepmapper plan"):
        assert word in usage
    for name in ("modality", "cluster", "cluster_resolution", "genesets", "geneset_min_size"):
        assert f"`--{name}`" in usage, f"docs/usage.md documents --{name}"


def test_developer_cli_contract_names_real_options():
    """docs/developers.md's CLI contract: every option a row names is in that command's --help."""
    rows = [line for line in (REPO / "docs" / "developers.md").read_text().splitlines()
            if line.startswith("| `deepmapper ")]
    assert len(rows) >= 10
    checked = 0
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        command = tuple(re.match(r"`([^`]+)`", cells[0]).group(1).split())
        helptext = help_text(command)
        for opt in re.findall(r"`(--[a-z][a-z0-9-]*)", cells[1]):
            if opt.endswith("-"):  # a family (--interaction-*)
                assert re.search(rf"(?<![\w-]){opt}", helptext), f"{' '.join(command)} has no {opt}*"
            else:
                assert re.search(rf"(?<![\w-]){opt}(?![\w-])", helptext), f"{' '.join(command)} has no {opt}"
            checked += 1
    assert checked >= 40


# -- containers ----------------------------------------------------------------------------------

DOCKERFILES = [REPO / "containers" / "Dockerfile", REPO / "containers" / "Dockerfile.cuda"]
IMAGE_ENV = {"Dockerfile": "containers/environment.yml", "Dockerfile.cuda": "containers/environment.cuda.yml"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=rel)
def test_dockerfile_passes_hadolint(dockerfile):
    done = subprocess.run(["hadolint", str(dockerfile)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    text = dockerfile.read_text()
    # the same pins as the conda environments: the generated environment file, with its
    # deepmapper==<version> line pointed at this checkout (the release's code at its tag)
    env = IMAGE_ENV[dockerfile.name]
    assert f"COPY {env} /tmp/environment.yml" in text and "--file /tmp/environment.yml" in text
    assert "s#^\\( *- \\)deepmapper==.*#\\1/opt/deepmapper#" in text
    assert "pip install" not in text  # nothing installed beside the environment file's pins
    # writable by any task user: root (as biocontainers; docker maps -u, singularity runs as the
    # caller, podman/k8s/AWS Batch need to write the mounted work dir) and a HOME any uid can write
    assert re.search(r"(?m)^# hadolint ignore=DL3002\nUSER 0$", text)
    assert re.search(r"(?m)^\s*HOME=/tmp \\$", text)
    assert 'ARG VERSION=dev' in text and '"${VERSION}' in text  # the tag's version, passed by build.sh


def test_hadolint_rejects_a_sloppy_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:latest\nRUN apt-get update && apt-get install -y hisat2\nRUN pip install torch\n")
    done = subprocess.run(["hadolint", str(bad)], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "DL3007" in done.stdout  # :latest
    root = tmp_path / "Root"
    root.write_text("FROM mambaorg/micromamba:2.0.5-debian12-slim\nUSER 0\n")
    done = subprocess.run(["hadolint", str(root)], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "DL3002" in done.stdout  # root needs the reasoned ignore above


def test_dockerignore_keeps_runs_out_of_the_build_context():
    """The build context is the repository root: work/ and results/ of earlier runs (GBs) stay out,
    and what the Dockerfiles COPY stays in."""
    import fnmatch

    rules = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]

    def ignored(path: str) -> bool:  # Docker's rule: the last matching pattern wins
        verdict = False
        for rule in rules:
            negate = rule.startswith("!")
            pattern = rule.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
                verdict = not negate
        return verdict

    for path in ("work/ab/cdef/.command.sh", "results/findings.tsv", ".nextflow/history", "assets/test/pbmc68k_reduced.h5ad",
                 "tests/data/pbmc_markers.gmt", ".git/HEAD"):
        assert ignored(path), path
    copied = set()
    for dockerfile in DOCKERFILES:
        for line in dockerfile.read_text().splitlines():
            if line.startswith("COPY "):
                copied |= set(line.split()[1:-1])
    for path in copied:
        assert not ignored(path) and (REPO / path).exists(), path
    assert not ignored("src/deepmapper/__init__.py")


def test_build_script_builds_the_tags_the_modules_use(tmp_path):
    """containers/build.sh: valid bash; with a stand-in engine it builds the CPU and CUDA images
    under exactly the names the modules and the gpu profile pull (registry + name), from the
    repository root with the release version, and checks each one runs; --registry repoints both."""
    script = REPO / "containers" / "build.sh"
    assert os.access(script, os.X_OK)
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    module_tag = next(iter({m for p in PROCESSES.values() for m in re.findall(r"container\s+'([^']+)'", p.directives)}))
    for registry in (None, "123456789012.dkr.ecr.eu-west-1.amazonaws.com"):
        fake = tmp_path / "fake-docker"
        log = tmp_path / f"calls-{registry}.txt"
        fake.write_text(f"#!/usr/bin/env bash\necho \"$PWD $*\" >> {log}\n")
        fake.chmod(0o755)
        extra = ["--registry", registry] if registry else []
        done = subprocess.run(["bash", str(script), "--all", "--engine", str(fake), *extra], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        calls = log.read_text().splitlines()
        builds = [c for c in calls if " build " in c]
        assert [c.split()[0] for c in builds] == [str(REPO)] * 2
        tags = [c.split(" -t ")[1].split()[0] for c in builds]
        host = registry or PARAMS["container_registry"]
        assert tags == [f"{host}/{module_tag}", f"{host}/{module_tag}-cuda"]
        assert all(f"--build-arg VERSION={nfgen.version()}" in c for c in builds)
        assert "-f containers/Dockerfile " in builds[0] and "-f containers/Dockerfile.cuda " in builds[1]
        assert sum(" run --rm " in c and "deepmapper --version" in c for c in calls) == 2
    # --sif: the name Nextflow looks for in NXF_SINGULARITY_CACHEDIR (SingularityCache.simpleName)
    text = script.read_text()
    assert "tr '/:' '--'" in text and ".img" in text and "containers/deepmapper.def" in text
    definition = (REPO / "containers" / "deepmapper.def").read_text()
    assert "containers/{{ ENV_FILE }} /tmp/environment.yml" in definition
    assert f"ghcr.io-deepmapper-nf-deepmapper-{nfgen.version()}.img" in (REPO / "docs" / "usage.md").read_text()


def test_every_image_name_follows_the_registry_setting():
    """The modules and the gpu profile name their images without a registry, and nextflow.config sets
    every engine's registry to params.container_registry (Nextflow prefixes it: ContainerHandler), so
    one setting repoints the CPU and the CUDA image alike; nothing else names a registry."""
    version = nfgen.version()
    containers = {m for p in PROCESSES.values() for m in re.findall(r"container\s+'([^']+)'", p.directives)}
    assert containers == {f"deepmapper-nf/deepmapper:{version}"}
    assert re.findall(r"container\s*=\s*'([^']+)'", NEXTFLOW_CONFIG.read_text()) == [f"deepmapper-nf/deepmapper:{version}-cuda"]
    text = NEXTFLOW_CONFIG.read_text()
    top = text[:text.index("\nprofiles {")]
    for engine in ("docker", "podman", "singularity", "apptainer"):
        assert re.search(rf"(?m)^{engine}\.registry\s*=\s*params\.container_registry$", top), engine
    assert PARAMS["container_registry"] == "ghcr.io"
    assert "ghcr.io/" not in text.replace("'ghcr.io'", "")


# -- versions and environments -------------------------------------------------------------------

ENV_FILES = sorted([*REPO.glob("modules/local/**/environment.yml"), *REPO.glob("containers/environment*.yml")])
VERSIONS = json.loads((REPO / "tests" / "data" / "environment_versions.json").read_text())
ENV_SCHEMA = json.loads((REPO / "tests" / "data" / "nf-core" / "environment-schema.json").read_text())
META_SCHEMA = json.loads((REPO / "tests" / "data" / "nf-core" / "meta-schema.json").read_text())


@pytest.mark.parametrize("path", ENV_FILES, ids=rel)
def test_environment_files_pin_packages_that_exist(path):
    """Valid against nf-core's environment-schema.json (every dependency pinned with = or ==, no name);
    every conda package at a version an nf-core module pins for it, every PyPI pin a release pip
    lists (both recorded in tests/data/environment_versions.json); deepmapper at this release."""
    import jsonschema
    import yaml

    env = yaml.safe_load(path.read_text())
    jsonschema.Draft202012Validator(ENV_SCHEMA).validate(env)
    assert env["channels"] == ["conda-forge", "bioconda"]
    pip = []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip += dep["pip"]
            continue
        channel, pin = dep.split("::")
        name, version = pin.split("=")[:2]
        known = (VERSIONS["bioconda"]["tools"][name]["versions_in_history"] if channel == "bioconda"
                 else VERSIONS["conda-forge"]["packages"][name])
        assert version in known, dep
    assert pip[0] == f"deepmapper=={nfgen.version()}"
    for spec in pip[1:]:
        name, pinned = spec.split("==")
        assert pinned in VERSIONS["pypi"]["packages"][name], spec
    names = [d.split("::")[-1].split("=")[0] for d in env["dependencies"] if isinstance(d, str)]
    assert {"python", "procps-ng", "pytorch", "multiqc"} <= set(names)
    # with --sample_key the accumulate and baseline tasks fit PyDESeq2 (the `samples` extra);
    # without it they would fall back to Welch's test and skip baselines/pseudobulk.tsv
    assert any(spec.startswith("pydeseq2==") for spec in pip), path
    pytorch = next(d for d in env["dependencies"] if isinstance(d, str) and "::pytorch=" in d)
    assert pytorch.endswith("=cuda*") == (path.name == "environment.cuda.yml")  # else the solver picks


def test_environment_files_are_rejected_when_unpinned(tmp_path):
    """The vendored schema bites: the former git+ line and an unpinned package both fail it."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(ENV_SCHEMA)
    good = {"channels": ["conda-forge"], "dependencies": ["conda-forge::python=3.11.11", {"pip": ["deepmapper==1.0.0"]}]}
    validator.validate(good)
    for bad in ({**good, "dependencies": ["conda-forge::python"]},
                {**good, "dependencies": [{"pip": ["deepmapper[timm] @ git+https://github.com/x/y.git@0.1.0"]}]},
                {**good, "name": "base"}):
        with pytest.raises(jsonschema.ValidationError):
            validator.validate(bad)


def test_a_run_creates_one_conda_environment_per_group():
    """Nextflow names a conda environment by a hash of its file's text (CondaCache.condaPrefixPath, see
    tests/data/nextflow_facts.json), so the count of environments a run creates is the count of distinct
    texts among the files its processes name: 1 on the default path (2 with -profile gpu: the CUDA
    one), 1 more with --denovo."""
    texts = {name: (proc.path.parent / "environment.yml").read_text() for name, proc in PROCESSES.items()}
    denovo = {n for n in PROCESSES if n.startswith("DENOVO_")}
    assert len({texts[n] for n in set(PROCESSES) - denovo}) == 1
    assert len({texts[n] for n in denovo}) == 1
    cuda = (REPO / "containers" / "environment.cuda.yml").read_text()
    assert len({*(texts[n] for n in set(PROCESSES) - denovo), cuda}) == 2
    # the images install the same text as the environments
    assert (REPO / "containers" / "environment.yml").read_text() == texts["DENOVO_ALIGN"]
    for name, proc in PROCESSES.items():
        assert re.search(r'(?m)^\s*conda\s+"\$\{moduleDir\}/environment\.yml"', proc.directives), name


def test_the_version_lives_in_pyproject_and_everything_follows_it():
    """One place (pyproject.toml); the package, the CLI, the manifest, every image tag, every
    environment pin, the CHANGELOG's newest release heading and the docs' install lines follow it."""
    import deepmapper

    version = nfgen.version()
    assert re.fullmatch(r"\d+\.\d+\.\d+", version) and version != "0.1.0"  # the code is not 0.1.0's
    assert deepmapper.__version__ == version
    done = subprocess.run(["deepmapper", "--version"], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip().endswith(f"version {version}")
    manifest = nfcheck.block_body(NEXTFLOW_CONFIG.read_text(), "manifest")
    assert re.search(rf"(?m)^\s*version\s*=\s*'{re.escape(version)}'$", manifest)
    for path in ENV_FILES:
        assert f"- deepmapper=={version}\n" in path.read_text(), rel(path)
    changelog = (REPO / "CHANGELOG.md").read_text()
    releases = re.findall(r"(?m)^## \[?v?(\d+\.\d+\.\d+)\]?", changelog)
    assert releases[0] == version, f"CHANGELOG's newest release heading is {releases[0]}"
    # every place the docs name a release of this package
    found = 0
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = doc.read_text()
        for pattern in (r"(?<![\w-])deepmapper==(\d+\.\d+\.\d+)", r"deepmapper-nf/deepmapper:(\d+\.\d+\.\d+)",
                        r"deepmapper-nf-deepmapper-(\d+\.\d+\.\d+)", r"-r v?(\d+\.\d+\.\d+)", r"git tag v(\d+\.\d+\.\d+)"):
            for m in re.finditer(pattern, text):
                assert m.group(1) == version, f"{rel(doc)} names {m.group(0)}"
                found += 1
    assert found >= 5


def test_a_version_bump_without_regenerating_is_caught(tmp_path):
    """Bumping pyproject.toml alone leaves every module's image tag, the manifest and the env pins stale:
    the generator's --check names them."""
    root = tmp_path / "copy"
    nfcheck.copy_tree(root)
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    for rel_path in ("pyproject.toml", "nextflow_schema.json", "docs/usage.md", "containers/environment.yml",
                     "containers/environment.cuda.yml"):
        (root / rel_path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel_path, root / rel_path)
    pyproject = root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace(f'version = "{nfgen.version()}"', 'version = "9.9.9"'))
    done = subprocess.run(["python", "-m", "deepmapper._dev.nfgen", "--root", str(root), "--check"], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(root / "src")})
    stale = {Path(line.split()[1]).relative_to(root).as_posix() for line in done.stderr.splitlines()}
    assert done.returncode == 1
    assert {"nextflow.config", "modules/local/deepmapper/trainpass/main.nf", "containers/environment.yml",
            "modules/local/multiqc/environment.yml"} <= stale


def test_nextflow_and_nf_schema_versions_agree():
    """The manifest's minimum Nextflow is at least what the nf-schema release it loads declares
    (build.gradle nextflowVersion, recorded with its source in tests/data/nextflow_facts.json), and
    README and docs/usage.md state the same minimum with the reason."""
    plugin = re.search(r"id 'nf-schema@(\d+\.\d+\.\d+)'", NEXTFLOW_CONFIG.read_text()).group(1)
    needs = FACTS["nf_schema"]["nextflowVersion"][plugin]
    manifest = nfcheck.block_body(NEXTFLOW_CONFIG.read_text(), "manifest")
    minimum = re.search(r"nextflowVersion\s*=\s*'!>=(\d+\.\d+\.\d+)'", manifest).group(1)

    def key(v):
        return tuple(int(x) for x in v.split("."))

    assert key(minimum) >= key(needs), f"nf-schema {plugin} needs Nextflow {needs}; the manifest allows {minimum}"
    for doc in (REPO / "README.md", REPO / "docs" / "usage.md"):
        text = doc.read_text()
        assert f"Nextflow {minimum} or newer" in text and f"nf-schema {plugin}" in text, rel(doc)
        # no other minimum stated anywhere
        assert set(re.findall(r"Nextflow (\d+\.\d+\.\d+) or newer", text)) == {minimum}, rel(doc)


def test_deepmapper_installs_from_the_repository(tmp_path):
    """pip builds this checkout as the package the environments pin: its name and version."""
    done = subprocess.run(["pip", "install", "--dry-run", "--no-deps", "--no-build-isolation", "--no-index",
                           "--report", str(tmp_path / "report.json"), "--quiet", f"deepmapper[timm] @ file://{REPO}"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-1500:]
    report = json.loads((tmp_path / "report.json").read_text())
    [item] = report["install"]
    assert item["metadata"]["name"] == "deepmapper" and item["metadata"]["version"] == nfgen.version()
    assert item["requested_extras"] == ["timm"]


def test_versions_record_names_what_was_compared():
    assert VERSIONS["bioconda"]["compared_with"].startswith("nf-core/modules ")
    for tool in ("hisat2", "salmon", "spades", "trinity", "samtools", "multiqc"):
        entry = VERSIONS["bioconda"]["tools"][tool]
        assert entry["files"] and entry["current"] and set(entry["current"]) <= set(entry["versions_in_history"])
    assert "pip index versions" in VERSIONS["pypi"]["compared_with"]
    assert "pytorch" in VERSIONS["conda-forge"]["packages"] and "fungtion" in VERSIONS["conda-forge"]["pytorch_source"]


# -- nf-core module metadata -------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_meta_yml_is_valid_against_nf_cores_schema(name):
    """meta.yml validates against nf-core/modules' meta-schema.json (vendored), and its outputs list
    each declaration's elements in order (the channel: [meta, file], [process, tool, eval])."""
    import jsonschema
    import yaml

    proc = PROCESSES[name]
    meta = yaml.safe_load((proc.path.parent / "meta.yml").read_text())
    jsonschema.Draft202012Validator(META_SCHEMA).validate(meta)
    for out in proc.outputs:
        [elements] = meta["output"][out.emit]
        assert [next(iter(e)) for e in elements] == [arg for _, arg in nfcheck.output_elements(out.decl)], out.emit
        kinds = [e[next(iter(e))]["type"] for e in elements]
        assert [k == "eval" for k in kinds] == [kind == "eval" for kind, _ in nfcheck.output_elements(out.decl)]
    topic = [o for o in proc.outputs if o.topic == "versions"]
    assert len(meta.get("topics", {}).get("versions", [])) == len(topic)


def test_meta_schema_rejects_the_old_output_form():
    import jsonschema

    old = {"name": "x", "description": "d", "keywords": ["a", "b", "c"], "authors": ["@a"], "tools": [{"t": {"description": "d"}}],
           "output": {"findings": [{"description": "findings.tsv"}]}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(META_SCHEMA).validate(old)


# -- defects a real run would hit (issue 18) ---------------------------------------------------------

LAPTOP = {"cpus": 4, "memory_gb": 8}


def resource_limits(text: str) -> dict:
    code = nfcheck.mask(text, keep_comment_marks=True)  # not the override shown in a comment
    m = re.search(r"resourceLimits\s*=\s*\[\s*cpus\s*:\s*(\d+),\s*memory\s*:\s*(\d+)\.GB,\s*time\s*:\s*(\d+)\.h\s*\]", code)
    assert m, "process.resourceLimits = [cpus: N, memory: N.GB, time: N.h]"
    return {"cpus": int(m.group(1)), "memory_gb": int(m.group(2)), "hours": int(m.group(3))}


def test_default_resource_limits_fit_a_laptop():
    """Without a test profile the labels ask up to 12 CPUs / 72 GB (process_high), which the local
    executor refuses on a laptop; nextflow.config caps every request at a laptop's share by default
    (Nextflow lowers a request to resourceLimits), and docs/usage.md shows the override."""
    text = NEXTFLOW_CONFIG.read_text()
    top = text[:text.index("\nprofiles {")]
    limits = resource_limits(top)
    assert limits["cpus"] <= LAPTOP["cpus"] and limits["memory_gb"] <= LAPTOP["memory_gb"]
    base = (REPO / "conf" / "base.config").read_text()
    asks = [int(m) for m in re.findall(r"memory\s*=\s*\{\s*(\d+)\.GB", base)]
    assert max(asks) > limits["memory_gb"]  # the cap is what makes the defaults run
    for profile in TEST_PROFILES.values():
        test_limits = resource_limits((REPO / "conf" / profile).read_text())
        assert test_limits["cpus"] <= limits["cpus"] and test_limits["memory_gb"] <= limits["memory_gb"]
    usage = (REPO / "docs" / "usage.md").read_text()
    assert "process.resourceLimits = [cpus: 64, memory: 512.GB, time: 72.h]" in usage


def test_stub_walks_the_whole_dag(tmp_path):
    """`-stub -profile test`: the PLAN stub plans the configured passes (round 1, in tasks of
    passes_per_task; none later), so the TRAINPASS stubs produce every pass file and ACCUMULATE,
    EVALUATE, BASELINE and REPORT run on them (on today's main the stub planned [] and nothing trained)."""
    p = TEST_PARAMS
    meta = {"id": "stub"}
    src = tmp_path / "src"
    src.mkdir()
    dataset = src / "dataset.h5ad"
    dataset.touch()
    screen = Task("DEEPMAPPER_INTERACTIONS", tmp_path, "stub").run({"meta": meta, "dataset": dataset}, meta, stub=True)
    verdicts, passes, planned = [], [], []
    for round_number in (1, 2, 3):
        plan = Task("DEEPMAPPER_PLAN", tmp_path, f"stub{round_number}").run(
            {"meta": meta, "verdicts": list(verdicts), "round": round_number, "per_task": p["passes_per_task"]},
            meta, stub=True)
        tasks = json.loads(plan["plan"][0].read_text())["tasks"]
        planned.append(tasks)
        for task in tasks:
            chunk = {**meta, **task}
            out = Task("DEEPMAPPER_TRAINPASS", tmp_path, f"stub{round_number}_{task['start']}").run(
                {"meta": chunk, "dataset": dataset, "interactions": screen["interactions"][0]}, chunk, stub=True)
            passes += out["passes"]
            verdicts += out["verdicts"]
    assert [f.name for f in passes] == [f"pass_{i:03d}.npz" for i in range(p["passes"])]
    assert len(planned[0]) == -(-p["passes"] // p["passes_per_task"]) and planned[1:] == [[], []]
    gathered = {"meta": meta, "dataset": dataset, "passes": passes}
    base = Task("DEEPMAPPER_BASELINE", tmp_path, "stub").run(
        {"meta": meta, "dataset": dataset, "interactions": screen["interactions"][0]}, meta, stub=True)
    acc = Task("DEEPMAPPER_ACCUMULATE", tmp_path, "stub").run({**gathered, "baselines": base["baselines"]}, meta,
                                                              stub=True)
    ev = Task("DEEPMAPPER_EVALUATE", tmp_path, "stub").run(gathered, meta, stub=True)
    report = Task("DEEPMAPPER_REPORT", tmp_path, "stub").run(
        {"meta": meta, "dataset": dataset, "passes": passes, "findings": [*acc["findings"], *acc["pairs"]],
         "baselines": base["baselines"], "evaluation": ev["evaluation"][0]}, meta, stub=True)
    assert report["html"] and report["mqc"]


def test_output_declarations_hold_no_expression_on_meta():
    """Under the legacy parser an output's arguments are evaluated when the process is defined, before
    meta exists: an expression such as `meta.x == 'y' ? ... : ...` fails there. A GString
    ("${meta.id}") is resolved per task. So every eval(...) takes one literal command, and no
    output argument holds a bare expression on meta."""
    checked = 0
    for proc in PROCESSES.values():
        for out in proc.outputs:
            masked = nfcheck.mask(out.decl)
            for m in re.finditer(r"eval\(", masked):
                literal = out.decl[m.end():nfcheck.match_close(masked, m.end() - 1)].strip()
                assert literal[0] in "'\"", f"{proc.name}: eval({literal[:40]}...) is not one literal"
                assert literal[0] == literal[-1] and literal.count(literal[0]) >= 2, literal
                if literal[0] == '"':
                    assert "meta." not in literal, f"{proc.name}: eval reads meta"
                checked += 1
    assert checked >= 20
    # the assembler's version: one command that reads which assembler ran (the task writes it)
    assemble = PROCESSES["DENOVO_ASSEMBLE"]
    assert "echo '${meta.assembler}' > assembler.txt" in assemble.script.body
    assert "echo '${meta.assembler}' > assembler.txt" in assemble.stub.body


@pytest.mark.parametrize("assembler", ["rnaspades", "trinity"])
def test_assembler_version_command_reads_the_assembler_that_ran(assembler, tmp_path):
    [cmd] = [c for o in PROCESSES["DENOVO_ASSEMBLE"].outputs if o.emit == "versions_assembler" for c in o.evals]
    tool = {"rnaspades": "rnaspades.py", "trinity": "Trinity"}[assembler]
    bindir = tmp_path / "bin"
    bindir.mkdir()
    # stand-ins printing each tool's real version banner (spades 4.1.0, Trinity 2.15.2)
    (bindir / "rnaspades.py").write_text("#!/bin/sh\necho 'SPAdes genome assembler v4.1.0 [rnaSPAdes mode]'\n")
    (bindir / "Trinity").write_text("#!/bin/sh\necho 'Trinity version: Trinity-v2.15.2'\n")
    for f in bindir.iterdir():
        f.chmod(0o755)
    (tmp_path / "assembler.txt").write_text(assembler + "\n")
    done = subprocess.run(["bash", "-c", nfcheck.render(cmd, {})], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}, timeout=60)
    assert done.stdout.strip() == {"rnaspades": "4.1.0", "trinity": "2.15.2"}[assembler], (tool, done.stdout, done.stderr)


def test_collections_a_task_reads_are_sorted():
    """-resume reuses a task only when its inputs hash the same: every collect() whose list a process
    stages is sorted (collect(sort: ...), or .sort after it), so PLAN and MultiQC do not re-run
    because upstream tasks finished in another order."""
    checked = 0
    for path in [REPO / "workflows" / "deepmapper.nf", *sorted(REPO.glob("subworkflows/local/*/main.nf"))]:
        text = nfcheck.mask(path.read_text(), keep_comment_marks=True)
        for m in re.finditer(r"\.collect\(", text):
            statement = text[m.start():m.start() + 400]
            sorted_here = statement.startswith(".collect(sort:")
            # or the gathered list is sorted before it is used: `.sort {` in the same statement
            later = re.search(r"\.sort\s*\{\s*a,\s*b\s*->\s*byName", statement)
            assert sorted_here or later, f"{rel(path)}: {statement[:80]!r} is not sorted"
            checked += 1
    assert checked >= 5
    workflow = (REPO / "workflows" / "deepmapper.nf").read_text()
    assert ".collect(sort: { a, b -> byName(a, b) })\n            .map { files -> [run_meta, files] }" in workflow


def test_csv_with_labels_is_one_matrix():
    """A CSV given with --labels carries its labels in another file: it is one matrix (as
    `deepmapper run --input m.csv --labels l.csv` reads it), not a samplesheet."""
    utils = UTILS.read_text()
    body = nfcheck.block_body(utils, "def isSamplesheet(input, label_key, labels, denovo)")
    assert "endsWith('.csv') && !label_key && !labels" in body
    workflow = (REPO / "workflows" / "deepmapper.nf").read_text()
    assert "isSamplesheet(params.input, params.label_key, params.labels, denovo)" in workflow
    assert "!params.label_key && !cluster && !params.labels" in workflow


def test_samplesheet_paths_resolve_as_the_python_side_does():
    """The pipeline resolves a relative samplesheet path as deepmapper.io.resolve_listed_path does:
    launch directory first, then the sheet's folder; and checks existence itself (the schema no
    longer makes nf-schema resolve against the launch directory alone)."""
    from deepmapper.io import resolve_listed_path as _resolve

    schema = json.loads((REPO / "assets" / "schema_input.json").read_text())
    for key in ("path", "fastq_1", "fastq_2"):
        spec = schema["items"]["properties"][key]
        assert "format" not in spec and "exists" not in spec and "samplesheet's folder" in spec["description"]
    body = nfcheck.block_body(UTILS.read_text(), "def resolveSamplesheetPath(value, sheet, column, sample)")
    assert body.index("given.exists()") < body.index("file(sheet).parent.resolve(text)")
    assert "error(" in body
    sheet = REPO / "assets" / "samplesheet_test_populations.csv"
    row = samplesheet_rows(sheet)[0]
    assert _resolve(row["path"], sheet.parent) == sheet.parent / row["path"]


# -- the release ---------------------------------------------------------------------------------------

RELEASE = REPO / ".github" / "workflows" / "release.yml"


def test_release_workflow_passes_actionlint():
    done = subprocess.run(["actionlint", "-no-color", str(RELEASE)], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr


def test_actionlint_rejects_a_broken_workflow(tmp_path):
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ github.nope }}\n")
    done = subprocess.run(["actionlint", "-no-color", str(bad)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode != 0 and "nope" in done.stdout


def test_release_is_one_tag():
    """A tag v<version> (and nothing else) builds the sdist and wheel from it, checks them, publishes
    them to PyPI by trusted publishing (OIDC: no token), and builds and pushes the CPU and CUDA images
    under that version; the tag must equal pyproject.toml's version."""
    import yaml

    wf = yaml.safe_load(RELEASE.read_text())
    on = wf[True] if True in wf else wf["on"]  # PyYAML reads the key `on` as True
    assert list(on) == ["push"] and list(on["push"]) == ["tags"] and on["push"]["tags"] == ["v*.*.*"]
    jobs = wf["jobs"]
    text = RELEASE.read_text()
    assert "python -m build" in text and "twine check" in text
    assert 'test "${GITHUB_REF_NAME#v}" = "$(python -c' in text  # the tag is pyproject's version
    publish = jobs["pypi"]
    assert publish["permissions"] == {"id-token": "write"} and publish["environment"]["name"] == "pypi"
    assert any(step.get("uses", "").startswith("pypa/gh-action-pypi-publish@") for step in publish["steps"])
    images = jobs["images"]
    assert images["permissions"]["packages"] == "write"
    assert "containers/build.sh --all --push --registry ghcr.io" in text
    assert all(job.get("needs") or name == "dist" for name, job in jobs.items())


def test_release_rehearsal_is_wired_into_ci():
    script = REPO / "scripts" / "release_rehearsal.sh"
    assert os.access(script, os.X_OK)
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    assert "--no-index" in text and "--find-links" in text and "twine check" in text
    assert "DEEPMAPPER_INSTALLED_ONLY" in text
    assert "release_rehearsal.sh" in (REPO / ".ci" / "run").read_text()


def test_routes_table_covers_every_route():
    """docs/usage.md's table: every software and executor route, what the user types, what is checked
    here and how, and what needs a publication first; routes that need an engine, a registry or a GPU
    say so instead of claiming a check."""
    usage = (REPO / "docs" / "usage.md").read_text()
    table = usage[usage.index("| route | what you type |"):].split("\n\n")[0]
    rows = table.splitlines()[2:]
    routes = {row.split("|")[1].strip().strip("`") for row in rows}
    assert {"docker", "singularity", "apptainer", "podman", "conda", "mamba", "wave", "local", "slurm + gpu",
            "awsbatch", "kubernetes"} <= routes
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == 4 and all(cells), row
        assert "not checked here" in cells[2] or "tests/" in cells[2], row


def test_the_screen_gets_only_the_settings_it_reads():
    """interaction_max_pairs chooses how many screened pairs are placed (select_pairs / placed_pairs, in
    the pass tasks and the baselines); the screen computes the same table whatever it is. Declared for
    the screen, a new value re-ran the permutation screen on -resume. interaction_q stays declared for
    the screen: with a sample key the screen reports no pair when whole-sample relabellings cannot reach
    q (sample_calibration), so its table depends on q."""
    import inspect

    from deepmapper.engine import interactions

    screen = params_in("DEEPMAPPER_INTERACTIONS")
    assert "interaction_max_pairs" not in screen and "interaction_max_pairs" in params_in("DEEPMAPPER_TRAINPASS")
    assert {"interaction_q"} <= screen & params_in("DEEPMAPPER_TRAINPASS") & params_in("DEEPMAPPER_BASELINE")
    code = inspect.getsource(interactions.screen) + inspect.getsource(interactions.screen_prepared)
    assert "max_pairs" not in code and "sample_calibration(" in code and "q_threshold" in code
