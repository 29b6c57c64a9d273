// Arrangement-ensembled predictions on the held-out cells: accuracy, confusion
// matrix, per-class precision/recall/F1.
process DEEPMAPPER_EVALUATE {
    tag "${meta.id}"
    label 'process_single'
    conda "${moduleDir}/environment.yml"
    container 'deepmapper-nf/deepmapper:0.2.0'

    input:
    tuple val(meta), path(dataset), path(passes, stageAs: 'passes/*')

    output:
    tuple val(meta), path('evaluation.json'), emit: evaluation
    tuple val("${task.process}"), val('deepmapper'), eval("deepmapper --version | sed 's/.*version //'"), emit: versions_deepmapper, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    """
    deepmapper evaluate \\
        --dataset ${dataset} \\
        --passes-dir passes \\
        --out evaluation.json \\
        ${args}
    """

    stub:
    """
    touch evaluation.json
    """
}
