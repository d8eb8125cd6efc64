"""Every bad scenario input gets one clear line naming the field, and exit code 2 (issue 2, item 3)."""

import pytest


def edit(scenario: dict, path: str, value):
    *parents, leaf = path.split(".")
    node = scenario
    for key in parents:
        node = node[key]
    node[leaf] = value
    return scenario


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("cluster.gpu", "h1000", "cluster.gpu: unknown gpu preset 'h1000'"),
        ("cluster.nic", "connectx-99", "cluster.nic: unknown nic preset 'connectx-99'"),
        ("model", "gpt5-ultra", "model: unknown model preset 'gpt5-ultra'"),
        ("parallelism.dp", 3, "parallelism: tp*pp*dp*cp = 2*2*3*1 = 12 but the cluster has 16 GPUs"),
        ("parallelism.tp", 2, None),  # valid control case
        ("training.global_batch_size", 30, "training.global_batch_size: 30 sequences are not divisible"),
        ("parallelism.layers_per_stage", [10, 10], "parallelism.layers_per_stage: sums to 20, expected the model's 24"),
        ("parallelism.layers_per_stage", [24], "parallelism.layers_per_stage: has 1 entries, expected pp*virtual"),
        ("training.precision", "fp64", "training.precision: Input should be"),
        ("training.moe_cuda_graphs", "maybe", "training.moe_cuda_graphs: Input should be a valid boolean"),
        ("cluster.nodes", 0, "cluster.nodes: Input should be greater than 0"),
        ("training.bogus_key", 1, "training.bogus_key: unknown key"),
        ("parallelism.p2p", "sometimes", "parallelism.p2p: Input should be 'auto', 'blocking' or 'async'"),
    ],
)
def test_bad_scenario_field_exits_2_with_one_line(cli, write_scenario, small_scenario, path, value, expected,
                                                  tmp_path):
    code, out, err = cli("run", write_scenario(edit(small_scenario, path, value)), "--json", "--out", tmp_path / "o")
    if expected is None:
        assert code == 0, err
        return
    assert code == 2
    assert err.startswith(f"error: {expected}"), err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_heads_not_divisible_by_tp_is_named(cli, write_scenario, small_scenario):
    small_scenario["model"] = {"layers": 4, "hidden": 1536, "heads": 12, "vocab": 1000}
    small_scenario["parallelism"] = {"tp": 8, "pp": 1, "dp": 2}
    code, _, err = cli("run", write_scenario(small_scenario))
    assert code == 2
    assert err == "error: parallelism.tp: 12 attention heads are not divisible by tp=8\n"


def test_invalid_yaml_reports_line(cli, write_scenario):
    code, _, err = cli("run", write_scenario("name: x\ncluster: [unclosed\n"))
    assert code == 2
    assert "invalid YAML at line" in err and err.count("\n") == 1


def test_yaml_that_is_not_a_mapping(cli, write_scenario):
    code, _, err = cli("run", write_scenario("- just\n- a list\n"))
    assert code == 2 and "expected a mapping of scenario fields" in err


def test_missing_scenario_file(cli, tmp_path):
    code, _, err = cli("run", tmp_path / "nope.yaml")
    assert code == 2 and "no file" in err


def test_missing_required_section(cli, write_scenario, small_scenario):
    del small_scenario["training"]
    code, _, err = cli("run", write_scenario(small_scenario))
    assert code == 2 and err == "error: training: required field is missing\n"


def test_schema_is_json_schema_of_the_scenario(cli):
    import json

    code, out, _ = cli("schema")
    schema = json.loads(out)
    assert code == 0
    assert set(schema["required"]) >= {"cluster", "model", "training"}
    assert "Parallelism" in schema["$defs"]


def test_non_positive_gradient_bucket_is_a_user_error(cli, write_scenario, small_scenario):
    small_scenario["parallelism"]["grad_bucket_size"] = "0 MB"
    code, _, err = cli("run", write_scenario(small_scenario))
    assert code == 2 and err.startswith("error: parallelism.grad_bucket_size: must be a positive size")


def test_scenario_name_cannot_escape_the_runs_folder(cli, write_scenario, small_scenario):
    small_scenario["name"] = "../../escape"
    code, _, err = cli("run", write_scenario(small_scenario))
    assert code == 2 and err.startswith("error: name:")


def test_out_pointing_at_a_file_is_a_user_error(cli, write_scenario, small_scenario, tmp_path):
    target = tmp_path / "a-file"
    target.write_text("keep me")
    code, _, err = cli("run", write_scenario(small_scenario), "--out", target)
    assert code == 2 and "--out" in err and target.read_text() == "keep me"
