"""The Llama 3 70B FP8 runs on GB200/GB300 NVL72 offload 40 / 20 layers' activations to Grace memory
(Megatron-Bridge LLAMA3_70B_PRETRAIN_CONFIG_{GB200,GB300}_FP8_CS, cpu_offloading_num_layers); the simulator counts
that as memory only and assumes the copies hide under compute. This holds the assumption against Transformer
Engine's offload schedule and the superchip's bandwidths.

- Schedule (transformer_engine/pytorch/cpu_offload_v1.py, AsyncDoubleBufferGroupOffloadHandler): the offloaded
  groups are spread over the model, group i's copy must finish by layer layer_window_map[i] =
  (layers // offloaded) * (i + 1) - 1 and group i+1's starts there, so each copy has layers // offloaded layers of
  forward to run in (the newer cpu_offload.py gives each copy more: layer i's must finish before layer L - n + i).
- Bandwidth per GPU: NVLink-C2C, 900 GB/s bidirectional per GB200/GB300 superchip (one Grace, two GPUs), 450 GB/s a
  direction shared by two GPUs; Grace's LPDDR5X, up to about 500 GB/s per CPU (recalled), shared by two GPUs.

Fails if the offloaded layer's activations grow or its forward shrinks so that a copy no longer fits in its window
at the shared bandwidth, or if the window were one layer (round 8's bound).
"""

import pytest

from simcluster.parallel import memory
from simcluster.spec import config
from simcluster.workload import kernels, ops

C2C_ONE_WAY_PER_GPU = 900e9 / 2 / 2     # bidirectional per superchip, one direction, two GPUs
LPDDR5X_PER_GPU = 500e9 / 2             # per Grace, two GPUs (R)


def layer_window_map(layers: int, offloaded: int) -> dict[int, int]:
    """Transformer Engine's AsyncDoubleBufferGroupOffloadHandler.layer_window_map, as written there."""
    window, constant = {}, 0
    for i in range(offloaded):
        window[i] = (layers // offloaded) * (i + 1) - 1
        if i < layers % offloaded:
            window[i] += i + 1
            constant = i + 1
        else:
            window[i] += constant
    return window


def test_the_window_map_spreads_the_copies_over_the_model():
    assert layer_window_map(80, 40) == {i: 2 * i + 1 for i in range(40)}
    assert layer_window_map(80, 20) == {i: 4 * i + 3 for i in range(20)}


@pytest.mark.parametrize("name", ["nemo2511-llama3-70b-64-gb200-fp8", "nemo2511-llama3-70b-64-gb300-fp8"])
def test_each_offload_copy_fits_in_its_window(name):
    scenario = config.load(name)
    shard = ops.shard_for(scenario)
    layer = ops.layer_ops(scenario.model, shard)
    forward_s = kernels.stream_time(layer["forward"], scenario.cluster.gpu, shard.precision).elapsed_s()
    offloaded = scenario.training.activation_offload_layers
    window = layer_window_map(scenario.model.layers, offloaded)
    layers_per_copy = min(window[i + 1] - window[i] for i in range(offloaded - 1))
    needed = memory.layer_activation_bytes(scenario.model, shard) / (layers_per_copy * forward_s)
    assert needed < min(C2C_ONE_WAY_PER_GPU, LPDDR5X_PER_GPU)
    # one layer per copy (round 8's bound) would not fit on GB200
    if offloaded == 40:
        assert needed * layers_per_copy > LPDDR5X_PER_GPU
