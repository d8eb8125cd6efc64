"""Transformer Engine module calls on the host side of a block (workload/host_dispatch.py, efficiency.yaml
host_overhead.te_module): against the published CPU times of TransformerEngine#2053 and #761, and the module
calls of Megatron-Core's Transformer Engine layer spec."""

import dataclasses

import pytest

from simcluster.engine.simulation import Simulation
from simcluster.spec import config, hardware
from simcluster.workload import host_dispatch, kernels
from simcluster.workload.ops import _gemm, _memory, layer_ops, shard_for


def _linear(precision: str):
    """te.Linear forward as the block holds it: the GEMM (attn_out, one module call), with its input quantize in fp8
    (TransformerEngine#2053's shape: hidden 2048, 8192 tokens)."""
    shard = dataclasses.replace(shard_for(scenario()), precision=precision)
    gemm = _gemm("attn_out", 8192, 2048, 2048, shard)
    return [_memory("fp8_cast", 0.0, 0.0), gemm] if precision == "fp8" else [gemm]


def scenario(**training):
    return config.from_dict({
        "name": "t",
        "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 1, "nic": "connectx-7",
                    "topology": "rail-fat-tree"},
        "model": {"layers": 4, "hidden": 2048, "heads": 16, "vocab": 32000, "max_seq_len": 2048},
        "training": {"seq_len": 2048, "global_batch_size": 8, "micro_batch_size": 1, **training},
        "parallelism": {"tp": 1, "pp": 1, "dp": 8},
        "network": "analytic",
    })


@pytest.mark.parametrize(("host_of", "published_us"), [("gb200", 99.66), ("gh200", 90.53)])
def test_a_te_linear_forward_takes_the_published_cpu_time_on_grace(host_of, published_us):
    """TransformerEngine#2053: te.Linear's BF16 forward took 99.66 us of CPU on GB200 and 90.53 us on GH200. The
    model has it as the x86 te.Linear (the torch.nn.Linear dispatch x the TE/torch ratio) times the Grace host's
    ratio over x86 (cpu_ratio, from the torch.nn.Linear rows of the same issue): within 1.5% of each measurement."""
    ops, ratio = _linear("bf16"), kernels.host_cpu_ratio(host_of)
    cpu_s = ratio * kernels.host_model().dispatch_s + sum(host_dispatch.module_host_s(ops, "forward", "bf16", ratio))
    assert cpu_s * 1e6 == pytest.approx(published_us, rel=0.015)
    if host_of == "gb200":   # the block of a GB200 (its Grace host) takes it as its host side
        block = kernels.stream_time(ops, hardware.gpu(host_of), "bf16", "forward")
        assert block.host_bound_s() == pytest.approx(cpu_s, rel=1e-12)


def test_an_fp8_te_linear_forward_costs_the_host_at_least_twice_the_bf16_one():
    """TransformerEngine#761: scheduling an FP8 te.Linear takes "more than 2x" the BF16 one's CPU time, its input
    quantize's launch included (a lower bound: the issue's GPU idled). Fails if the fp8 excess drops the quantize's
    launch or the TE/torch ratio."""
    gpu = hardware.gpu("h100-sxm")
    bf16, fp8 = (kernels.stream_time(_linear(p), gpu, p, "forward").host_bound_s() for p in ("bf16", "fp8"))
    assert fp8 / bf16 >= 2.0 - 1e-9


def test_plain_pytorch_ops_keep_the_torch_level_dispatch():
    gpu = hardware.gpu("h100-sxm")
    block = kernels.stream_time(_linear("bf16"), gpu, "bf16")   # no te_phase: a torch.nn.Linear
    assert block.host_bound_s() == pytest.approx(kernels.host_model().dispatch_s, rel=1e-12)


def test_a_megatron_core_layer_makes_five_module_calls_forward_and_backward_and_none_in_the_weight_gradients():
    """Megatron-Core's TE layer spec: TELayerNormColumnParallelLinear (qkv, fc1), TEDotProductAttention,
    TERowParallelLinear (proj, fc2). A module's backward is one call issuing dgrad and wgrad."""
    shard = shard_for(scenario())
    layer = layer_ops(scenario().model, shard)
    calls = {phase: sum(s > 0 for s in host_dispatch.module_host_s(layer[phase], phase, "bf16"))
             for phase in ("forward", "backward_input", "backward_weight")}
    assert calls == {"forward": 5, "backward_input": 5, "backward_weight": 0}


