// Align one sample's reads to the reference; keep the reads HISAT2 could not place.
process DENOVO_ALIGN {
    tag "${meta.id}"
    label 'process_medium'
    conda "${moduleDir}/environment.yml"
    container 'deepmapper-nf/deepmapper:0.2.0'

    input:
    tuple val(meta), path(reads, arity: '1..2')
    tuple val(meta2), path(index)

    output:
    tuple val(meta), path("unaligned/${meta.id}.unaligned_*.fastq.gz"), emit: unaligned
    tuple val(meta), path("unaligned/${meta.id}.hisat2.log"), emit: log
    tuple val("${task.process}"), val('deepmapper'), eval("deepmapper --version | sed 's/.*version //'"), emit: versions_deepmapper, topic: versions
    tuple val("${task.process}"), val('hisat2'), eval("hisat2 --version 2>&1 | sed -n '1s/.*version //p'"), emit: versions_hisat2, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args    = task.ext.args ?: ''
    def fastq_2 = meta.single_end ? '' : "--fastq-2 ${reads[1]}"
    """
    deepmapper denovo align \\
        --sample ${meta.id} \\
        --fastq-1 ${reads[0]} \\
        ${fastq_2} \\
        --index ${index}/reference \\
        --outdir unaligned \\
        --threads ${task.cpus} \\
        ${args}
    """

    stub:
    def mates = meta.single_end ? '1' : '1 2'
    """
    mkdir -p unaligned
    for m in ${mates}; do
        echo '' | gzip > unaligned/${meta.id}.unaligned_\$m.fastq.gz
    done
    touch unaligned/${meta.id}.hisat2.log
    """
}
