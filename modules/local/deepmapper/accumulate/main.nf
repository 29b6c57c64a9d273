// Gather: every pass file of the run -> the feature ranking with stability statistics.
process DEEPMAPPER_ACCUMULATE {
    tag "${meta.id}"
    label 'process_single'
    conda "${moduleDir}/environment.yml"
    container 'deepmapper-nf/deepmapper:0.2.0'

    input:
    // baselines: DEEPMAPPER_BASELINE's files ([] with --skip_baselines), for the trust verdict in findings.json
    tuple val(meta), path(dataset), path(passes, stageAs: 'passes/*'), path(baselines, stageAs: 'baselines/*')

    output:
    tuple val(meta), path('findings.tsv'), path('findings.json'), path('findings_per_class.tsv'), emit: findings
    tuple val(meta), path('findings_pairs.tsv'), emit: pairs
    // with a sample key only: the top features' mean in each sample (the report's donor panel)
    tuple val(meta), path('findings_samples.tsv'), optional: true, emit: samples
    tuple val("${task.process}"), val('deepmapper'), eval("deepmapper --version | sed 's/.*version //'"), emit: versions_deepmapper, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    def compared = baselines ? '--baselines baselines/baselines.json' : ''
    """
    deepmapper accumulate \\
        --dataset ${dataset} \\
        --passes-dir passes \\
        --outdir . \\
        ${compared} \\
        ${args}
    """

    stub:
    """
    touch findings.tsv findings.json findings_per_class.tsv findings_pairs.tsv findings_samples.tsv
    """
}
