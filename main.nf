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
include { PIPELINE_INITIALISATION } from './subworkflows/local/utils_deepmapper_pipeline'
include { DEEPMAPPER              } from './workflows/deepmapper'

workflow {
    main:
    // help (and exit), parameter validation, the summary, the checks across options
    PIPELINE_INITIALISATION(params.help, params.help_full, params.show_hidden, params.validate_params)
    DEEPMAPPER()
}
