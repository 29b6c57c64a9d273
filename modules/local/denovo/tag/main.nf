// Keep assembled contigs the reference lacks, renamed DENOVO_<n>.
process DENOVO_TAG {
    tag "${meta.id}"
    label 'process_single'
    conda "${moduleDir}/environment.yml"
    container 'deepmapper-nf/deepmapper:0.2.0'

    input:
    // the reference in a folder of its own: a user's FASTA named like assembly.fa and the denovo.fa it writes would collide
    tuple val(meta), path(assembly), path(reference, stageAs: 'reference/*')

    output:
    tuple val(meta), path('denovo.fa'), emit: fasta
    tuple val("${task.process}"), val('deepmapper'), eval("deepmapper --version | sed 's/.*version //'"), emit: versions_deepmapper, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    """
    deepmapper denovo tag \\
        --assembly ${assembly} \\
        --reference ${reference} \\
        --out denovo.fa \\
        ${args}
    """

    stub:
    """
    touch denovo.fa
    """
}
