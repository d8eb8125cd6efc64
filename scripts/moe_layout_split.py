"""A row against its twin on another GPU, with the row's layout moved onto the twin's cluster: which part of the
simulated per-GPU throughput ratio is the layout and which the GPU and host (docs/calibration/round-19.md, "Round 19:
MoE on B200 against NVL72").

    PYTHONPATH=. python scripts/moe_layout_split.py nemo2511-deepseek-v3-256-b200-fp8 nemo2511-deepseek-v3-256-gb200-fp8

Three simulations: the row, the twin, and the row's scenario on the twin's cluster (its GPU, GPUs per NVLink domain
and NIC; nodes so that the GPU count is the row's). Per-GPU throughput is tokens per step / (GPUs x step), so the
simulated ratio row / twin is the product of a layout factor (row's layout on the twin's cluster against the twin)
and a GPU-and-host factor (row against its layout on the twin's cluster): ``split``. The published ratio comes from
validation.yaml's step times. A diagnostic: nothing is fitted or written.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from simcluster.core.errors import ScenarioError
from simcluster.engine import simulate
from simcluster.spec import config
from simcluster.studies import validation


@dataclass(frozen=True)
class Split:
    published: float  # published per-GPU throughput ratio, row / twin
    simulated: float  # simulated, row / twin
    layout: float  # row's layout on the twin's cluster / twin, simulated
    gpu_host: float  # row / row's layout on the twin's cluster, simulated

    @property
    def ratio_error(self) -> float:
        return self.simulated / self.published - 1


def per_gpu(tokens: float, gpus: int, step_s: float) -> float:
    """Tokens per GPU-second."""
    return tokens / (gpus * step_s)


def split(row: tuple[float, int, float, float], twin: tuple[float, int, float, float], moved_step_s: float) -> Split:
    """``row`` and ``twin`` are (tokens per step, GPUs, published step, simulated step); ``moved_step_s`` is the
    row's scenario simulated on the twin's cluster (same tokens and GPUs as the row)."""
    (t_r, g_r, pub_r, sim_r), (t_t, g_t, pub_t, sim_t) = row, twin
    twin_sim = per_gpu(t_t, g_t, sim_t)
    moved = per_gpu(t_r, g_r, moved_step_s)
    return Split(published=per_gpu(t_r, g_r, pub_r) / per_gpu(t_t, g_t, pub_t),
                 simulated=per_gpu(t_r, g_r, sim_r) / twin_sim,
                 layout=moved / twin_sim, gpu_host=per_gpu(t_r, g_r, sim_r) / moved)


def moved_scenario(row: str, twin: str):
    """The row's scenario on the twin's GPU, NVLink domain and NIC, with the row's GPU count."""
    a, b = config.load(row), config.load(twin)
    data = a.model_dump(mode="json", exclude_none=True)
    per_domain = b.cluster.gpus_per_node
    gpus = a.cluster.gpus_per_node * a.cluster.nodes
    if gpus % per_domain:
        per_domain = gpus  # fewer GPUs than one domain of the twin: one domain
    data["cluster"].update(gpu=b.cluster.gpu.name, gpus_per_node=per_domain, nodes=gpus // per_domain,
                           nic=b.cluster.nic.name)
    return config.from_dict(data)


def main(argv: list[str]) -> int:
    row, twin = argv
    cases = {c["scenario"]: c for c in validation.held_out_cases() + validation.cases()}
    for name in (row, twin):  # the published step of each: both validation rows, checked before simulating
        if name not in cases:
            raise ScenarioError(name, "not a validation row (calibration or held out; simcluster validate lists "
                                "them)")
    out = []
    for name in (row, twin):
        s = config.load(name)
        gpus = s.cluster.gpus_per_node * s.cluster.nodes
        published = validation.published_step_s(cases[name], s)
        out.append((s.tokens_per_step, gpus, published, simulate(s).summary["step_time_s"]))
    moved = simulate(moved_scenario(row, twin)).summary["step_time_s"]
    r = split(out[0], out[1], moved)
    print(f"{row} / {twin}: published {r.published:.3f}, simulated {r.simulated:.3f} ({r.ratio_error:+.1%}); "
          f"simulated = layout {r.layout:.3f} x GPU and host {r.gpu_host:.3f} (row's layout on the twin's "
          f"cluster: {moved:.3f} s a step)")
    return 0


if __name__ == "__main__":
    from simcluster.core.script_entry import run

    sys.exit(run(main, sys.argv[1:], __doc__, words=(2, 2), usage="ROW TWIN (two validation rows)"))
