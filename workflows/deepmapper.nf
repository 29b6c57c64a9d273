/*
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
    DeepMapper-NF: the DAG
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
    input -> dataset.h5ad (ingest: reading, --cluster, --modality, --genesets, as
             `deepmapper run`; or the de-novo front end [-> aucell])
          -> passes (rounds planned by `deepmapper plan`, tasks scattered, gathered)
          -> accumulate -> findings;  baselines, evaluate -> report -> MultiQC
    The rules (labels from one place, which passes to train, stacking) live in the
    Python steps; this file only wires channels.
----------------------------------------------------------------------------------------
*/
include { isTrue; isSamplesheet; readSamplesheet; versionsYaml; methodsDescription; byName } from '../subworkflows/local/utils_deepmapper_pipeline'
include { DENOVO_ASSEMBLY       } from '../subworkflows/local/denovo_assembly'
include { TRAIN_PASSES          } from '../subworkflows/local/train_passes'
include { DEEPMAPPER_INGEST     } from '../modules/local/deepmapper/ingest'
include { DEEPMAPPER_AUCELL     } from '../modules/local/deepmapper/aucell'
include { DEEPMAPPER_INTERACTIONS } from '../modules/local/deepmapper/interactions'
include { DEEPMAPPER_ACCUMULATE } from '../modules/local/deepmapper/accumulate'
include { DEEPMAPPER_BASELINE   } from '../modules/local/deepmapper/baseline'
include { DEEPMAPPER_EVALUATE   } from '../modules/local/deepmapper/evaluate'
include { DEEPMAPPER_REPORT     } from '../modules/local/deepmapper/report'
include { MULTIQC               } from '../modules/local/multiqc'

