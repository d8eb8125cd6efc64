"""Round 28: round 27's scenario and script surface attacked as a hostile user would (docs/calibration/round-28.md,
"Round 28: round 27's new inputs attacked"). Each case failed before its fix: a traceback, a MemoryError, or a run that
went on silently with something other than what was written.

- ``model: llama3_8b_1k_1k_...``: round 27 read NeMo's long-context suffix recursively, one level a suffix, and a
  long chain overflowed Python's stack (RecursionError, a traceback). One suffix is read now.
- ``model: llama3_8b_128k`` names NeMo's recipe at 131072 tokens (a k = 1024 tokens: llama3_8b_128k.py sets
  seq_length 131072); it ran at the 2048-token default, or at whatever seq_len said, without a word.
- ``parallelism.cp`` whose 2cp load-balancing chunks are not whole tokens (seq_len 16 at cp 16): Megatron-LM's
  get_batch_on_this_cp_rank views the sequence as 2cp chunks, the ring's kernels are timed on them.
- ``training.seq_len`` whose s/cp tokens a rank holds do not divide over tp under sequence parallelism (3 tokens
  over tp 2): Megatron-Core's _split_along_first_dim asserts it; simulated with fractional tokens.
- ``training.attention: naive`` with ``parallelism.cp`` > 1 on Megatron-Core, whose unfused DotProductAttention
  asserts "Context parallelism is only supported by TEDotProductAttention!": it was simulated as a ring.
- ``training.moe_router: fused`` (and the other router options) on a dense model: nothing reads it, yet it set the
  Transformer Engine default and, with a stated release before 0.14, was refused for the release, not the model.
- ``scripts/stage_bound.py --split 99999999999x1`` (a MemoryError), ``--split ²`` (int() of a character str.isdigit
  accepts: a ValueError), a step below the bound of the chunks' other work (1 / 0); ``benchmarks/chunk_network.py
  --layout`` of an unknown id (a KeyError, after the three built-in cases were built).

Each refusal: exit 2, one line on stderr starting ``error:`` (a script: ``NAME: error:``) naming the field, no
traceback.
"""

from __future__ import annotations

import copy

import pytest
import yaml

from simcluster.spec import config
from simcluster.studies import validation
from tests.conftest import SMALL
from tests.unit.test_scripts_command_line import ROOT, _as_main

DENSE = copy.deepcopy(SMALL)
MLA = {"layers": 4, "hidden": 1024, "heads": 8, "vocab": 32000, "norm": "rmsnorm",   # tests/unit/test_mla_down_...
       "mla": {"q_lora_rank": 256, "kv_lora_rank": 128, "qk_head_dim": 64, "qk_rope_head_dim": 32, "v_head_dim": 64}}


def refused(code: int, err: str, *words: str) -> None:
    assert code == 2, (code, err[-800:])
    assert err.count("\n") == 1 and "error: " in err and "Traceback" not in err, err
    assert all(w in err for w in words), (words, err)