def test_the_plan_adds_the_module_calls_to_transformer_engine_layers_only():
    """A Megatron-Core scenario's layer blocks carry the module excess on the host side (layers x calls x excess);
    a stack without Transformer Engine (torchao's fp8 recipe: torchtitan) keeps one dispatch a kernel."""
    host = kernels.host_model()
    excess = host_dispatch.module_excess_s("bf16", backward=False)
    te_chunk = Simulation(scenario()).plan.chunks[0]
    assert te_chunk.forward_stream.host_extra_s == pytest.approx(4 * 5 * excess, rel=1e-9)
    plain = Simulation(scenario(precision="fp8", fp8_recipe="torchao_tensorwise")).plan.chunks[0]
    assert plain.forward_stream.host_bound_s(host) == pytest.approx(plain.forward_stream.kernels * host.dispatch_s,
                                                                    rel=1e-12)


def test_after_a_host_sync_a_module_calls_excess_is_exposed():
    """After a sync the host has no lead: a short module kernel starts only once the host has run the module's
    Python and launched it, so the stream idles for the excess too (kernels.synced_stall_s)."""
    gpu = hardware.gpu("h100-sxm")
    host = kernels.host_model()
    short = _gemm("attn_out", 64, 256, 256, dataclasses.replace(shard_for(scenario()), precision="bf16"))
    ops = [_memory(kernels.HOST_SYNC, 0.0, 0.0), short]
    plain = kernels.stream_time(ops, gpu, "bf16")
    te = kernels.stream_time(ops, gpu, "bf16", "forward")
    assert plain.stall_s == pytest.approx(host.dispatch_s, rel=1e-9)
    assert te.stall_s - plain.stall_s == pytest.approx(host_dispatch.module_excess_s("bf16", False), rel=1e-9)


@pytest.mark.parametrize(("name", "te"), [("nemo2409-gpt3-175b-128-h100-bf16", True),
                                          ("korthikanti2022-175b-a100", False),   # Megatron-LM 2022's own layer
                                          ("megatron-1.2b-a100-node", False),     # Megatron-LM 2021
                                          ("torchtitan-llama31-8b-8-h100-fp8-32k", False)])
def test_only_transformer_engine_layer_specs_charge_module_calls(name, te):
    """Transformer Engine came after Korthikanti et al.'s 2022 Megatron-LM, which ran on Megatron-Core's pipeline
    engine and optimizer in this model but with its own ParallelAttention (naive attention core)."""
    assert host_dispatch.transformer_engine_layers(config.load(name)) is te


def test_the_ep_overlaps_mlp_sub_stage_carries_its_expert_modules_host_time():
    """With ``ep_overlap`` the MLP node's host side includes its TEGroupedMLP calls (fc1, fc2: two module calls
    each way): tiny expert GEMMs are host-bound, so the MLP sub-stage is their dispatch plus two excesses, and the
    attention sub-stage is the layer's time less it. Fails if the sub-stage drops the phases (plain dispatch)."""
    from types import SimpleNamespace

    from simcluster.parallel import plan

    gpu, host = hardware.gpu("h100-sxm"), kernels.host_model()
    shard = dataclasses.replace(shard_for(scenario()), precision="bf16")
    experts = [_gemm("expert_up", 8, 64, 64, shard), _gemm("expert_down", 8, 64, 64, shard)]
    mlp = SimpleNamespace(forward=experts, backward_input=experts, backward_weight=[])
    layer = kernels.StreamTime(device_s=1.0)   # a layer far longer than its MLP
    stages = plan._ep_substages(mlp, layer, layer, gpu, "bf16", te=True)
    for phase, backward in (("forward", False), ("backward", True)):
        expected = 2 * host.dispatch_s + 2 * host_dispatch.module_excess_s("bf16", backward)
        assert stages[phase][1] == pytest.approx(expected, rel=1e-9)
        assert sum(stages[phase]) == pytest.approx(layer.elapsed_s(), rel=1e-12)
