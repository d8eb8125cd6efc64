"""Gradients of the SC21 runs (Narayanan et al. 2021, Table 1) as the authors' examples/sc21/run_table_1.sh ran them.

run_table_1.sh sets DDP=torch for 1.7B, 3.6B, 7.5B and 18B and DDP=local for every pipelined size (39B, 76B, 145B,
310B). PyTorch DDP all-reduces gradient buckets during the last microbatch's backward; Megatron-LM's 2021 local DDP
all-reduces its contiguous fp16 buffer once after the whole backward (megatron/training.py train_step,
'backward-params-all-reduce') and, having no wgrad-fused accumulation then, adds every microbatch's weight gradients
into that buffer by a kernel of its own (megatron/model/distributed.py _make_param_hook,
param.main_grad.add_(param.grad.data)): read 2 B, read and write 2 B each per parameter (fp16 buffer).
"""

import pytest

from simcluster.spec import config
from simcluster.workload import grad_accumulation

RUN_TABLE_1_DDP = {"1.7b": "torch", "3.6b": "torch", "7.5b": "torch", "18.4b": "torch",
                   "39.1b": "local", "76.1b": "local", "145.6b": "local", "310.1b": "local"}


@pytest.mark.parametrize("size", sorted(RUN_TABLE_1_DDP))
def test_each_run_reduces_and_accumulates_its_gradients_as_its_ddp_did(size):
    scenario = config.load(f"narayanan2021-{size}-a100")
    local = RUN_TABLE_1_DDP[size] == "local"
    assert scenario.parallelism.overlap_grad_reduce is not local
    if scenario.microbatches > 1:  # no 2021 run fused accumulation into the wgrad GEMM: an add kernel a microbatch
        assert scenario.training.gradient_accumulation_fusion is False
    assert scenario.parallelism.grad_reduce_dtype == "fp16"


def test_the_local_ddp_hook_moves_six_bytes_per_parameter_and_microbatch():
    # fp16 main_grad.add_(grad): read the fp16 gradient (2 B), read and write the fp16 buffer (2 + 2 B)
    assert grad_accumulation.bytes_per_param(False, "fp16") == 6
