"""De-novo hybrid assembly front end.

Reads that do not align to the reference cDNA are assembled de novo, tagged
``DENOVO_``, added to the reference, and every sample is quantified against the
hybrid reference, so transcripts the annotation does not know become features.

- :mod:`.tools`: locating and running HISAT2 / rnaSPAdes / Trinity / Salmon, command log
- :mod:`.fastq`, :mod:`.fasta`, :mod:`.samplesheet`: input checks
- :mod:`.steps`: one function per step and :func:`.steps.run_all`
- :mod:`.table`: the pure table-building core
- :mod:`.recovery`: how well planted transcripts were assembled (identity / coverage)
"""
