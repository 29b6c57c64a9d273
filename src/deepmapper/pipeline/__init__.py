"""The steps as the CLI and Nextflow call them, the in-memory analysis, ``run`` and resume, the demo."""
