"""scripts/kineto_call_launches.py: launches placed in the CPU ops that hold them, and the host intervals and stream
gaps split by whether one C++ call launched both kernels."""

from scripts_loader import load_script

module = load_script("kineto_call_launches")


def op(name, ts, dur, tid=1):
    return {"ph": "X", "cat": "cpu_op", "name": name, "ts": ts, "dur": dur, "pid": 1, "tid": tid}


def launch(ts, corr, dur=4.0, tid=1):
    return {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "ts": ts, "dur": dur, "pid": 1, "tid": tid,
            "args": {"correlation": corr}}


def kernel(ts, dur, corr):
    return {"ph": "X", "cat": "kernel", "name": "k", "ts": ts, "dur": dur, "pid": 0, "tid": 7,
            "args": {"correlation": corr}}


# a top-level op (0-300) holding one C++ op that launches twice (10-100: launches at 20 and 35), then, after an op
# boundary, a second op (150-200) launching once (at 160); then a separate top-level op (400-450) launching at 410
EVENTS = [op("autograd::node", 0, 300), op("aten::convolution_backward", 10, 90), op("aten::empty", 25, 2),
          op("aten::add_", 150, 50), op("aten::mul", 400, 50),
          launch(20, 1), launch(35, 2), launch(160, 3), launch(410, 4),
          # kernel 2 queued behind kernel 1 (its launch ended at 39, kernel 1 ends at 60), 1 us idle; kernel 3 waits
          # on the host (launched 160-164 after kernel 2 ended at 100); kernel 4 the same
          kernel(30, 30, 1), kernel(61, 39, 2), kernel(170, 5, 3), kernel(420, 5, 4)]


def test_launches_are_placed_in_their_innermost_and_outermost_ops():
    ops = [e for e in EVENTS if e["cat"] == "cpu_op"]
    launches = [e for e in EVENTS if e["cat"] == "cuda_runtime"]
    place = module.enclosing_ops(ops, launches)
    assert [place[id(launch)] for launch in launches] == [(1, 0), (1, 0), (3, 0), (4, 4)]
    relations = [module.relation(place[id(a)], place[id(b)]) for a, b in zip(launches, launches[1:], strict=False)]
    assert relations == ["one call", "one top-level op", "separate ops"]


def test_intervals_and_gaps_by_relation_and_queue():
    intervals, gaps = module.measure(EVENTS)
    assert intervals == {"one call": [15.0], "one top-level op": [125.0], "separate ops": [250.0]}
    assert gaps == {("one call", True): [1.0], ("one top-level op", False): [70.0], ("separate ops", False): [245.0]}


def test_a_launch_outside_every_op_relates_to_nothing():
    assert module.relation((None, None), (None, None)) == "separate ops"


def test_a_torch_compile_graph_is_not_one_cpp_call():
    # round-32 review: Inductor's wrapper launches a compiled graph's Triton kernels from Python, inside the one
    # CompiledFunction op; such a pair is "one compiled graph", and a C++ op's pair stays "one call"
    events = [op("CompiledFunction", 0, 100), op("aten::convolution_backward", 200, 100),
              launch(10, 1), launch(30, 2), launch(210, 3), launch(230, 4),
              kernel(20, 30, 1), kernel(52, 10, 2), kernel(220, 30, 3), kernel(251, 10, 4)]
    intervals, gaps = module.measure(events)
    assert intervals == {"one compiled graph": [20.0], "separate ops": [180.0], "one call": [20.0]}
    assert gaps == {("one compiled graph", True): [2.0], ("separate ops", False): [158.0], ("one call", True): [1.0]}
