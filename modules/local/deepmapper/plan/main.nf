// Plan one round of passes: which passes, in which tasks. The rule is Python's
// (deepmapper.engine.planning.next_round, also used by `deepmapper run`); the workflow maps over
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
    // -stub walks the whole DAG: round 1 plans the configured passes (--passes of ext.args, the
    // option the real command reads) in tasks of per_task, as if every pass were accepted; the
    // later rounds plan none
    def args = task.ext.args ?: ''
    """
    passes=\$(echo "${args}" | sed -n 's/.*--passes \\([0-9][0-9]*\\).*/\\1/p')
    if [ "${round}" != 1 ]; then passes=0; fi
    tasks=''
    start=0
    while [ "\$start" -lt "\${passes:-0}" ]; do
        count=\$(( passes - start < ${per_task} ? passes - start : ${per_task} ))
        tasks="\${tasks:+\$tasks, }\$(printf '{"start": %d, "count": %d}' "\$start" "\$count")"
        start=\$(( start + ${per_task} ))
    done
    printf '{"format": "deepmapper-plan", "version": 1, "round": %d, "tasks": [%s], "warnings": []}\\n' ${round} "\$tasks" > plan_round${round}.json
    """
}
