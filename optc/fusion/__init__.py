"""Kernel fusion internals for the ``fuse`` pass (``passes/fuse.py``).

``plan`` runs the steps; ``gelu`` and ``attention`` match decomposed subgraphs and
``emit`` replaces them by one op; ``groups`` finds what runs as one kernel (TVM's
FuseOps rules); ``score`` prices each decision with the roofline model;
``kernel_count`` counts the kernels TVM really generated.
"""

from optc.fusion.plan import DEFAULT_FAMILIES, FAMILIES, FusionReport, fuse

__all__ = ["DEFAULT_FAMILIES", "FAMILIES", "FusionReport", "fuse"]
