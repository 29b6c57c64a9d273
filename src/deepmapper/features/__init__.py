"""Derived features and labels on top of the readers: ATAC TF-IDF, AUCell gene-set scores, Leiden clusters.

``inputs.load`` is what ``run`` and ``ingest`` call; it reads with :mod:`deepmapper.io` and adds these.
"""
