// Reference rankings on the same held-out split: penalised logistic regression
// on all features and a per-class Wilcoxon test; given the pair screen's table
// (DEEPMAPPER_INTERACTIONS; [] with --interactions false), also the screen alone
// (baselines/interactions.tsv).
process DEEPMAPPER_BASELINE {
    tag "${meta.id}"
    label 'process_low'
    conda "${moduleDir}/environment.yml"
    container 'deepmapper-nf/deepmapper:0.2.0'

    input:
    tuple val(meta), path(dataset), path(interactions)

    output:
    // logistic.tsv, wilcoxon.tsv, baselines.json; interactions.tsv when the screen's table is given
    tuple val(meta), path('baselines/*.{tsv,json}'), emit: baselines
    tuple val("${task.process}"), val('deepmapper'), eval("deepmapper --version | sed 's/.*version //'"), emit: versions_deepmapper, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    def screen = interactions ? "--interactions-tsv ${interactions}" : ''
    """
    deepmapper baseline \\
        --dataset ${dataset} \\
        --outdir baselines \\
        ${screen} \\
        ${args}
    """

    stub:
    """
    mkdir -p baselines
    touch baselines/logistic.tsv baselines/wilcoxon.tsv baselines/baselines.json ${interactions ? 'baselines/interactions.tsv' : ''}
    """
}
