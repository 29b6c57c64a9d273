// Plan one round of passes: which passes, in which tasks. The rule is Python's
// (deepmapper.planning.next_round, also used by `deepmapper run`); the workflow maps over
// the plan's `tasks`. Round 1 needs no verdicts; later rounds get every earlier one's.
process DEEPMAPPER_PLAN {
    tag "${meta.id}"
    label 'process_single'
    conda "${moduleDir}/environment.yml"
    container 'deepmapper-nf/deepmapper:0.2.0'

    input:
    tuple val(meta), path(verdicts, stageAs: 'verdicts/*'), val(round), val(per_task)

    output:
    tuple val(meta), path("plan_round${round}.json"), emit: plan
    tuple val("${task.process}"), val('deepmapper'), eval("deepmapper --version | sed 's/.*version //'"), emit: versions_deepmapper, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    """
    deepmapper plan \\
        --round ${round} \\
        --verdicts-dir verdicts \\
        --passes-per-task ${per_task} \\
        --out plan_round${round}.json \\
        ${args}
    """

    stub:
    """
    echo '{"format": "deepmapper-plan", "version": 1, "round": ${round}, "tasks": [], "warnings": []}' > plan_round${round}.json
    """
}
