"""The package's public API: every name resolves, the verbs stay functions whatever was
imported before, and ``import hybridstore`` loads neither the store nor the client."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest
from support.oci_builder import SampleContent
from support.registry import Registry

import hybridstore

VERBS = ("pull", "pull_many", "push", "push_all", "copy", "inspect", "extract", "list_referrers")


def test_all_lists_exactly_the_lazy_names() -> None:
    assert set(hybridstore.__all__) == {*hybridstore._API, "__version__"}


@pytest.mark.parametrize("name", sorted(hybridstore._API))
def test_every_public_name_is_the_definition_it_names(name: str) -> None:
    import importlib

    module, attribute = hybridstore._API[name]
    assert getattr(hybridstore, name) is getattr(importlib.import_module(module), attribute)


@pytest.mark.parametrize("name", VERBS)
def test_verbs_take_typed_keywords(name: str) -> None:
    """No ``**kwargs: Any``: keywords are parameters or the typed ``CopySettings``."""
    params = inspect.signature(getattr(hybridstore, name)).parameters.values()
    for p in params:
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            assert p.annotation == "Unpack[CopySettings]", (name, p)


def test_a_verb_stays_a_function_after_its_module_was_imported() -> None:
    code = (
        "import hybridstore.pull, hybridstore.copy\n"
        "from hybridstore.pull import pull_many\n"
        "from hybridstore import copy, pull\n"
        "import hybridstore\n"
        "assert callable(pull) and pull.__module__ == 'hybridstore.pull', pull\n"
        "assert callable(copy) and hybridstore.copy is copy, copy\n"
        "assert pull_many.__name__ == 'pull_many'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_importing_the_package_loads_no_store_or_client() -> None:
    code = (
        "import sys, hybridstore\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('hybridstore.') "
        "or m in ('http.client', 'requests', 'ssl'))\n"
        "print(' '.join(loaded))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.split()
    assert out == []


@pytest.mark.registry
def test_the_library_tour_example_runs_end_to_end(
    registry_content: SampleContent, registry: Registry, tmp_path: Path
) -> None:
    """``examples/library_tour.py`` (the README's library section) against a real registry."""
    image, chart = registry_content.image, registry_content.chart
    tour = Path(__file__).resolve().parent.parent / "examples" / "library_tour.py"
    args = [image.ref, chart.ref, registry.host_port, str(tmp_path), "--plain-http"]
    done = subprocess.run(
        [sys.executable, str(tour), *args], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "chart " in done.stdout and "pushed 2 refs" in done.stdout
    assert (tmp_path / "site.tar.zst").is_file()
    restored = hybridstore.OCILayout.open(tmp_path / "restored")
    assert sorted(restored.refs()) == sorted([image.ref, chart.ref])
    assert list((tmp_path / "vendor").glob("*.tgz")), "the chart .tgz was extracted"