workflow DEEPMAPPER {
    main:
    // INGEST checks where the labels come from (deepmapper.features.cluster.check_label_source); the
    // de-novo front end has its own labels, from the samplesheet, and no INGEST
    // (PIPELINE_INITIALISATION has refused --denovo with --cluster, and --denovo without --reference)
    def denovo     = isTrue(params.denovo)
    def cluster    = isTrue(params.cluster)
    def input_file = file(params.input, checkIfExists: true)
    def run_meta   = [id: input_file.baseName]
    def sheet      = !cluster && isSamplesheet(params.input, params.label_key, params.labels, denovo)
    def rows       = sheet ? readSamplesheet(params.input) : []
    ch_multiqc_files = channel.empty()

    //
    // Dataset: de-novo front end, or ingest of matrices
    //
    if (denovo) {
        // row: [meta(id, label), path, fastq_1, fastq_2]; empty columns are null
        ch_reads = channel.fromList(rows).map { meta, _path, fastq_1, fastq_2 ->
            if (!fastq_1) {
                error("${params.input}: sample '${meta.id}' has no fastq_1. Fix: with --denovo every row needs sample,fastq_1,fastq_2,label.")
            }
            fastq_2 ? [meta + [single_end: false], [fastq_1, fastq_2]] : [meta + [single_end: true], [fastq_1]]
        }
        DENOVO_ASSEMBLY(
            ch_reads,
            channel.value([[id: 'reference'], file(params.reference, checkIfExists: true)]),
            channel.value([run_meta, input_file]),
            params.assembler
        )
        ch_dataset       = DENOVO_ASSEMBLY.out.dataset
        ch_multiqc_files = ch_multiqc_files.mix(DENOVO_ASSEMBLY.out.multiqc_files)
        //
        // Gene sets on the de-novo table: the last part of ingest (deepmapper.features.inputs.derive)
        //
        if (params.genesets) {
            def gmt = file(params.genesets, checkIfExists: true)
            DEEPMAPPER_AUCELL(ch_dataset.map { meta, dataset -> [meta, dataset, gmt] })
            ch_dataset = DEEPMAPPER_AUCELL.out.dataset
        }
    } else {
        def labels_file = params.labels ? file(params.labels, checkIfExists: true) : []
        def genesets = params.genesets ? file(params.genesets, checkIfExists: true) : []
        def ch_ingest_in
        if (sheet) {
            rows.each { meta, matrix_path, _fastq_1, _fastq_2 ->
                if (!matrix_path) {
                    error("${params.input}: sample '${meta.id}' has no path. Fix: give sample,path,label rows, or run with --denovo for FASTQ rows.")
                }
            }
            ch_ingest_in = channel.value([run_meta + [labels: rows.collect { row -> row[0].label }, samples: rows.collect { row -> row[0].id }], rows.collect { row -> row[1] }, labels_file, genesets])
        } else {
            if (!params.label_key && !cluster && !params.labels) {
                error("--input ${params.input} is a single matrix, so --label_key must name its label column (obs column of an h5ad, column of a CSV), --labels a labels file, or --cluster derive labels.")
            }
            // with --cluster, INGEST derives the labels (Leiden) and refuses a --label_key or --labels
            ch_ingest_in = channel.value([run_meta + [label_key: params.label_key], [input_file], labels_file, genesets])
        }
        DEEPMAPPER_INGEST(ch_ingest_in)
        ch_dataset = DEEPMAPPER_INGEST.out.dataset
    }

    //
    // Gene pairs: the pair screen on the training cells, run once; its table goes to every
    // pass task (the pairs placed side by side), to the baselines (the screen alone) and to
    // the report. With --interactions false: [meta, []] (nf-core's optional input), no pairs.
    //
    if (isTrue(params.interactions)) {
        DEEPMAPPER_INTERACTIONS(ch_dataset)
        ch_interactions = DEEPMAPPER_INTERACTIONS.out.interactions
    } else {
        ch_interactions = ch_dataset.map { meta, _dataset -> [meta, []] }
    }

    //
    // Passes: scatter over tasks, gather every pass file
    //
    // `deepmapper plan` decides each round (planning.next_round, the rule of `deepmapper run`)
    // and warns when --passes_per_task cuts stacked groups apart
    TRAIN_PASSES(ch_dataset, ch_interactions, params.passes_per_task)
    ch_dataset_passes = ch_dataset.join(TRAIN_PASSES.out.passes)

    //
    // Baselines on the same held-out split (and the screen alone, given its table); accumulate
    // compares the passes with logistic regression for the trust verdict (findings.json "trust")
    //
    if (isTrue(params.skip_baselines)) {
        ch_baselines = ch_dataset.map { meta, _dataset -> [meta, []] }
    } else {
        DEEPMAPPER_BASELINE(ch_dataset.join(ch_interactions))
        ch_baselines = DEEPMAPPER_BASELINE.out.baselines
    }

    DEEPMAPPER_ACCUMULATE(ch_dataset_passes.join(ch_baselines))
    DEEPMAPPER_EVALUATE(ch_dataset_passes)

    //
    // Report and MultiQC
    //
    ch_findings = DEEPMAPPER_ACCUMULATE.out.findings
        .join(DEEPMAPPER_ACCUMULATE.out.pairs)
        .join(ch_interactions)
        .map { meta, tsv, json, per_class, pairs, screen -> [meta, [tsv, json, per_class, pairs] + (screen ? [screen] : [])] }
    ch_report_in = ch_dataset_passes
        .join(ch_findings)
        .join(ch_baselines)
        .join(DEEPMAPPER_EVALUATE.out.evaluation)
    DEEPMAPPER_REPORT(ch_report_in)

    ch_versions_yml = channel.topic('versions')
        // plain strings (GString values would defeat unique()), short process names
        .map { proc_name, tool, version -> [proc_name.toString().tokenize(':').last(), tool.toString(), version.toString()] }
        .unique()
        .groupTuple(by: 0)
        .map { proc_name, tools, versions -> versionsYaml(proc_name, tools, versions) }
        .collectFile(name: 'pipeline_software_mqc_versions.yml', storeDir: "${params.outdir}/pipeline_info", newLine: true, sort: true)

    if (!isTrue(params.skip_multiqc)) {
        // the methods description (tools, versions, citations) and the run's parameters
        def methods_template = file(params.multiqc_methods_description ?: "${projectDir}/assets/methods_description_template.yml", checkIfExists: true)
        def methods = methodsDescription(methods_template, [
            workflow_name: workflow.manifest.name, workflow_version: workflow.manifest.version,
            nextflow_version: workflow.nextflow.version, run_name: workflow.runName,
            command_line: workflow.commandLine, profile: workflow.profile
        ])
        ch_methods = channel.value(methods).collectFile(name: 'methods_description_mqc.yaml')
        ch_multiqc_in = ch_multiqc_files
            .mix(DEEPMAPPER_REPORT.out.mqc.map { _meta, files -> files })
            .mix(ch_versions_yml)
            .mix(ch_methods)
            .collect(sort: { a, b -> byName(a, b) })
            .map { files -> [run_meta, files] }
        def multiqc_config = params.multiqc_config ?: "${projectDir}/assets/multiqc_config.yml"
        MULTIQC(ch_multiqc_in, file(multiqc_config, checkIfExists: true))
    }

    emit:
    dataset  = ch_dataset
    findings = DEEPMAPPER_ACCUMULATE.out.findings
    report   = DEEPMAPPER_REPORT.out.html
}
