"""Round 34: round 33's additions and the commands attacked (docs/calibration/round-34.md, "Round 34: round 33's
additions and the commands attacked"). Each case failed before its fix:

- two commands given one ``--out`` at once: both found the folder new (or empty), both made it and wrote there, the
  later one's files over the earlier's (two ``laws plot --out X`` started together, 4 of 4 tries; a run's window is
  microseconds, a plot's the drawing of its first figure). A command now claims its folder with an ``O_EXCL`` file
  (``cli.outputs.CLAIM``) before its first file, and the second gives way to ``X-2``;
- two sweeps of other grids the same: both wrote their grid file into the new folder (the later over the earlier)
  and then their shards; the grid file is now written only where none is (``outputs.write_new``);
- ``collective --network chunk --algorithm tree`` of 1 GiB on 4,096 GPUs queued 22 million chunks at once: 9 GB
  resident and still running at 120 s (8 GiB on 1,024 GPUs: 12.7 GB); the chunk model now refuses a class whose
  chunks would take its queue past the memory limit, before they are made;
- two jobs named ``a`` and ``A``, or two fabric files ``F.yaml`` and ``f.yaml`` in a compare or replay: one folder
  or one figure on a file system that ignores case (macOS, Windows), the second's files over the first's;
- ``dp_phase_charges.py ROW ROW`` simulated the row twice and printed it twice: refused, as ``--stretch`` given twice.
"""

from __future__ import annotations

import copy
import os
from types import SimpleNamespace

import pytest

from simcluster.cli import outputs as cli_outputs
from simcluster.cli.compare import slugs
from simcluster.core import outputs
from simcluster.core.errors import ScenarioError
from simcluster.network import store_forward
from simcluster.spec import jobs
from simcluster.studies import sweep
from tests.cli.scenario_files import SMALL, assert_one_line, write_scenario


# ---- 1. one --out, two commands at once -------------------------------------------------------------------------
def test_a_command_writing_into_a_folder_holds_it_against_a_second_one(cli, tmp_path):
    """The first command has made its folder and not yet written a file (a plot being drawn): a run given the same
    --out then writes into X-2, never beside the first command's files."""
    scenario = write_scenario(tmp_path, copy.deepcopy(SMALL))
    out = tmp_path / "x"
    with cli_outputs.fresh_folder(out) as first:
        assert first == out and [p.name for p in out.iterdir()] == [cli_outputs.CLAIM]
        code, _, err = cli("run", scenario, "--network", "analytic", "--out", out)
        assert code == 0, err
        assert f"{out}/ is being written by another command: writing to {out}-2/" in err  # its claim alone
        (first / "mine.txt").write_text("the first command's\n")
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]  # the claim goes when the command is done
    assert (tmp_path / "x-2" / "summary.json").is_file()
    assert not (tmp_path / "x-2" / cli_outputs.CLAIM).exists()


def test_a_folder_taken_between_the_check_and_the_claim_gives_way(tmp_path, capsys):
    """Both commands passed ``output_dir`` while X was new; the second to claim it writes into X-2 and says so."""
    out = tmp_path / "x"
    cli_outputs.output_dir(out)
    with cli_outputs.fresh_folder(out) as first, cli_outputs.fresh_folder(out) as second:
        assert (first, second) == (out, tmp_path / "x-2")
    assert f"{out}/ was taken meanwhile: writing to {out}-2/" in capsys.readouterr().err
    assert list(out.iterdir()) == [] and list(second.iterdir()) == []


@pytest.mark.parametrize("there", [False, True], ids=["new", "empty"])
def test_an_interrupted_command_leaves_the_folder_as_it_found_it(tmp_path, there):
    """The claim changes nothing of the undo: a folder it made is removed, a folder that was there empty emptied."""
    out = tmp_path / "x"
    if there:
        out.mkdir()
    with pytest.raises(KeyboardInterrupt), cli_outputs.fresh_folder(out) as folder:
        (folder / "half.csv").write_text("1,2\n")
        raise KeyboardInterrupt
    assert (list(out.iterdir()) == []) if there else not out.exists()


def test_two_sweeps_of_other_grids_never_share_a_folder(tmp_path, monkeypatch):
    """The second sweep looked at X before the first wrote its grid file there (``_owner`` says new): its grid file
    is not written over the first's, and it takes X-2."""
    out = tmp_path / "x"
    first, _ = sweep.folder_for(out, [SimpleNamespace(key="a")])
    owner, seen = sweep._owner, []

    def stale(folder):  # what the second sweep saw an instant earlier
        if not seen:
            seen.append(folder)
            return ""
        return owner(folder)

    monkeypatch.setattr(sweep, "_owner", stale)
    second, undo = sweep.folder_for(out, [SimpleNamespace(key="b")])
    assert (first, second) == (out, tmp_path / "x-2")
    assert sweep._owner(out) == sweep.grid_key([SimpleNamespace(key="a")])
    assert sweep._owner(second) == sweep.grid_key([SimpleNamespace(key="b")])
    undo()
    assert not second.exists() and out.is_dir()


def test_write_new_writes_only_where_no_file_is(tmp_path):
    path = tmp_path / "grid.json"
    assert outputs.write_new(path, "first\n") is True
    assert outputs.write_new(path, "second\n") is False
    assert path.read_text() == "first\n" and os.listdir(tmp_path) == ["grid.json"]  # no temporary file left


