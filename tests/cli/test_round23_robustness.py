"""Round 23: the files and outputs of run, compare and sweep as a user gets them wrong (malformed YAML, a missing
file, a folder, an empty or binary file; an output folder that holds a user's files; an output under a file), the
glossary (`explain`) with an unknown term, and Ctrl-C during `compare` (the runs finished are kept, as `sweep` and
`validate` keep theirs: tests/cli/test_hostile_inputs.py)."""

from __future__ import annotations

import json
import signal

import pytest

from simcluster.cli.app import Interrupted
from tests.conftest import SMALL

COMMANDS = {"run": ("--json",), "compare": ("--network", "analytic", "--json"),
            "sweep": ("--gpus", "16", "--jobs", "1", "--no-plots", "--network", "analytic", "--json")}


def one_line(code: int, err: str, *words: str) -> None:
    assert code == 2, (code, err)
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    assert all(w in err for w in words), err


@pytest.fixture
def bad_files(tmp_path):
    files = {"malformed": ("name: x\ncluster: [1\n", "invalid YAML at line"), "empty": ("", "empty"),
             "binary": (bytes(range(1, 256)) * 8, "s.binary.yaml"), "list": ("- 1\n- 2\n", "mapping")}
    out = {}
    for name, (content, needle) in files.items():
        path = tmp_path / f"s.{name}.yaml"
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        out[name] = (path, needle)
    out["missing"] = (tmp_path / "missing.yaml", "no file")
    folder = tmp_path / "folder.yaml"
    folder.mkdir()
    out["folder"] = (folder, "not a regular file")
    return out


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", ["malformed", "empty", "binary", "list", "missing", "folder"])
def test_a_bad_scenario_file_is_one_line(cli, bad_files, tmp_path, command, case):
    path, needle = bad_files[case]
    code, out, err = cli(command, path, "--out", tmp_path / "out", *COMMANDS[command])
    one_line(code, err, needle)
    assert out == "" and not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", COMMANDS)
