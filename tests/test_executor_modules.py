"""Every executor module loads in-process without a warning (the suite turns warnings into errors): a string
annotation on an endpoint's `docs` (e.g. from `from __future__ import annotations`) makes Jina warn and ignore it."""
import pytest

from tests.conftest import REPO_ROOT, load_script

MODULES = sorted(path.relative_to(REPO_ROOT) for path in (REPO_ROOT / "executors").glob("*/*.py"))


@pytest.mark.parametrize("path", MODULES, ids=str)
def test_executor_module_loads_without_warnings(path):
    module = load_script(str(path))
    executors = [value for value in vars(module).values() if getattr(value, "requests", None)
                 and getattr(value, "__module__", None) == module.__name__]
    assert executors, f"{path} defines no executor with endpoints"