def _file(tmp_path, data: dict, name: str = "s.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _edited(**edits) -> dict:
    data = copy.deepcopy(DENSE)
    for dotted, value in edits.items():
        section, _, key = dotted.partition("__")
        if key:
            data[section][key] = value
        else:
            data[section] = value
    return data


# ---- the scenario: run, compare, sweep read it alike --------------------------------------------------------------
CASES = {
    # a chain of 1,000 context suffixes: a RecursionError before round 28
    "suffix-chain": (_edited(model="llama3_8b" + "_1k" * 1000), ("model: unknown model preset",)),
    # the suffix names 131072 tokens; the scenario leaves seq_len at its 2048 default
    "suffix-vs-default-seq": (_edited(model="llama3_8b_128k"), ("training.seq_len: 2048", "131072", "llama3-8b")),
    "suffix-vs-stated-seq": (_edited(model="mixtral_8x7b_16k", training__seq_len=4096),
                             ("training.seq_len: 4096", "16384")),
    # 5,000 digits: int() refuses more than 4,300 (a ValueError) where the suffix would take them all
    "suffix-5000-digits": (_edited(model="llama3_8b_" + "1" * 5000 + "k"), ("model: unknown model preset",)),
    # cp 4 on 12 tokens: divisible by cp, not by the 2cp = 8 chunks of the load-balanced split
    "cp-half-token-chunks": (_edited(training__seq_len=12, parallelism={"tp": 2, "pp": 2, "dp": 1, "cp": 4}),
                             ("parallelism.cp", "2*cp = 8")),
    # cp as large as the sequence: one token a rank, half a token a chunk
    "cp-equals-seq": (_edited(training__seq_len=16, training__global_batch_size=4,
                              parallelism={"tp": 1, "pp": 1, "dp": 1, "cp": 16}), ("parallelism.cp", "2*cp = 32")),
    # 3 tokens over tp 2 with sequence parallelism: Megatron's scatter asserts whole shards
    "sp-odd-tokens": (_edited(training__seq_len=3), ("training.seq_len: 3 tokens over cp=1", "tp=2")),
    # the unfused attention with context parallelism: Megatron-Core asserts cp == 1 there
    "cp-naive-attention": (_edited(training__attention="naive", parallelism={"tp": 2, "pp": 2, "dp": 1, "cp": 4}),
                           ("training.attention: naive with cp=4",)),
    # router options on a dense model
    "fused-router-dense": (_edited(training__moe_router="fused"), ("training.moe_router: fused", "model with moe")),
    "fused-router-dense-old-release": (_edited(training__moe_router="fused", training__mcore_version="0.5"),
                                       ("training.moe_router: fused", "model with moe")),
    "router-dtype-dense": (_edited(training__moe_router_dtype="fp32"), ("training.moe_router_dtype: fp32",)),
    "seq-aux-loss-dense": (_edited(training__moe_load_balancing="seq_aux_loss"), ("training.moe_load_balancing",)),
    # rope fusion stated on MLA at the releases whose TransformerConfig raises "multi_latent_attention does not
    # support apply_rope_fusion" (megatron_core 0.11.0 / 0.12.0 wheels): accepted and unread before
    **{f"mla-rope-fusion-{v}": (_edited(model=MLA, training__rope_fusion=True, training__mcore_version=v),
                                ("training.rope_fusion: true with multi-latent attention", f"'{v}' refuses it"))
       for v in ("0.11", "0.12")},
}
READERS = {"run": ("--network", "analytic", "--json"), "compare": ("--network", "analytic", "--json"),
           "sweep": ("--gpus", "16", "--jobs", "1", "--no-plots", "--network", "analytic", "--json")}


@pytest.mark.parametrize("command", READERS)
@pytest.mark.parametrize("case", CASES)
def test_round27_keys_a_user_gets_wrong_are_one_line(cli, tmp_path, command, case):
    data, words = CASES[case]
    code, _out, err = cli(command, _file(tmp_path, data), "--out", tmp_path / "out", *READERS[command])
    refused(code, err, *words)
    assert not (tmp_path / "out").exists()   # refused before anything is written


@pytest.mark.parametrize(("written", "seq_len", "preset"), [
    ("llama3_8b_16k", 16384, "llama3-8b"), ("llama3_8b_128k", 131072, "llama3-8b"),
    ("mixtral_8x22b_64k", 65536, "mixtral-8x22b"), ("Nemotron4-15B-64K", 65536, "nemotron4-15b")])
def test_a_long_context_name_at_its_own_length_is_the_plain_preset(written, seq_len, preset):
    data = _edited(model=written, training__seq_len=seq_len)
    data["parallelism"] = {"tp": 8, "pp": 1, "dp": 1, "cp": 2}
    data["cluster"]["nodes"] = 2
    assert config.from_dict(data).model_preset() == {"name": preset, "chosen_by": "name"}


def test_context_suffix_reads_one_suffix_and_whole_ks():
    assert config.context_suffix("llama3_8b_128k") == ("llama3-8b", 131072)
    assert config.context_suffix("llama3_8b_16k_16k") is None   # the stem read without a suffix: no preset
    assert config.context_suffix("llama3_8b_0k") is None and config.context_suffix("llama3_8b_016k") is None
    assert config.context_suffix("llama3-8b") is None


@pytest.mark.parametrize(("version", "rope_fusion"), [("0.10", True), ("0.11", False), ("0.12", None),
                                                      ("0.13", True)])
def test_mla_rope_fusion_where_its_release_takes_it_still_loads(version, rope_fusion):
    """0.10.0 has no such check, 0.13.0 refuses it only for a rope_type other than yarn (which is not modelled);
    false, or left unset (false for these positions), loads on 0.11 and 0.12."""
    training = {"mcore_version": version} | ({} if rope_fusion is None else {"rope_fusion": rope_fusion})
    data = _edited(model=MLA)
    data["training"] = {**data["training"], **training}
    assert config.from_dict(data).training.rope_fusion is bool(rope_fusion)


def test_cp_on_whole_chunks_and_router_options_at_their_defaults_still_run(cli, tmp_path):
    data = _edited(training__seq_len=16, training__moe_router="unfused",
                   parallelism={"tp": 2, "pp": 1, "dp": 1, "cp": 8})   # 2cp = 16 chunks of one token
    code, _out, err = cli("run", _file(tmp_path, data), "--network", "analytic", "--json", "--out", tmp_path / "o")
    assert code == 0, err


# ---- the scripts --------------------------------------------------------------------------------------------------
STAGE_BOUND = ROOT / "scripts" / "stage_bound.py"


@pytest.mark.parametrize(("split", "needle"), [
    ("99999999999x1", "more than 10002 chunks"),   # a MemoryError before round 28
    ("\u00b2", "is not N or NxK"),                 # '²'.isdigit() but int('²') fails: a ValueError
    ("3x", "is not N or NxK"),
])
def test_stage_bound_split_a_user_gets_wrong(split, needle):
    code, _out, err = _as_main(STAGE_BOUND, "--split", split, "dao2023-gpt3-1.3b-2k-8-a100")
    refused(code, err, "--split", needle)


def test_stage_bound_when_the_published_step_is_below_every_bound(tmp_path):
    """A scenario named as the validation row of the shortest published step, whose vocabulary makes the output layer
    alone outlast it: no factor on the layers keeps the bound within the published step (1 / 0 before round 28)."""
    row = min((c for c in (*validation.cases(), *validation.held_out_cases()) if "step_time_s" in c),
              key=lambda c: c["step_time_s"])
    data = {"name": row["scenario"], "cluster": {"gpu": "h100-sxm", "gpus_per_node": 4, "nodes": 1},
            "model": {"layers": 4, "hidden": 1024, "heads": 8, "vocab": 4_000_000},
            "training": {"seq_len": 2048, "global_batch_size": 16, "micro_batch_size": 1, "precision": "bf16"},
            "parallelism": {"tp": 1, "pp": 4, "dp": 1}}
    code, out, err = _as_main(STAGE_BOUND, str(_file(tmp_path, data)))
    assert code == 0 and "Traceback" not in err, err[-800:]
    assert f"published {row['step_time_s']:.3f} s: below the bound even with no time for the layers" in out


def test_chunk_network_unknown_layout_is_one_line_before_any_run():
    code, out, err = _as_main(ROOT / "benchmarks" / "chunk_network.py", "--layout", "nemo2-llama3-8b-64k-32g-bf17")
    refused(code, err, "--layout: unknown recipe layout 'nemo2-llama3-8b-64k-32g-bf17'",
            "did you mean 'nemo2-llama3-8b-64k-32g-bf16'")
    assert out == ""   # nothing simulated first


def _interrupted(argv: list[str], printed_by: str) -> tuple[list[str], int, str]:
    """Run a script (SIGINT at its default: a background shell ignores it, and Python keeps that), read its stdout up
    to the line starting ``printed_by``, send it a real SIGINT: (lines read, exit code, rest of stderr)."""
    import os
    import signal
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "PYTHONUNBUFFERED": "1"}   # its report reaches the pipe as printed
    child = subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = []
    for line in child.stdout:
        lines.append(line)
        if line.startswith(printed_by):
            break
    child.send_signal(signal.SIGINT)
    _out, err = child.communicate(timeout=120)
    return lines, child.returncode, err


