"""The package tree follows the data flow: imports only go downward, never in a cycle (docs/architecture.md).

Walks every module's ``import`` statements with ``ast`` (those inside functions too: a lazy import is still a
dependency), so the check needs no import of the package and sees what the runtime would load.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "simcluster"

# The layers, lowest first. A module may import its own layer and the layers before it, never one after it.
LAYERS = ("core", "spec", "workload", "parallel", "fabric", "network", "collectives", "replay", "outcomes",
          "engine", "studies", "analysis", "cli")

# The "may import" column of docs/architecture.md's layer table where it is narrower than "the layers before":
# fabric/ and network/ know no workload or parallel plan, outcomes/ no fabric, network or collectives.
MAY_IMPORT = {
    "fabric": ("core", "spec"),
    "network": ("core", "spec", "fabric"),
    "outcomes": ("core", "spec", "workload", "parallel"),
}

# Third-party packages that only one layer may import.
OWNERS = {"simpy": "engine", "matplotlib": "analysis", "typer": "cli", "rich": "cli"}


def module_name(path: Path) -> str:
    parts = ("simcluster",) + path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path, known: set[str]) -> set[str]:
    """Every module of the package (and every third-party top-level package) ``path`` imports."""
    tree = ast.parse(path.read_text(), filename=str(path))
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # ``from pkg import submodule`` depends on the submodule, ``from pkg import name`` on pkg itself
            subs = {f"{module}.{alias.name}" for alias in node.names} & known
            found.update(subs or {module})
            if len(subs) < len(node.names):
                found.add(module)
    return found


def layer_of(module: str) -> str | None:
    if module == "simcluster.__main__":  # `python -m simcluster`: the CLI's entry, as cli/__main__.py
        return "cli"
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def graph() -> dict[str, set[str]]:
    known = set(modules())
    return {name: imports(path, known) for name, path in modules().items()}


def test_every_module_belongs_to_a_layer():
    strays = [m for m in modules() if m != "simcluster" and layer_of(m) is None]
    assert not strays, f"modules outside the layers of docs/architecture.md: {strays}"


def test_no_module_imports_a_later_layer():
    upward = []
    for module, deps in graph().items():
        own = layer_of(module)
        if own is None:  # the package root is the public facade, above every layer
            continue
        for dep in deps:
            if dep == "simcluster":
                upward.append(f"{module} -> the package root")
            elif (target := layer_of(dep)) is not None and LAYERS.index(target) > LAYERS.index(own):
                upward.append(f"{module} -> {dep}")
    assert not upward, "upward imports:\n" + "\n".join(sorted(upward))


def test_narrow_layers_import_only_what_their_row_names():
    """fabric/, network/ and outcomes/ sit after layers they must not use (docs/architecture.md's table): a fabric is
    built without a model, the network models time transfers without a plan, outcomes are functions of scenarios and
    summaries (no simulation, no fabric)."""
    strays = []
    for module, deps in graph().items():
        own = layer_of(module)
        for dep in deps:
            target = layer_of(dep)
            if own in MAY_IMPORT and target is not None and target != own and target not in MAY_IMPORT[own]:
                strays.append(f"{module} -> {dep}")
    assert not strays, "imports outside the layer's row of docs/architecture.md:\n" + "\n".join(sorted(strays))


def test_module_imports_have_no_cycle():
    deps = {m: {d for d in ds if d.startswith("simcluster")} for m, ds in graph().items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        stack.append(module)
        for dep in sorted(deps.get(module, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        stack.pop()
        state[module] = 2
        return None

    for module in sorted(deps):
        if module not in state and (cycle := visit(module)):
            pytest.fail("import cycle: " + " -> ".join(cycle))


@pytest.mark.parametrize("library", sorted(OWNERS))
def test_third_party_libraries_stay_in_their_layer(library):
    owner = OWNERS[library]
    users = sorted(m for m, deps in graph().items()
                   if any(d == library or d.startswith(library + ".") for d in deps) and layer_of(m) != owner)
    assert not users, f"{library} is {owner}/'s alone, imported by {users}"


def test_the_walker_sees_lazy_imports_and_submodules():
    """The check itself: a function-level import counts, and ``from pkg import module`` names the module."""
    deps = graph()
    assert "simcluster.network.flow" in deps["simcluster.network"]  # imported inside make()
    assert "simcluster.replay.formats.protobuf" in deps["simcluster.replay.formats.chakra"]


def test_public_api_is_importable_from_the_package_root():
    import simcluster

    scenario = simcluster.load(None)  # the bundled default
    assert isinstance(scenario, simcluster.Scenario)
    assert callable(simcluster.simulate) and simcluster.Result.__name__ == "Result"
    from simcluster import ScenarioError, simulate  # noqa: F401  (the from-import form works too)
