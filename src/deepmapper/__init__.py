"""DeepMapper: rank every feature that separates labelled groups.

Each feature becomes one pixel of a pseudo-image under a seeded arrangement; a
small image model learns the classes; attributions are projected back to
features and accumulated over many arrangements. Heavy dependencies (torch,
scanpy, captum) are imported inside the functions that need them.
"""
__version__ = "0.1.0"
