"""Blackwell GPU against GPU (docs/calibration/round-19.md, "Round 19: Blackwell GPU against GPU").

Independent truths:
- A GB200 device reading (pytorch/pytorch#172523, 2026: torch.cuda's GPULimits on a GB200 system, from
  cudaGetDeviceProperties): bf16 2567.569408 TFLOP/s = SMs x 8192 FLOP x clock, shared memory 40118.272 GB/s = SMs
  x 128 B x clock, HBM 7928.064 GB/s = bus bytes x 2 x memory clock. The first two give SMs x clock; with the 152 SMs
  of efficiency.yaml gemm.sms the clock is the 2062 MHz boost of GB200's FP32 datasheet figure (VeOmni#986), and
  the two figures agree with each other (8192 / 128 = 64). The HBM figure is 7936 bits x 2 x 3996 MHz exactly
  (B200's memory clock, pytorch/ao#4002; 8192 bits would need 3871.1 MHz, 7680 bits 4129.2 MHz): 31/32 of the
  8192-bit bus of 8 HBM3e stacks, as B200's 7680 bits are 15/16 of it.
- A stated assumption, checked where a device reading exists: the enabled share of the bus is the enabled share of
  the stacks' capacity (disabling HBM channels removes their bits and their bytes alike), and the 12-high parts run
  B200's 3996 MHz memory clock (read on a B300 too, round 28: 3996 MHz and 7680 bits, ademeure/QuickRunCUDA
  b300_clean/B300_CANONICAL_REFERENCE.md section 4; not read on a GB300). NVML's total memory (hardware.yaml
  hbm_capacity, each a device reading) is the enabled share of 8 stacks of 24 GiB (8-high, B200 / GB200) or 36 GiB
  (12-high, B300 / GB300) less a reserve under 2 GiB, which only one share n/32 allows: B200 15/16 and GB200 31/32 (both
  matching their bus-width readings, 7680 and 7936 bits), B300 15/16 (its 7680-bit reading, round 28) and GB300 31/32
  (inferred). hardware.yaml hbm_bandwidth is that share of 8192 bits x 2 x 3996 MHz (fails at the datasheets' 8 TB/s for
  GB200, GB300, B300).
- The one same-layout GB300 / GB200 pair whose published settings match the stored presets of both GPUs (Llama 3
  70B FP8-CS on 64 GPUs of one NVL72, Megatron FSDP; docs/calibration.md bw70b): 7.5993 / 7.2496 s a step, 1.048
  (held out; nothing fitted to it). The simulated ratio rests on the per-GPU inputs only (clock by the cube law,
  SMs, HBM, the exponential unit, GB200's measured fp8 GEMM rate at its cap): within 4.5% (3% until round 33;
  GB200's sustained GEMM ceiling, efficiency.yaml sustained_gemm_ceiling_tflops, moved the simulated ratio from
  1.057, +0.8%, to 1.090 against 1.048, +3.9%: GB300 has no such reading; a GB300 ceiling carried from GB200's by
  the cube law, 3061 TFLOP/s, would give 1.058, not applied: docs/calibration/round-33.md "Round 33: review of the GB200
  sustained GEMM ceiling"). A regression, stated, not hidden. Fails if the GB300 clock or tensor rate is
  raised by the ~12% the 8B and 405B GB300 rows would ask for. A regression guard only: a sourced per-GPU input (a
  clock or bandwidth reading) that moves the ratio outside its margin is reported with this test's new margin, never
  tuned back to the row.
- scripts/gpu_pairs.py: ratios of a table's published and simulated TFLOP/s per GPU against the base GPU of the
  same model and recipe, and the settings in which the two scenarios differ.
"""

import json

import pytest
from scripts_loader import load_script

from simcluster.engine import simulate
from simcluster.spec import config, hardware
from simcluster.studies import validation
from simcluster.workload import kernels

# pytorch/pytorch#172523 (GPULimits output "on GB200 Systems")
GB200_BF16_TFLOPS = 2567.569408
GB200_SHMEM_GBPS = 40118.272
GB200_HBM_GBPS = 7928.064
GB200_BOOST_MHZ = 2062.0  # ByteDance-Seed/VeOmni#986, the FP32 datasheet figure's clock
BF16_FLOP_PER_SM_PER_CLOCK = 8192
HBM3E_MHZ = 3996.0  # B200's memory clock, nvidia-smi clocks.max.memory (pytorch/ao#4002)
FULL_BUS_BITS = 8192  # 8 HBM3e stacks x 1024 bits
STACKS = 8
# GiB per stack: 8-high (B200, GB200: 8 x 24 = 192 GiB, sold as 180 / 186 GB) and 12-high (Blackwell Ultra: 8 x 36 =
# 288 GiB, NVIDIA "Inside NVIDIA Blackwell Ultra", 2025) stacks of 24 Gbit HBM3e dies
STACK_GIB = {"b200": 24, "gb200": 24, "b300": 36, "gb300": 36}
RESERVE_GIB = 2.0  # the driver's reserve below NVML's total (0.9-1.5 GiB in the four readings)
SHMEM_BYTES_PER_SM_PER_CLOCK = 128

