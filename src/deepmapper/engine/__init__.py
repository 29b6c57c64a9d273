"""The method on prepared data: data preparation and splits, the training loop, the pair screen,
pass files, accumulation, evaluation, planning of rounds, baselines.

Layering (checked in tests/test_layers.py): the engine never imports ``results``, ``pipeline`` or ``cli``.
"""
