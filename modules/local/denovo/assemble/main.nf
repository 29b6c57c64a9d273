// De-novo assembly of the pooled unaligned reads (rnaSPAdes by default, or Trinity).
process DENOVO_ASSEMBLE {
    tag "${meta.id}"
    label 'process_high'
    conda "${moduleDir}/environment.yml"
    container 'deepmapper-nf/deepmapper:0.2.0'

    input:
    // pooled_1.fastq.gz (+ pooled_2.fastq.gz, + pooled_single.fastq.gz) from DENOVO_POOL
    tuple val(meta), path(reads, arity: '1..3')

    output:
    tuple val(meta), path('assembly/assembly.fa'), emit: assembly
    tuple val("${task.process}"), val('deepmapper'), eval("deepmapper --version | sed 's/.*version //'"), emit: versions_deepmapper, topic: versions
    // meta.assembler is params.assembler, set by the subworkflow. The version command is one
    // fixed string that reads which assembler ran from the work directory: an output declaration
    // holds no expression on meta (the legacy parser evaluates such an expression before meta
    // exists; a GString like the tool name above is resolved lazily, per task)
    tuple val("${task.process}"), val("${meta.assembler}"), eval('if [ "$(cat assembler.txt)" = trinity ]; then Trinity --version | sed -n "s/^Trinity version: Trinity-v//p"; else rnaspades.py --version 2>&1 | sed -n "s/.*assembler v\\([^ ]*\\).*/\\1/p"; fi'), emit: versions_assembler, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args      = task.ext.args ?: ''
    def names     = reads.collect { f -> f.name }
    def mate_2    = names.contains('pooled_2.fastq.gz') ? '--reads-2 pooled_2.fastq.gz' : ''
    def single    = names.contains('pooled_single.fastq.gz') ? '--single pooled_single.fastq.gz' : ''
    def memory_gb = task.memory ? task.memory.toGiga() : 8
    """
    echo '${meta.assembler}' > assembler.txt
    deepmapper denovo assemble \\
        --reads-1 pooled_1.fastq.gz \\
        ${mate_2} \\
        ${single} \\
        --assembler ${meta.assembler} \\
        --outdir assembly \\
        --threads ${task.cpus} \\
        --memory-gb ${memory_gb} \\
        ${args}
    """

    stub:
    """
    echo '${meta.assembler}' > assembler.txt
    mkdir -p assembly
    touch assembly/assembly.fa
    """
}
