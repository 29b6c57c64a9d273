"""What is trained and explained: backbones (a registry with properties), arrangements of features
into pseudo-images (``transform``), attribution methods (a registry). No knowledge of runs or files.
"""
