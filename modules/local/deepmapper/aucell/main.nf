// --genesets with --denovo: the AUCell activity of each gene set per cell replaces the
// features of the de-novo table's dataset, through deepmapper.features.inputs.derive, the last part
// of what INGEST (and `deepmapper run --genesets`) does for every other input.
process DEEPMAPPER_AUCELL {
    tag "${meta.id}"
    label 'process_low'
    conda "${moduleDir}/environment.yml"
    container 'deepmapper-nf/deepmapper:0.2.0'

    input:
    tuple val(meta), path(dataset), path(genesets)

    output:
    tuple val(meta), path('dataset_genesets.h5ad'), emit: dataset
    tuple val("${task.process}"), val('deepmapper'), eval("deepmapper --version | sed 's/.*version //'"), emit: versions_deepmapper, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    // --device cpu: only the tasks with label process_gpu (training, the pair screen) request a GPU
    """
    deepmapper aucell \\
        --dataset ${dataset} \\
        --genesets ${genesets} \\
        --device cpu \\
        --out dataset_genesets.h5ad \\
        ${args}
    """

    stub:
    """
    touch dataset_genesets.h5ad
    """
}
