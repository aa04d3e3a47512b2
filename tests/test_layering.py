"""The house drawn from the imports: no package imports one on a floor above it (docs: ARCHITECTURE in the README's
map). Read from the source with `ast`, so function-local imports count too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
STAGES = {"sft", "evaluate", "export_onnx", "grpo", "monitor", "pipeline"}  # mlprojects' entry points
OURS = ("registry", "validation", "serving", "mlprojects", "lifecycle")
# What each part may import besides itself (and the standard library and third-party packages).
ALLOWED = {
    "registry": set(),
    "validation": set(),
    "serving": {"registry", "validation"},
    "mlprojects-library": {"registry", "validation"},
    "mlprojects-stage": {"registry", "validation", "serving", "mlprojects-library"},
    "lifecycle": {"registry", "validation", "serving", "mlprojects-library"},
}


def part(module: str) -> str | None:
    top, _, rest = module.partition(".")
    if top not in OURS:
        return None
    if top == "mlprojects":
        if not rest:
            return "mlprojects-library"  # the package itself (its path, for Ray's py_modules and code_paths)
        return "mlprojects-stage" if rest.split(".")[0] in STAGES else "mlprojects-library"
    return top


def modules() -> list[tuple[str, Path]]:
    found = []
    for top in OURS:
        for path in sorted((REPO / top).rglob("*.py")):
            module = ".".join(path.relative_to(REPO).with_suffix("").parts)
            found.append((module.removesuffix(".__init__"), path))
    return found


def imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module,path", modules(), ids=[m for m, _ in modules()])
def test_no_import_runs_up_the_house(module, path):
    own = part(module)
    wrong = sorted(
        name for name in imports(path) if (other := part(name)) and other != own and other not in ALLOWED[own]
    )
    assert not wrong, f"{module} ({own}) imports {wrong}"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stages_do_not_import_each_other(stage):
    path = REPO / "mlprojects" / f"{stage}.py"
    others = {f"mlprojects.{s}" for s in STAGES - {stage}}
    assert not imports(path) & others
