"""Everything about the results folder: the findings tables, publishing into ``--outdir``,
the AnnData/``uns`` view of a finished run (``ranking``) and the HTML/MultiQC report.
"""
