"""Developer tools that assume a source checkout: the Nextflow file generator, bench comparators."""
