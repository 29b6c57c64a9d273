// --cluster: no label column; Leiden clusters (PCA for rna, iterative LSI for atac)
// of the input h5ad become the classes, in obs column 'cluster' that INGEST then reads.
process DEEPMAPPER_CLUSTER {
    tag "${meta.id}"
    label 'process_low'
    container 'ghcr.io/deepmapper-nf/deepmapper:0.1.0'

    input:
    // staged in a folder: an input that is itself called clustered.h5ad cannot clash with the output
    tuple val(meta), path(h5ad, stageAs: 'input/*')

    output:
    tuple val(meta), path('clustered.h5ad'), emit: h5ad
    tuple val("${task.process}"), val('deepmapper'), eval("deepmapper --version | sed 's/.*version //'"), emit: versions_deepmapper, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    // the workflow hands INGEST --label-key cluster: the key is part of the contract, not an option
    """
    deepmapper cluster \\
        --input ${h5ad} \\
        --key cluster \\
        --out clustered.h5ad \\
        ${args}
    """

    stub:
    """
    touch clustered.h5ad
    """
}
