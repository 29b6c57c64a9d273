// One labelled matrix (h5ad, 10x directory, CSV/TSV) or several labelled
// populations (samplesheet rows, LABEL=PATH) -> the validated dataset.h5ad, built as
// `deepmapper run` builds it (deepmapper.features.inputs.load): with --cluster the Leiden
// clusters are the labels, with a GMT file the AUCell gene-set scores are the features.
process DEEPMAPPER_INGEST {
    tag "${meta.id}"
    label 'process_low'
    conda "${moduleDir}/environment.yml"
    container 'deepmapper-nf/deepmapper:0.2.0'

    input:
    // arity '1..*': always a list, also for a single file, so the zip with
    // meta.labels below never iterates a Path's name components
    tuple val(meta), path(inputs, arity: '1..*', stageAs: 'input??/*'), path(labels), path(genesets, stageAs: 'genesets/*')

    output:
    tuple val(meta), path('dataset.h5ad'), emit: dataset
    tuple val("${task.process}"), val('deepmapper'), eval("deepmapper --version | sed 's/.*version //'"), emit: versions_deepmapper, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args      = task.ext.args ?: ''
    def sources   = meta.labels ? [meta.labels, inputs].transpose().collect { label, f -> "--input '${label}=${f}'" }.join(' ') : "--input '${inputs[0]}'"
    // the samplesheet's sample ids: staging names each directory input??/<its own name>
    def sample_names = meta.samples ? meta.samples.collect { s -> "--sample-name '${s}'" }.join(' ') : ''
    def label_key = meta.label_key ? "--label-key '${meta.label_key}'" : ''
    def label_map = labels ? "--labels '${labels}'" : ''
    def gene_sets = genesets ? "--genesets '${genesets}'" : ''
    """
    deepmapper ingest \\
        ${sources} \\
        ${sample_names} \\
        ${label_key} \\
        ${label_map} \\
        ${gene_sets} \\
        --out dataset.h5ad \\
        ${args}
    """

    stub:
    """
    touch dataset.h5ad
    """
}