def test_ctrl_c_in_a_script_is_one_line_and_130_keeping_what_it_printed(tmp_path):
    """SIGINT during stage_bound's second scenario (a 64-GPU 70B run of a minute): the first scenario's report stays
    on stdout, stderr is the CLI's one line, the exit code 130 (a KeyboardInterrupt traceback before round 28)."""
    first = {"name": "first", "cluster": {"gpu": "h100-sxm", "gpus_per_node": 4, "nodes": 1},
             "model": {"layers": 4, "hidden": 1024, "heads": 8, "vocab": 32000},
             "training": {"seq_len": 2048, "global_batch_size": 16, "micro_batch_size": 1, "precision": "bf16"},
             "parallelism": {"tp": 1, "pp": 4, "dp": 1}}
    lines, code, err = _interrupted([str(STAGE_BOUND), str(_file(tmp_path, first)),
                                     "nemo2511-llama3-70b-64-h100-fp8"], "  engine step")
    assert code == 130, (code, err[-800:])
    assert err == "interrupted by SIGINT\n"
    assert lines[0].startswith("== first: pp 4")


@pytest.mark.parametrize("script, first_line", [
    # a benchmark whose main parsed sys.argv itself: its first case printed, SIGINT in the second (~3 s of CPU)
    ("benchmarks/chunk_network.py", "interleaved-cp-tp-overlap: step"),
    # a script whose main takes argv: its two one-node rows printed, SIGINT in the 48-node run (~5 s)
    ("scripts/prequel_layouts.py", "one node  10 layers"),
])
def test_ctrl_c_in_a_script_calling_its_own_main_is_one_line_and_130(script, first_line):
    """The scripts that call their own ``main`` (a script_entry.Parser, no script_entry.run) go through
    script_entry.call: a real SIGINT after their first lines is the CLI's one line and 130, those lines kept (a
    KeyboardInterrupt traceback before)."""
    lines, code, err = _interrupted([str(ROOT / script)], first_line)
    assert code == 130, (code, err[-800:])
    assert err == "interrupted by SIGINT\n"
    assert lines and lines[-1].startswith(first_line)


@pytest.mark.parametrize("argv", [
    ["benchmarks/engine.py", "--help"],          # script_entry.run's own help text
    ["scripts/stage_bound.py", "--help"],        # a script_entry.Parser's help, inside script_entry.call
])
def test_a_script_whose_reader_closed_stdout_is_one_line_and_2(argv):
    """``script --help | head -1``: the reader gone before the script writes (its end of the pipe closed at once) is
    the CLI's rule for an output that cannot be written, one line and exit 2 (docs/robustness.md, "Exit codes"), not
    a BrokenPipeError traceback or Python's 'Exception ignored' at its last flush (exit 120 before)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, str(ROOT / argv[0]), *argv[1:]], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
    child.stdout.close()
    err = child.stderr.read()
    assert child.wait(timeout=120) == 2, err[-800:]
    assert err == "error: stdout: closed by its reader (Broken pipe)\n"