def test_an_out_folder_holding_a_users_files_is_never_written_into(cli, write_scenario, tmp_path, command):
    """The documented rule (NEVER_OVERWRITTEN): a folder that holds files gives way to its sibling NAME-2."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes\n")
    code, out, err = cli(command, write_scenario(SMALL), "--out", mine, *COMMANDS[command])
    assert code == 0, err
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    assert (mine / "notes.txt").read_text() == "my notes\n"
    assert any((tmp_path / "mine-2").iterdir())
    if command in ("compare", "sweep"):  # a finished run's JSON says so, with the keys an interrupted one sets
        written = json.loads((tmp_path / "mine-2" / f"{command}.json").read_text())
        assert (json.loads(out)["partial"], written["partial"], written["pending"]) == (False, False, 0)


def test_compare_out_under_a_file_is_refused_before_simulating(cli, write_scenario, tmp_path, monkeypatch):
    from simcluster.studies import compare as study

    monkeypatch.setattr(study, "run_point", lambda *a, **k: pytest.fail("simulated before checking --out"))
    a_file = tmp_path / "file"
    a_file.write_text("x")
    code, _, err = cli("compare", write_scenario(SMALL), "--out", a_file / "sub")
    one_line(code, err, "--out", "is a file, not a folder")
    assert a_file.read_text() == "x"


@pytest.mark.parametrize("term", ["bogus", "", "summary.symmetry.no_such_key\n"])
def test_explain_an_unknown_term_is_one_line(cli, term):
    code, _, err = cli("explain", term)
    one_line(code, err, "TERM", "not in the glossary")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_compare_keeps_the_finished_runs_marked_partial(cli, write_scenario, tmp_path, monkeypatch,
                                                                   signum):
    """Ctrl-C after the first of three fabrics: exit 130 (143), one line, and compare.csv/json of the finished run,
    the JSON marked partial with the runs pending."""
    from simcluster.studies import compare as study

    real, calls = study.run_point, []

    def run_point(*args, **kwargs):
        if len(calls) == 1:
            raise Interrupted(signum)
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(study, "run_point", run_point)
    code, out, err = cli("compare", write_scenario(SMALL), "--topology", "rail-fat-tree", "--topology",
                         "leaf-spine", "--topology", "fat-tree", "--network", "analytic", "--out", tmp_path / "c")
    assert code == 128 + signum and err.count("\n") == 1, err
    assert err.startswith(f"interrupted by {signal.Signals(signum).name}: 1 of 3 runs finished; wrote compare.csv")
    report = json.loads((tmp_path / "c" / "compare.json").read_text())
    assert report["partial"] is True and report["pending"] == 2
    assert [r["label"] for r in report["runs"]] == calls
    assert len((tmp_path / "c" / "compare.csv").read_text().splitlines()) == 2  # header + the finished run


def test_compare_interrupted_before_any_run_writes_nothing(cli, write_scenario, tmp_path, monkeypatch):
    from simcluster.studies import compare as study

    monkeypatch.setattr(study, "run_point", lambda *a, **k: (_ for _ in ()).throw(Interrupted(signal.SIGINT)))
    code, _, err = cli("compare", write_scenario(SMALL), "--out", tmp_path / "c")
    assert code == 130 and err == "interrupted by SIGINT: 0 of 1 runs finished\n", err
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("term, name", [("symmetry.lower_bound_s", "symmetry lower bound"),
                                        ("symmetry.lower_bound_pct", "symmetry lower bound"),
                                        ("accuracy.stack", "software stack"),
                                        ("accuracy.stack_calibrated", "software stack"),
                                        ("accuracy.stack_coverage", "software stack")])
def test_explain_knows_the_summary_keys_of_rounds_20_to_22(cli, term, name):
    """Each dotted key is a key of the summary entry the glossary names (engine.results.symmetry,
    outcomes.accuracy_card.card: no simulation needed)."""
    from simcluster.engine import results
    from simcluster.outcomes import accuracy_card
    from simcluster.spec import config

    entries = {"symmetry": results.symmetry(None, 1, 1.0), "accuracy": accuracy_card.card(config.from_dict(SMALL))}
    section, key = term.split(".")
    assert key in entries[section]
    for asked in (term, f"summary.{term}"):  # as written, or as an entry's ``where`` names it
        code, out, _ = cli("explain", asked)
        assert code == 0 and out.startswith(f"{name}: ") and key in out


def test_the_bounds_admit_the_largest_real_values(monkeypatch):
    """A bound that refuses a physically possible value is a defect: a million-GPU data-parallel degree, 2^20 GPUs
    (given the memory the fabric needs: the documented SIMCLUSTER_MEMORY_LIMIT), a 10M-token sequence (Llama 4
    Scout's context), a million experts (PEER, arXiv:2407.04153), 10^5 hot spares."""
    from simcluster.spec import config, model, reliability

    degrees = {axis: 10**6 for axis in ("tp", "pp", "dp", "cp", "ep", "etp")}
    assert config.Parallelism.model_validate(degrees).dp == 10**6
    assert config.Training.model_validate({"seq_len": 10**7, "global_batch_size": 10**6}).seq_len == 10**7
    assert model.MoESpec.model_validate({"experts": 1024**2, "top_k": 16, "ffn_hidden": 128}).experts == 1024**2
    assert reliability.Reliability.model_validate({"hot_spares": 10**5}).hot_spares == 10**5
    assert reliability.MAX_NODES >= config.MAX_GPUS  # every node of the largest cluster may be a spare
    million = {**SMALL, "cluster": {**SMALL["cluster"], "gpus_per_node": 8, "nodes": 2**17},
               "parallelism": {"tp": 8, "pp": 1, "dp": 2**17}, "training": {**SMALL["training"],
                                                                          "global_batch_size": 2**17}}
    monkeypatch.setenv("SIMCLUSTER_MEMORY_LIMIT", "64 GiB")
    assert config.from_dict(million).cluster.gpus == 2**20
