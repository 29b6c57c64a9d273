// HISAT2 index of the reference transcripts (prefix index/reference).
process DENOVO_INDEX {
    tag "${meta.id}"
    label 'process_medium'
    conda "${moduleDir}/environment.yml"
    container 'deepmapper-nf/deepmapper:0.2.0'

    input:
    // the reference in a folder of its own: a user's FASTA named like the index would collide
    tuple val(meta), path(reference, stageAs: 'reference/*')

    output:
    tuple val(meta), path('index'), emit: index
    tuple val("${task.process}"), val('deepmapper'), eval("deepmapper --version | sed 's/.*version //'"), emit: versions_deepmapper, topic: versions
    tuple val("${task.process}"), val('hisat2'), eval("hisat2 --version 2>&1 | sed -n '1s/.*version //p'"), emit: versions_hisat2, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    """
    deepmapper denovo index-reference \\
        --reference ${reference} \\
        --outdir index \\
        --threads ${task.cpus} \\
        ${args}
    """

    stub:
    """
    mkdir -p index
    touch index/reference.1.ht2
    """
}
