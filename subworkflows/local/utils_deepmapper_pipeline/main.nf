/*
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
    DeepMapper-NF: what the pipeline does before and around the DAG (the nf-core template's
    utils_nfcore_<pipeline>_pipeline): help, parameter validation and summary, the checks
    on the run's options, reading the input, and the helpers main.nf, the workflow and the
    subworkflows share. Each helper is defined here once.
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
*/
include { paramsHelp; paramsSummaryLog; validateParameters; samplesheetToList } from 'plugin/nf-schema'

// Executors that take a GPU through clusterOptions (nextflow ExecutorFactory.BUILT_IN_EXECUTORS,
// the AbstractGridExecutor ones); the others take the accelerator directive.
def gridExecutors() {
    return ['slurm', 'lsf', 'bsc', 'sge', 'oge', 'uge', 'pbs', 'pbspro', 'moab', 'condor', 'nqsii', 'oar', 'hq', 'tcs', 'flux', 'bridge', 'crg']
}

workflow PIPELINE_INITIALISATION {
    take:
    help             // boolean or string: --help, or --help <parameter>
    help_full        // boolean: --help_full
    show_hidden      // boolean: --show_hidden
    validate_params  // boolean: check the parameters against nextflow_schema.json

    main:
    // --help, --help <param> (the help of one parameter), --help_full [--show_hidden]; the example
    // command is validation.help.command of nextflow.config
    def help_value = "${help}"
    if (!(help_value in ['false', 'null']) || isTrue(help_full)) {
        log.info(paramsHelp(
            parameter: help_value in ['true', 'false', 'null'] ? null : help_value,
            fullHelp: isTrue(help_full),
            showHidden: isTrue(show_hidden)
        ))
        exit(0)
    }
    // types, enums, ranges and file existence from nextflow_schema.json; nf-schema casts
    // command-line values to the schema's types first under the strict parser too
    if (isTrue(validate_params)) {
        validateParameters()
    }
    log.info(paramsSummaryLog())
    checkOptions()
    gpuWarnings()
}

/*
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
    FUNCTIONS
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
*/

// A boolean param as the strict parser hands it over from the command line ('true', 'false')
// or as the legacy parser and the config files do (true, false).
def isTrue(value) {
    return value != null && "${value}" == 'true'
}

// Combinations of options the schema cannot express: one line each, naming the fix.
def checkOptions() {
    if (isTrue(params.denovo) && isTrue(params.cluster)) {
        error("--cluster cannot be combined with --denovo: the samplesheet's label column gives the groups. Fix: drop --cluster.")
    }
    if (isTrue(params.denovo) && !params.reference) {
        error("--denovo needs --reference: the reference transcript (cDNA) FASTA the reads are aligned to.")
    }
}

// -profile gpu on one machine: Nextflow hands each task its own GPU (CUDA_VISIBLE_DEVICES) only
// from 26.10 and only from the list exported before the run; otherwise concurrent training tasks
// share the first GPU. Said once, here, with the fix.
def gpuWarnings() {
    def profiles = workflow.profile.tokenize(',')
    // an executor profile of this pipeline puts the tasks elsewhere (an institution's may too)
    if (!profiles.contains('gpu') || profiles.intersect(['slurm', 'awsbatch', 'kubernetes'])) {
        return
    }
    if (!System.getenv('CUDA_VISIBLE_DEVICES') || !workflow.nextflow.version.matches('>=26.10.0')) {
        log.warn("-profile gpu: if the training tasks run on the local executor, each gets its own GPU only with Nextflow >= 26.10 and CUDA_VISIBLE_DEVICES exported before the run (e.g. export CUDA_VISIBLE_DEVICES=0,1,2,3); otherwise concurrent tasks share the first GPU. Fix: upgrade Nextflow and export the list, or run one training task at a time (process.withLabel:process_gpu.maxForks = 1 in a -c config).")
    }
}

// How --input is read. A CSV is a samplesheet (sample,path,label rows; with --denovo
// sample,fastq_1,fastq_2,label) unless it names its own labels: with --label_key (its label
// column) or --labels (a separate labels file) it is one matrix, as `deepmapper run` reads it.
def isSamplesheet(input, label_key, labels, denovo) {
    if (isTrue(denovo)) {
        return true
    }
    return input.toString().toLowerCase().endsWith('.csv') && !label_key && !labels
}

// A samplesheet path as `deepmapper run` resolves it (deepmapper.denovo.samplesheet._resolve):
// absolute or URL as given; a relative one from the launch directory (the nf-core convention)
// when it is there, else from the samplesheet's own folder, so a sheet shipped beside its data
// (the test profiles) works from any launch directory.
def resolveSamplesheetPath(value, sheet, column, sample) {
    def text = value.toString()
    def given = file(text)
    if (given.exists()) {
        return given
    }
    if (!text.startsWith('/') && !(text ==~ /^[a-z][a-z0-9+.-]*:\/\/.*/)) {
        def beside = file(sheet).parent.resolve(text)
        if (beside.exists()) {
            return beside
        }
    }
    error("${sheet}: sample '${sample}', ${column} '${text}' does not exist (relative paths are read from the launch directory, else from the samplesheet's folder). Fix: give an existing path.")
}

// The samplesheet's rows, validated against assets/schema_input.json, paths resolved:
// [meta(id, label), path or null, fastq_1 or null, fastq_2 or null]. nf-schema types each CSV cell
// as JSON would (utils/Types.inferType: "1" an Integer, "true" a Boolean), so the schema allows
// those for sample, label and path, and they are text again here.
def readSamplesheet(sheet) {
    return samplesheetToList(sheet, "${projectDir}/assets/schema_input.json").collect { meta, matrix, fastq_1, fastq_2 ->
        [
            meta + [id: meta.id.toString(), label: meta.label.toString()],
            matrix != null ? resolveSamplesheetPath(matrix, sheet, 'path', meta.id) : null,
            fastq_1 ? resolveSamplesheetPath(fastq_1, sheet, 'fastq_1', meta.id) : null,
            fastq_2 ? resolveSamplesheetPath(fastq_2, sheet, 'fastq_2', meta.id) : null
        ]
    }
}

// {process: {tool: version}} as MultiQC's software-versions YAML
def versionsYaml(proc_name, tools, versions) {
    // pairs sorted by tool name: the same file whatever order the tasks finished in
    def lines = [tools, versions].transpose().sort { pair -> pair[0] }.collect { tool, version -> "    ${tool}: ${version}" }
    return "${proc_name}:\n" + lines.join('\n')
}

// The methods section of the MultiQC report: the template with the run's values filled in
def methodsDescription(template, values) {
    return values.inject(template.text) { text, entry -> text.replace("{{ ${entry.key} }}".toString(), "${entry.value}".toString()) }
}

// Files in a fixed order (name, then full path): what a collect() hands a task, so its hash
// and -resume do not depend on the order in which upstream tasks finished.
def byName(a, b) {
    return a.name <=> b.name ?: a.toString() <=> b.toString()
}
