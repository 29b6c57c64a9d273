// Reference + DENOVO transcripts -> hybrid.fa and its Salmon index.
process DENOVO_HYBRID {
    tag "${meta.id}"
    label 'process_medium'
    conda "${moduleDir}/environment.yml"
    container 'deepmapper-nf/deepmapper:0.2.0'

    input:
    // the reference in a folder of its own: a user's FASTA named like denovo.fa would collide
    tuple val(meta), path(reference, stageAs: 'reference/*'), path(denovo)

    output:
    tuple val(meta), path('hybrid/hybrid.fa'), emit: fasta
    tuple val(meta), path('hybrid/salmon_index'), emit: index
    tuple val("${task.process}"), val('deepmapper'), eval("deepmapper --version | sed 's/.*version //'"), emit: versions_deepmapper, topic: versions
    tuple val("${task.process}"), val('salmon'), eval("salmon --version | sed 's/salmon //'"), emit: versions_salmon, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    """
    deepmapper denovo hybrid \\
        --reference ${reference} \\
        --denovo ${denovo} \\
        --outdir hybrid \\
        --threads ${task.cpus} \\
        ${args}
    """

    stub:
    """
    mkdir -p hybrid/salmon_index
    touch hybrid/hybrid.fa
    """
}
