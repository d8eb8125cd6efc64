"""The host time the model charges each expert GEMM of a grouped GEMM against the measured cost of the cuBLASLt call
sequence Transformer Engine runs for it (docs/calibration/round-30.md, "Round 30: host work per cuBLASLt GEMM call in
Transformer Engine").

What Transformer Engine does per expert, from source: ``multi_stream_cublas_gemm`` (TE 2.x,
transformer_engine/common/gemm/cublaslt_gemm.cu) loops over the local experts and calls ``nvte_cublas_gemm_v2`` ->
``cublas_gemm`` once each; every call creates the matmul descriptor, four matrix layouts and a preference, sets
their attributes, queries ``cublasLtMatmulAlgoGetHeuristic`` and enqueues ``cublasLtMatmul``, then destroys the
descriptors. Transformer Engine keeps no algorithm cache of its own (TE 1.x and 2.x alike; the stored 2024 1.x
copy also created the cuBLASLt handle per call); a repeated problem hits cuBLASLt's internal heuristics cache
(cuBLAS documentation, section "Heuristics Cache": default 8,192 entries; a heuristics query "could take tens of
microseconds" on a miss).
PyTorch's cuBLASLt path behind ``torch.nn.Linear`` runs the same per-call sequence (aten/src/ATen/cuda/
CUDABlas.cpp: descriptors, preference and a heuristics query every call; no cache of its own, pytorch/pytorch PR
191700, 2026, proposes one, "saves ~0.7-0.9us on the cuBLASLt hot path" over cuBLASLt's internal cache).

Independent truth: NVIDIA/raft PR 1736 (2023), NVTX from entering its cuBLASLt matmul wrapper on the host to the
kernel launch: about 10 us a call with the descriptors and the heuristics query made every call, about 5 us with
both memoized (host CPU not named). The model charges every expert GEMM launch ``host_overhead.dispatch_s`` at
the GPU's host CPU ratio (workload/kernels.py ``stream_time``; workload/moe.py ``host_launches``), a whole
``torch.nn.Linear`` forward on a DGX H100's Xeon (TransformerEngine#2053). It must cover the cuBLASLt call
sequence, or a per-expert term is missing. That the host issues one such call per local expert and grouped GEMM,
whichever stream runs it, is tests/unit/test_moe.py's
``test_the_forward_syncs_once_before_the_routed_experts_and_the_host_issues_every_expert_gemm``.
"""

from __future__ import annotations

from simcluster.workload import kernels

# NVIDIA/raft PR 1736: host time of one cuBLASLt matmul call, descriptors and heuristics query made every call
CUBLASLT_CALL_UNMEMOIZED_S = 10e-6


def test_the_host_charge_per_expert_gemm_covers_transformer_engines_cublaslt_call():
    """On an x86 host (DGX H100 and B200 alike, ratio 1) each expert GEMM's dispatch is at least the measured
    un-memoized cuBLASLt call: the per-call descriptors and heuristics query are inside it, not missing. Fails if
    dispatch_s is ever refit below the call it stands for."""
    host = kernels.host_model()
    for gpu_name in ("h100-sxm", "b200"):
        per_expert_gemm_s = host.dispatch_s * kernels.host_cpu_ratio(gpu_name)
        assert per_expert_gemm_s >= CUBLASLT_CALL_UNMEMOIZED_S, (gpu_name, per_expert_gemm_s)

