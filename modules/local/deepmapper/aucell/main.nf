// --genesets: AUCell activity of each gene set per cell. The cells x gene sets
// dataset (labels and uns['deepmapper'] carried over) replaces the genes for every
// later step, as in `deepmapper run --genesets`.
process DEEPMAPPER_AUCELL {
    tag "${meta.id}"
    label 'process_low'
    container 'ghcr.io/deepmapper-nf/deepmapper:0.1.0'

    input:
    tuple val(meta), path(dataset), path(genesets)

    output:
    tuple val(meta), path('dataset_genesets.h5ad'), emit: dataset
    tuple val("${task.process}"), val('deepmapper'), eval("deepmapper --version | sed 's/.*version //'"), emit: versions_deepmapper, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    // --matrix X: the dataset's matrix is the one analysed (ingest already chose and
    // normalised it), as in `deepmapper run --genesets`. --device cpu: only training
    // tasks request a GPU (label process_gpu); one ranking per cell is cheap on CPU.
    """
    deepmapper aucell \\
        --input ${dataset} \\
        --genesets ${genesets} \\
        --matrix X \\
        --device cpu \\
        --out dataset_genesets.h5ad \\
        ${args}
    """

    stub:
    """
    touch dataset_genesets.h5ad
    """
}
