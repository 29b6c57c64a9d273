// Standalone HTML report plus MultiQC custom-content files (*_mqc.*); MultiQC
// itself runs in its own process (MULTIQC) so it can also take the tool logs.
process DEEPMAPPER_REPORT {
    tag "${meta.id}"
    label 'process_single'
    conda "${moduleDir}/environment.yml"
    container 'deepmapper-nf/deepmapper:0.2.0'

    input:
    // staged as the results layout that `deepmapper report --results` reads
    tuple val(meta), path(dataset, stageAs: 'results/dataset.h5ad'), path(passes, stageAs: 'results/passes/*'), path(findings, stageAs: 'results/*'), path(baselines, stageAs: 'results/baselines/*'), path(evaluation, stageAs: 'results/*')

    output:
    tuple val(meta), path('report/report.html'), emit: html
    tuple val(meta), path('report/mqc/*_mqc.*'), emit: mqc
    tuple val("${task.process}"), val('deepmapper'), eval("deepmapper --version | sed 's/.*version //'"), emit: versions_deepmapper, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    """
    deepmapper report \\
        --results results \\
        --outdir report \\
        --no-multiqc \\
        ${args}
    """

    stub:
    """
    mkdir -p report/mqc
    touch report/report.html report/mqc/deepmapper_findings_mqc.tsv
    """
}
