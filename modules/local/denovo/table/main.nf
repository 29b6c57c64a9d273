// Per-sample quant.sf files + labels -> the feature table and dataset.h5ad.
process DENOVO_TABLE {
    tag "${meta.id}"
    label 'process_single'
    conda "${moduleDir}/environment.yml"
    container 'deepmapper-nf/deepmapper:0.2.0'

    input:
    tuple val(meta), path(samplesheet), path(quants, stageAs: 'quant/*'), path(denovo)

    output:
    tuple val(meta), path('table/sc_table.tsv'), emit: table
    tuple val(meta), path('table/dataset.h5ad'), emit: dataset
    tuple val("${task.process}"), val('deepmapper'), eval("deepmapper --version | sed 's/.*version //'"), emit: versions_deepmapper, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    """
    deepmapper denovo table \\
        --samplesheet ${samplesheet} \\
        --quant-dir quant \\
        --denovo ${denovo} \\
        --outdir table \\
        ${args}
    """

    stub:
    """
    mkdir -p table
    touch table/sc_table.tsv table/dataset.h5ad
    """
}
