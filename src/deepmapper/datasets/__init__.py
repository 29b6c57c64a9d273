"""Simulators of honest test data (planted markers and pairs, ATAC, donors and conditions, reads for the
de-novo front end).

Used by the tests, the benches and ``deepmapper denovo simulate``; nothing on the analysis path imports them.
"""
