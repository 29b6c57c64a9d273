#!/usr/bin/env nextflow
/*
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
    deepmapper-nf/deepmapper
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
    Which features separate labelled groups of cells: pseudo-images, small image
    models and attributions over many seeded arrangements.
    Usage: docs/usage.md   Outputs: docs/output.md
----------------------------------------------------------------------------------------
*/
include { validateParameters; paramsHelp; paramsSummaryLog } from 'plugin/nf-schema'
include { DEEPMAPPER                                       } from './workflows/deepmapper'

// A boolean param as the strict parser hands it over from the command line ('true', 'false')
// or as the legacy parser and the config files do (true, false).
def isTrue(value) {
    return value != null && "${value}" == 'true'
}

workflow {
    main:
    // --help, --help <param> (the help of one parameter), --help_full [--show_hidden]
    def help = "${params.help}"
    if (!(help in ['false', 'null']) || isTrue(params.help_full)) {
        log.info(paramsHelp(
            parameter: help in ['true', 'false', 'null'] ? null : help,
            fullHelp: isTrue(params.help_full),
            showHidden: isTrue(params.show_hidden),
            command: "nextflow run deepmapper-nf/deepmapper -profile <docker/singularity/conda/...> --input data.h5ad --label_key cell_type --outdir results"
        ))
        exit(0)
    }
    // types, enums, ranges and file existence from nextflow_schema.json; nf-schema casts
    // command-line values to the schema's types first under the strict parser too
    if (isTrue(params.validate_params)) {
        validateParameters()
    }
    log.info(paramsSummaryLog())

    DEEPMAPPER()
}
