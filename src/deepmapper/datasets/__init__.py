"""Simulators with a planted truth (tests, benches and `denovo simulate` only; never imported at runtime)."""
