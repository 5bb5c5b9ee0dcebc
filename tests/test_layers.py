"""The product's imports follow docs/architecture.md's layers: no module imports one of a higher
layer, and no modules import each other in a circle. Every import counts, also one inside a
function or under TYPE_CHECKING: it is a dependency all the same, only deferred."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOT_PRODUCT = ("tests", "fakes", "benchmarks")
# Lowest first, as docs/architecture.md orders them: a module may import its own layer and those below.
LAYERS = (("utils",), ("models",), ("services",), ("worker",), ("main", "evaluation"))


def product_modules() -> dict[str, Path]:
    return {".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): path
            for path in ROOT.rglob("*.py")
            # Hidden folders are no product: the virtual environments (.venv, .wire-server-venv), .git.
            if path.relative_to(ROOT).parts[0] not in NOT_PRODUCT
            and not any(part.startswith(".") for part in path.relative_to(ROOT).parts)}


def imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The product modules `path` imports (`from package import module` names the module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        found.update(name for name in names if name in modules)
    return found


def import_graph() -> dict[str, set[str]]:
    """Each product module -> the product modules it imports."""
    modules = product_modules()
    return {module: imports(path, modules) - {module} for module, path in modules.items()}


def edges() -> list[tuple[str, str]]:
    return [(module, imported) for module, imports_ in import_graph().items() for imported in imports_]


def layer(module: str) -> int:
    return next(index for index, names in enumerate(LAYERS) if module.split(".")[0] in names)


def test_the_layers_are_written_in_the_architecture_document():
    text = (ROOT / "docs" / "architecture.md").read_text()
    assert " < ".join(" = ".join(f"`{name}`" for name in names) for names in LAYERS) in text


def test_every_product_module_is_in_a_layer():
    assert {module.split(".")[0] for module in product_modules()} <= {name for names in LAYERS for name in names}


def test_no_module_imports_a_higher_layer():
    upward = sorted(f"{module} -> {imported}" for module, imported in edges()
                    if layer(imported) > layer(module))
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(upward)


def test_no_import_cycle():
    graph = import_graph()
    reach = {module: reachable(graph, module) for module in graph}
    circles = {" <-> ".join(sorted(other for other in reach[module] if module in reach[other]))
               for module in graph if module in reach[module]}
    assert not circles, "modules importing each other, through the rest of their circle:\n" + "\n".join(sorted(circles))


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """The modules `start` imports, directly or through others (`start` itself if it is in a circle)."""
    seen, todo = set(), list(graph[start])
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(graph[module])
    return seen
