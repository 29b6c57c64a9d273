// Pool every sample's unaligned reads into one read set for the assembler.
process DENOVO_POOL {
    tag "${meta.id}"
    label 'process_single'
    conda "${moduleDir}/environment.yml"
    container 'deepmapper-nf/deepmapper:0.2.0'

    input:
    tuple val(meta), path(reads_1, arity: '1..*', stageAs: 'r1/*'), path(reads_2, arity: '0..*', stageAs: 'r2/*')

    output:
    // pooled_1 (+ pooled_2 for pairs, + pooled_single for mixed designs)
    tuple val(meta), path('pooled/pooled_*.fastq.gz'), emit: reads
    tuple val("${task.process}"), val('deepmapper'), eval("deepmapper --version | sed 's/.*version //'"), emit: versions_deepmapper, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args   = task.ext.args ?: ''
    def mate_1 = reads_1.collect { f -> "--reads-1 ${f}" }.join(' ')
    def mate_2 = reads_2.collect { f -> "--reads-2 ${f}" }.join(' ')
    """
    deepmapper denovo pool \\
        ${mate_1} \\
        ${mate_2} \\
        --outdir pooled \\
        ${args}
    """

    stub:
    def mates = reads_2 ? '1 2' : '1'
    """
    mkdir -p pooled
    for m in ${mates}; do
        echo '' | gzip > pooled/pooled_\$m.fastq.gz
    done
    """
}