# NeMo 25.11 performance summary, Llama 3 70B FP8-CS on 64 GPUs: validation.yaml's held-out step times
PAIR_70B = {gpu: f"nemo2511-llama3-70b-64-{gpu}-fp8" for gpu in ("gb200", "gb300")}
HELD_OUT = {c["scenario"]: c for c in validation.held_out_cases()}


def test_gb200_device_reading_is_152_sms_at_the_boost_clock():
    sms = kernels.sm_count("gb200")
    assert sms * SHMEM_BYTES_PER_SM_PER_CLOCK * GB200_BOOST_MHZ * 1e6 / 1e9 == pytest.approx(GB200_SHMEM_GBPS,
                                                                                             rel=1e-4)
    assert sms * BF16_FLOP_PER_SM_PER_CLOCK * GB200_BOOST_MHZ * 1e6 / 1e12 == pytest.approx(GB200_BF16_TFLOPS,
                                                                                            rel=1e-4)
    # 148 SMs (B200's) would need a 2118 MHz clock, above the part's boost
    assert GB200_SHMEM_GBPS * 1e9 / (148 * SHMEM_BYTES_PER_SM_PER_CLOCK) / 1e6 > GB200_BOOST_MHZ * 1.02


def test_gb200_hbm_reading_is_7936_bits_at_b200s_memory_clock():
    assert GB200_HBM_GBPS * 1e9 / (7936 / 8 * 2) == pytest.approx(HBM3E_MHZ * 1e6, rel=1e-9)


def _enabled_share(gpu_name: str) -> float:
    """The one share n/32 of 8 stacks whose capacity lies within RESERVE_GIB above NVML's total memory."""
    nvml_gib = hardware.gpu(gpu_name).hbm_capacity / 2**30
    full_gib = STACKS * STACK_GIB[gpu_name]
    shares = [n / 32 for n in range(1, 33) if 0 <= n / 32 * full_gib - nvml_gib < RESERVE_GIB]
    assert len(shares) == 1, (gpu_name, shares)
    return shares[0]


def test_the_enabled_share_of_capacity_is_the_read_bus_width():
    assert _enabled_share("b200") * FULL_BUS_BITS == 7680  # pytorch/ao#4002
    assert _enabled_share("gb200") * FULL_BUS_BITS == 7936  # pytorch/pytorch#172523


@pytest.mark.parametrize("gpu_name", sorted(STACK_GIB))
def test_hbm_bandwidth_is_the_enabled_bus_at_the_hbm3e_clock(gpu_name):
    bits = _enabled_share(gpu_name) * FULL_BUS_BITS
    assert hardware.gpu(gpu_name).hbm_bandwidth == pytest.approx(bits / 8 * 2 * HBM3E_MHZ * 1e6, rel=0.005)


def test_gb300_over_gb200_on_the_70b_pair():
    steps = {gpu: simulate(config.load(name), check_memory=False).summary["step_time_s"]
             for gpu, name in PAIR_70B.items()}
    published = HELD_OUT[PAIR_70B["gb200"]]["step_time_s"] / HELD_OUT[PAIR_70B["gb300"]]["step_time_s"]
    assert published == pytest.approx(1.048, abs=0.0005)  # 7.5993 / 7.2496 s
    assert steps["gb200"] / steps["gb300"] == pytest.approx(published, rel=0.045)


@pytest.fixture(scope="module")
def gpu_pairs():
    return load_script("gpu_pairs")


def test_gpu_pairs_ratios_and_differences(gpu_pairs, tmp_path):
    rows = [{"scenario": "nemo2511-llama3-8b-8-gb200-fp8", "published_tflops": 1000.0, "simulated_tflops": 1100.0},
            {"scenario": "nemo2511-llama3-8b-8-gb300-fp8", "published_tflops": 1200.0, "simulated_tflops": 1155.0},
            {"scenario": "nemo2511-llama3-70b-64-gb300-fp8", "published_tflops": 5.0, "simulated_tflops": 5.0}]
    for row in rows:   # the fields every validate --json case has
        row.update(family="nemo_2511", precision="fp8", error=row["simulated_tflops"] / row["published_tflops"] - 1)
    path = tmp_path / "rows.json"
    path.write_text(json.dumps({"cases": rows}))
    pairs = gpu_pairs.pairs(gpu_pairs.rows([str(path)], "nemo2511"), "gb200")
    assert len(pairs) == 1  # the 70B row has no GB200 twin in this table
    name, base, published, simulated, differs = pairs[0]
    assert (name, base) == ("nemo2511-llama3-8b-8-gb300-fp8", "nemo2511-llama3-8b-8-gb200-fp8")
    assert published == pytest.approx(1.2)
    assert simulated == pytest.approx(1.05)
    assert differs == "nic connectx-8/connectx-7"


@pytest.mark.parametrize(("text", "message"), [
    (None, "cannot read"),
    ("[1, 2]", "expected an object with a non-empty list 'cases'"),
    ('{"cases": [{"scenario": "nemo2511-x", "family": "f", "precision": "fp8", "error": 0.1, '
     '"published_tflops": 0, "simulated_tflops": 1.0}]}', "cases[0].published_tflops: missing or not a positive"),
])
def test_gpu_pairs_bad_input_is_one_line_and_exit_code_2(gpu_pairs, tmp_path, capsys, text, message):
    path = tmp_path / "rows.json"
    if text is not None:
        path.write_text(text)
    assert gpu_pairs.main([str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
