// Quantify one sample against the hybrid transcriptome (Salmon).
process DENOVO_QUANT {
    tag "${meta.id}"
    label 'process_medium'
    conda "${moduleDir}/environment.yml"
    container 'deepmapper-nf/deepmapper:0.2.0'

    input:
    tuple val(meta), path(reads, arity: '1..2')
    tuple val(meta2), path(index)

    output:
    tuple val(meta), path("quant/${meta.id}"), emit: quant
    tuple val("${task.process}"), val('deepmapper'), eval("deepmapper --version | sed 's/.*version //'"), emit: versions_deepmapper, topic: versions
    tuple val("${task.process}"), val('salmon'), eval("salmon --version | sed 's/salmon //'"), emit: versions_salmon, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args    = task.ext.args ?: ''
    def fastq_2 = meta.single_end ? '' : "--fastq-2 ${reads[1]}"
    """
    deepmapper denovo quant \\
        --sample ${meta.id} \\
        --fastq-1 ${reads[0]} \\
        ${fastq_2} \\
        --index ${index} \\
        --outdir quant \\
        --threads ${task.cpus} \\
        ${args}
    """

    stub:
    """
    mkdir -p quant/${meta.id}
    touch quant/${meta.id}/quant.sf
    """
}
