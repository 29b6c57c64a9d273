/*
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
    DeepMapper-NF: the DAG
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
    input -> [cluster] -> dataset.h5ad (ingest, or the de-novo front end) -> [aucell]
          -> passes (scatter over tasks, gather)  -> accumulate -> findings
          -> baselines, evaluate                  -> report -> MultiQC
----------------------------------------------------------------------------------------
*/
include { samplesheetToList     } from 'plugin/nf-schema'
include { DENOVO_ASSEMBLY       } from '../subworkflows/local/denovo_assembly'
include { TRAIN_PASSES          } from '../subworkflows/local/train_passes'
include { DEEPMAPPER_CLUSTER    } from '../modules/local/deepmapper/cluster'
include { DEEPMAPPER_INGEST     } from '../modules/local/deepmapper/ingest'
include { DEEPMAPPER_AUCELL     } from '../modules/local/deepmapper/aucell'
include { DEEPMAPPER_INTERACTIONS } from '../modules/local/deepmapper/interactions'
include { DEEPMAPPER_ACCUMULATE } from '../modules/local/deepmapper/accumulate'
include { DEEPMAPPER_BASELINE   } from '../modules/local/deepmapper/baseline'
include { DEEPMAPPER_EVALUATE   } from '../modules/local/deepmapper/evaluate'
include { DEEPMAPPER_REPORT     } from '../modules/local/deepmapper/report'
include { MULTIQC               } from '../modules/local/multiqc'

// A CSV given without --label_key is a samplesheet (sample,path,label rows);
// with --label_key it is one matrix whose label column is named by label_key.
def isSamplesheet(input, labelKey, denovo) {
    return denovo || (input.toString().toLowerCase().endsWith('.csv') && !labelKey)
}

// {process: {tool: version}} as MultiQC's software-versions YAML
def versionsYaml(procName, tools, versions) {
    // pairs sorted by tool name: the same file whatever order the tasks finished in
    def lines = [tools, versions].transpose().sort { pair -> pair[0] }.collect { tool, version -> "    ${tool}: ${version}" }
    return "${procName}:\n" + lines.join('\n')
}

// Labels come from one place: a label column (--label_key, --labels) or clustering
// (--cluster). The same rule as deepmapper.cluster.check_label_source, checked
// before any task starts. Returns the problem, or null.
def labelSourceProblem(cluster, labelKey, labels, denovo, inputPath) {
    if (!cluster) {
        return null
    }
    if (labelKey) {
        return "--cluster derives the labels by Leiden clustering but --label_key '${labelKey}' names existing labels. " +
            "Fix: drop --cluster to use the labels in that column, or drop --label_key to cluster."
    }
    if (labels) {
        return "--cluster derives the labels by Leiden clustering but --labels ${labels} gives them. " +
            "Fix: drop --cluster to use that file, or drop --labels to cluster."
    }
    if (denovo) {
        return "--cluster cannot be combined with --denovo: the samplesheet's label column gives the groups. Fix: drop --cluster."
    }
    if (!inputPath.toString().toLowerCase().endsWith(".h5ad")) {
        return "--cluster reads one h5ad file, but --input is ${inputPath}. " +
            "Fix: convert the matrix to h5ad first, or give labels with --label_key."
    }
    return null
}

