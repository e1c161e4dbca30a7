"""The folder tree is the layer diagram: imports flow one way, and no module imports itself
back through a cycle. Every import counts, also one inside a function."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "ppgen"

#: bottom to top; a module may import only from lower layers (or from its own subpackage)
LAYERS = [
    ("ppgen.data", "ppgen.nn"),
    ("ppgen.figures",),
    ("ppgen.distributions",),
    ("ppgen.priors", "ppgen.likelihoods"),
    ("ppgen.models",),
    ("ppgen.guides",),
    ("ppgen.infer",),
    ("ppgen.evaluate",),
    ("ppgen.diagnostics",),
    ("ppgen.companions",),
    ("ppgen.runs",),
    ("ppgen.cli", "ppgen"),
    ("ppgen.__main__",),
]
LAYER = {unit: i for i, units in enumerate(LAYERS) for unit in units}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def unit_of(module: str) -> str:
    """The layer unit a module belongs to: its first-level subpackage or module under ppgen."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def imports_of(module: str) -> set[str]:
    """Every ppgen module that ``module`` imports, anywhere in its body."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    return imports_in(path.read_text(), module, package)


def imports_in(source: str, module: str, package: str) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # "from pkg import submodule" imports the submodule
            names = [f"{target}.{a.name}" if f"{target}.{a.name}" in MODULES else target for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in MODULES:  # "ppgen.x.y.attr" -> the module that defines it
                name = name.rpartition(".")[0]
            if name.startswith("ppgen") and name != module:
                found.add(name)
    return found


GRAPH = {m: imports_of(m) for m in MODULES}


def test_every_module_has_a_layer():
    assert {unit_of(m) for m in MODULES} <= set(LAYER), sorted({unit_of(m) for m in MODULES} - set(LAYER))


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_flow_down(module):
    here = unit_of(module)
    upward = sorted(t for t in GRAPH[module] if unit_of(t) != here and LAYER[unit_of(t)] >= LAYER[here])
    assert not upward, f"{module} (layer {here}) imports {upward}, which are not below it"


def test_no_import_cycles():
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in sorted(GRAPH[m]):
            if state.get(t) == "open":
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = "done"

    for m in sorted(MODULES):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_upward_imports_inside_functions():
    """The rules above can fail: an import hidden in a function body is found and judged."""
    source = "import torch\n\ndef f():\n    from ..runs import train_run\n    from ..nn import MLP\n"
    found = imports_in(source, "ppgen.models.vae", "ppgen.models")
    assert found == {"ppgen.runs", "ppgen.nn"}
    upward = [t for t in found if LAYER[unit_of(t)] >= LAYER[unit_of("ppgen.models.vae")]]
    assert upward == ["ppgen.runs"]


@pytest.mark.parametrize("module", sorted(m for m in MODULES if unit_of(m) in ("ppgen.models", "ppgen.guides")))
def test_models_and_guides_state_densities_only(module):
    """p(x, z) and q(z | x) only: no figures, progress bars, optimisers or checkpoints."""
    source = MODULES[module].read_text()
    tree = ast.parse(source)
    third_party = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    third_party |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level}
    assert not third_party & {"matplotlib", "tqdm", "arviz", "xarray"}, module
    assert not {unit_of(t) for t in GRAPH[module]} & {"ppgen.figures"}, module
    for word in ("torch.optim", "torch.save", "torch.load", ".backward("):
        assert word not in source, f"{module} contains {word!r}"