# ---- 2. the chunk model's queue against the memory limit -------------------------------------------------------
def test_chunks_past_the_memory_limit_are_refused_before_they_are_made(cli, monkeypatch):
    """1 GiB of tree all-reduce on 16 GPUs queues tens of thousands of 512 KiB chunks at once; at a 16 MB limit
    (512 B a chunk: 31,250) they do not fit: one line naming --network, before they are made."""
    monkeypatch.setenv("SIMCLUSTER_MEMORY_LIMIT", "16 MB")
    code, _, err = cli("collective", "--network", "chunk", "--algorithm", "tree", "--gpus", "16", "--min-bytes",
                       "1G", "--max-bytes", "1G")
    assert_one_line(code, err, 2)
    assert err.startswith("error: --network: chunk: ") and "limit" in err, err


def test_the_queue_bound_is_the_limit_over_the_bytes_a_chunk_holds(monkeypatch):
    """Closed form: with the limit at exactly K queued chunks, K are accepted and K + 1 refused."""
    network = store_forward.StoreForwardNetwork.__new__(store_forward.StoreForwardNetwork)
    network.chunk_bytes = 512 * 1024.0
    network._memory_limit_bytes = 1000 * store_forward.QUEUED_CHUNK_BYTES
    network._check_queue(1000)
    with pytest.raises(ScenarioError, match=r"^network: chunk: 1,001 chunks"):
        network._check_queue(1001)


def test_a_small_chunk_run_is_accepted(cli):
    """Below the limit nothing is refused: 64 MiB on 8 GPUs, chunked."""
    code, _, err = cli("collective", "--network", "chunk", "--gpus", "8", "--min-bytes", "64M", "--max-bytes",
                         "64M", "--json")
    assert code == 0, err


# ---- 3. names that are one name where case is ignored ----------------------------------------------------------
JOB = {"model": "gpt3-1.3b", "training": {"seq_len": 1024, "global_batch_size": 16, "micro_batch_size": 1},
       "parallelism": {"tp": 1, "pp": 1, "dp": 8}}


def _jobs(first: str, second: str) -> dict:
    return {"name": "two", "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 2,
                                       "topology": "rail-fat-tree"},
            "jobs": [{"name": first, **JOB, "placement": {"nodes": [0]}},
                     {"name": second, **JOB, "placement": {"nodes": [1]}}]}


def test_jobs_named_alike_but_for_case_are_refused():
    with pytest.raises(ScenarioError, match=r"^jobs\.1\.name: 'A' and 'a' differ in case only"):
        jobs.from_dict(_jobs("a", "A"))
    with pytest.raises(ScenarioError, match=r"^jobs\.1\.name: 'a' names two jobs"):
        jobs.from_dict(_jobs("a", "a"))
    assert [job.name for job in jobs.from_dict(_jobs("a", "b")).jobs] == ["a", "b"]


def test_labels_alike_but_for_case_get_two_file_names():
    names = slugs(["fabrics/F.yaml", "fabrics/f.yaml", "rail-fat-tree"])
    assert len({name.casefold() for name in names}) == 3
    assert names[2] == "rail-fat-tree"  # a label alone keeps its plain name
    assert slugs(["a.yaml", "b.yaml"]) == ["a.yaml", "b.yaml"]


def test_a_jobs_file_through_run_is_one_line(cli, tmp_path):
    import yaml

    path = tmp_path / "jobs.yaml"
    path.write_text(yaml.safe_dump(_jobs("llama", "Llama")))
    code, _, err = cli("run", path, "--out", tmp_path / "o")
    assert_one_line(code, err, 2)
    assert "jobs.1.name" in err and not (tmp_path / "o").exists()


# ---- 4. dp_phase_charges.py: a row given twice ------------------------------------------------------------------
def test_dp_phase_charges_refuses_a_row_given_twice_before_simulating(monkeypatch):
    """It simulated the row twice and printed its report twice."""
    from scripts_loader import load_script, refuse_simulation

    dp_phase_charges = load_script("dp_phase_charges")
    refuse_simulation(monkeypatch, dp_phase_charges)
    with pytest.raises(ScenarioError, match=r"^scenario: megatron-1\.7b-h100: given twice"):
        dp_phase_charges.main(["megatron-1.7b-h100", "--stretch", "2", "megatron-1.7b-h100"])


# ---- 5. a label's file name stays inside the output folder --------------------------------------------------------
@pytest.mark.parametrize("label", ["../___", "./___", "../名前", "./фабрика", "...", "..", ".", "_", "../сети/фабрика"])
def test_a_label_of_punctuation_or_another_script_names_a_plain_file_inside_the_folder(tmp_path, label):
    """``replay`` writes each fabric's files into ``OUT/slug(label)/``: ``../___`` was ``..``, the folder's parent
    (the user's events.csv there replaced: 2 of 2 replays), ``./___`` ``.``, the folder itself."""
    (name,) = slugs([label])
    assert name and not name.startswith(".") and "/" not in name
    assert (tmp_path / name).resolve().parent == tmp_path.resolve()


def test_labels_keep_their_plain_names_without_the_leading_dots():
    assert slugs(["./f.yaml", "leaf-spine:oversubscription=2"]) == ["f.yaml", "leaf-spine_oversubscription=2"]
    first, second = slugs(["../___", "./___"])  # no character kept: the hash of each whole label, two names
    assert first != second and len(first) == 12
