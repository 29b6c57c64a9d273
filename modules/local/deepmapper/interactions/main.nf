// The pair screen: gene pairs whose within-class correlation differs between classes,
// on the run's non-held-out cells, calibrated by permuting the labels. Run once: its
// table is published and goes to every DEEPMAPPER_TRAINPASS task (--interactions-tsv:
// the pairs placed side by side), to DEEPMAPPER_BASELINE (the screen alone) and to the report.
// It computes on --device as training does, so under -profile gpu it gets the GPU too (with
// --device cuda and no GPU it would stop the run).
process DEEPMAPPER_INTERACTIONS {
    tag "${meta.id}"
    label 'process_medium'
    label 'process_gpu'
    conda "${moduleDir}/environment.yml"
    container 'deepmapper-nf/deepmapper:0.2.0'

    input:
    tuple val(meta), path(dataset)

    output:
    tuple val(meta), path('interactions.tsv'), emit: interactions
    tuple val("${task.process}"), val('deepmapper'), eval("deepmapper --version | sed 's/.*version //'"), emit: versions_deepmapper, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    """
    deepmapper interactions \\
        --dataset ${dataset} \\
        --outdir . \\
        ${args}
    """

    stub:
    """
    printf 'feature_a\\tfeature_b\\tclass\\tscore\\tscaled_score\\tp_value\\tp_fwer\\tq_value\\tcorr_in_class\\tcorr_rest\\tn_class\\tn_rest\\n' > interactions.tsv
    """
}