workflow DEEPMAPPER {
    main:
    def label_problem = labelSourceProblem(params.cluster, params.label_key, params.labels, params.denovo, params.input)
    if (label_problem) {
        error(label_problem)
    }
    def input_file = file(params.input, checkIfExists: true)
    def run_meta   = [id: input_file.baseName]
    def sheet      = isSamplesheet(params.input, params.label_key, params.denovo)
    def rows       = sheet ? samplesheetToList(params.input, "${projectDir}/assets/schema_input.json") : []
    ch_multiqc_files = channel.empty()

    //
    // Dataset: de-novo front end, or ingest of matrices
    //
    if (params.denovo) {
        if (!params.reference) {
            error("--denovo needs --reference: the reference transcript (cDNA) FASTA the reads are aligned to.")
        }
        // row: [meta(id, label), path, fastq_1, fastq_2]; empty columns arrive as []
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
    } else {
        def labels_file = params.labels ? file(params.labels, checkIfExists: true) : []
        def ch_ingest_in
        if (params.cluster) {
            // Leiden clusters in obs 'cluster' become the labels INGEST reads
            DEEPMAPPER_CLUSTER(channel.value([run_meta, input_file]))
            ch_ingest_in = DEEPMAPPER_CLUSTER.out.h5ad.map { meta, clustered -> [meta + [label_key: 'cluster'], [clustered], labels_file] }
        } else if (sheet) {
            rows.each { meta, matrix_path, _fastq_1, _fastq_2 ->
                if (!matrix_path) {
                    error("${params.input}: sample '${meta.id}' has no path. Fix: give sample,path,label rows, or run with --denovo for FASTQ rows.")
                }
            }
            ch_ingest_in = channel.value([run_meta + [labels: rows.collect { row -> row[0].label }], rows.collect { row -> row[1] }, labels_file])
        } else {
            if (!params.label_key) {
                error("--input ${params.input} is a single matrix, so --label_key must name its label column (obs column of an h5ad, column of a CSV), or use --cluster to derive labels.")
            }
            ch_ingest_in = channel.value([run_meta + [label_key: params.label_key], [input_file], labels_file])
        }
        DEEPMAPPER_INGEST(ch_ingest_in)
        ch_dataset = DEEPMAPPER_INGEST.out.dataset
    }

    //
    // Gene sets: AUCell activities replace the genes for every later step
    //
    if (params.genesets) {
        def gmt = file(params.genesets, checkIfExists: true)
        DEEPMAPPER_AUCELL(ch_dataset.map { meta, dataset -> [meta, dataset, gmt] })
        ch_dataset = DEEPMAPPER_AUCELL.out.dataset
    }

    //
    // Gene pairs: the pair screen on the training cells (train-pass runs the same screen)
    //
    if (params.interactions) {
        DEEPMAPPER_INTERACTIONS(ch_dataset)
        ch_interactions = DEEPMAPPER_INTERACTIONS.out.interactions
    } else {
        ch_interactions = ch_dataset.map { meta, _dataset -> [meta, []] }
    }

    //
    // Passes: scatter over tasks, gather every pass file
    //
    // Stacked training (passes_per_step > 1) trains passes in groups; a pass's result
    // depends on its group, so tasks must cut the passes where `deepmapper run` does.
    def stacked = params.backbone in ['cnn', 'cnn_small'] && params.passes_per_step > 1
    if (stacked && params.passes_per_task < params.passes && params.passes_per_task % params.passes_per_step != 0) {
        log.warn("--passes_per_task ${params.passes_per_task} is not a multiple of --passes_per_step ${params.passes_per_step}: " +
            "results will differ from `deepmapper run` with the same seed (still valid, not identical).")
    }
    TRAIN_PASSES(ch_dataset, params.passes, params.max_tries, params.passes_per_task)
    ch_dataset_passes = ch_dataset.join(TRAIN_PASSES.out.passes)

    DEEPMAPPER_ACCUMULATE(ch_dataset_passes)
    DEEPMAPPER_EVALUATE(ch_dataset_passes)

    //
    // Baselines on the same held-out split
    //
    if (params.skip_baselines) {
        ch_baselines = ch_dataset.map { meta, _dataset -> [meta, []] }
    } else {
        DEEPMAPPER_BASELINE(ch_dataset)
        ch_baselines = DEEPMAPPER_BASELINE.out.baselines
    }

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

    if (!params.skip_multiqc) {
        ch_multiqc_in = ch_multiqc_files
            .mix(DEEPMAPPER_REPORT.out.mqc.map { _meta, files -> files })
            .mix(ch_versions_yml)
            .collect()
            .map { files -> [run_meta, files] }
        def multiqc_config = params.multiqc_config ?: "${projectDir}/assets/multiqc_config.yml"
        MULTIQC(ch_multiqc_in, file(multiqc_config, checkIfExists: true))
    }

    emit:
    dataset  = ch_dataset
    findings = DEEPMAPPER_ACCUMULATE.out.findings
    report   = DEEPMAPPER_REPORT.out.html
}
