"""Load a logged pyfunc with the code it was logged with, in any process.

MLflow puts a model's `code_paths` copy on `sys.path`, but a package of the same name that the process has
already imported wins: a version logged before a module moved would then import today's code and fail. So the
model's top-level packages are taken out of `sys.modules` while it loads (it imports its own copies, and keeps
them), then the process's own come back and the model's code directory leaves `sys.path`.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path

import mlflow
from mlflow.models import Model
from mlflow.pyfunc import PyFuncModel

from registry.lookup import artifact_files

log = logging.getLogger(__name__)


def _code_packages(model_dir: Path) -> tuple[Path | None, set[str]]:
    """The model's code directory and the top-level module names in it."""
    code = Model.load(str(model_dir)).flavors.get("python_function", {}).get("code")
    if not code:
        return None, set()
    directory = model_dir / code
    return directory, {p.stem if p.suffix == ".py" else p.name for p in directory.iterdir() if p.name != "__pycache__"}


@contextlib.contextmanager
def _own_code(model_dir: Path):
    directory, names = _code_packages(model_dir)
    if not names:
        yield
        return

    def ours(module: str) -> bool:
        return module.split(".", 1)[0] in names

    saved = {name: sys.modules.pop(name) for name in [m for m in sys.modules if ours(m)]}
    path_before = list(sys.path)
    try:
        yield
    finally:
        for name in [m for m in sys.modules if ours(m)]:
            del sys.modules[name]
        sys.modules.update(saved)
        sys.path[:] = [p for p in sys.path if p in path_before or Path(p).resolve() != directory.resolve()]


def load_pyfunc(model_uri: str, model_config: dict | None = None) -> PyFuncModel:
    """`mlflow.pyfunc.load_model`, each version running its own code (see the module docstring). Both pyfuncs
    read every file while loading, so a download is gone when this returns."""
    with artifact_files(model_uri) as local, _own_code(local):
        model = mlflow.pyfunc.load_model(str(local), model_config=model_config)
    log.debug("loaded %s", model_uri)
    return model
