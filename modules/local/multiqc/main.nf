// The run summary: DeepMapper custom content, tool logs (HISAT2, Salmon) and the
// software versions of every process (collected from the `versions` topic).
process MULTIQC {
    tag "${meta.id}"
    label 'process_single'
    conda "${moduleDir}/environment.yml"
    container 'deepmapper-nf/deepmapper:0.2.0'

    input:
    tuple val(meta), path(multiqc_files, stageAs: 'in??/*')
    path(multiqc_config)

    output:
    tuple val(meta), path('multiqc/multiqc_report.html'), emit: report
    tuple val(meta), path('multiqc/multiqc_data'), emit: data
    // Not on the versions topic: MULTIQC consumes that topic, so it reports its
    // own version through a plain channel instead.
    tuple val("${task.process}"), val('multiqc'), eval("multiqc --version | sed 's/.*version //'"), emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    // --no-version-check, --no-ai: MultiQC never reaches the network (offline
    // clusters, reproducible reports). MultiQC's own version cannot come through the versions
    // topic it consumes: the task writes it as one more *_mqc_versions.yml (MultiQC's
    // software_versions search pattern) beside the others, so the report lists it too.
    """
    printf 'MULTIQC:\\n    multiqc: %s\\n' "\$(multiqc --version | sed 's/.*version //')" > multiqc_mqc_versions.yml
    multiqc \\
        --force \\
        --no-version-check \\
        --no-ai \\
        --config ${multiqc_config} \\
        --outdir multiqc \\
        --filename multiqc_report.html \\
        ${args} \\
        .
    """

    stub:
    """
    mkdir -p multiqc/multiqc_data
    touch multiqc/multiqc_report.html
    """
}
