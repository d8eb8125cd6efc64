"""What one GPU computes: FLOP and HBM bytes per operation of a transformer layer (``ops``) and the time of
an operation on a GPU (``kernels``: roofline with GEMM and attention efficiencies)."""
