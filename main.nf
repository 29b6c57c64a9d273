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
include { validateParameters; paramsSummaryLog } from 'plugin/nf-schema'
include { DEEPMAPPER                           } from './workflows/deepmapper'

workflow {
    main:
    // types, enums, ranges and file existence from nextflow_schema.json
    if (params.validate_params) {
        validateParameters()
    }
    log.info(paramsSummaryLog(workflow))

    DEEPMAPPER()
}
