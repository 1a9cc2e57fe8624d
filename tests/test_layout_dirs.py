"""Which directories become layouts, which layouts every command refuses, and what a failed
first write leaves behind: ``--layout`` at someone's files, unsupported versions, hostile
nesting, failed pulls and imports into new directories. Real processes and a real registry."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from support.oci_builder import LayoutBuilder, push_built
from support.registry import Registry

from hybridstore.archive.importer import import_archive
from hybridstore.errors import ConflictError, InvalidArchiveError
from hybridstore.store.layout import OCILayout

HYBRIDSTORE = [sys.executable, "-m", "hybridstore.cli"]
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DEEP = b"[" * 100_000 + b"]" * 100_000


def hs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HYBRIDSTORE, *args], capture_output=True, text=True, timeout=120)


def assert_one_line(done: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert done.returncode == code, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    for word in words:
        assert word in done.stderr


@pytest.fixture
def pushed(
    registry: Registry, oci_builder: Callable[..., LayoutBuilder], repo_name: str
) -> str:
    built = oci_builder("src").image("v1", layers=1)
    push_built(built, registry, f"{repo_name}:v1")
    return f"{registry.host_port}/{repo_name}:v1"


def test_pull_refuses_a_non_empty_directory_that_is_not_a_layout(
    pushed: str, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "main.py").write_text("print('mine')\n")
    done = hs("pull", "--plain-http", "--layout", str(project), pushed)
    assert_one_line(done, 8, "not empty and is not an OCI layout", "--init")
    assert sorted(p.name for p in project.iterdir()) == ["main.py"]

    adopted = hs("pull", "--plain-http", "--init", "--layout", str(project), pushed)
    assert adopted.returncode == 0, adopted.stderr
    assert OCILayout.open(project).refs().keys() == {pushed}
    assert (project / "main.py").read_text() == "print('mine')\n"


def test_an_empty_directory_and_an_existing_layout_need_no_init(
    pushed: str, tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    for _ in range(2):  # the second run finds a layout
        assert hs("pull", "--plain-http", "--layout", str(empty), pushed).returncode == 0


def test_import_refuses_a_foreign_directory_unless_init(
    oci_builder: Callable[..., LayoutBuilder], tmp_path: Path
) -> None:
    b = oci_builder("src")
    b.image("registry.example.com/a:1")
    archive = tmp_path / "a.tar"
    assert hs("export", "--layout", str(b.path), "-o", str(archive)).returncode == 0
    foreign = tmp_path / "docs"
    foreign.mkdir()
    (foreign / "README").write_text("x")
    with pytest.raises(ConflictError, match="--init"):
        import_archive(archive, foreign, cache=tmp_path / "cache")
    assert [p.name for p in foreign.iterdir()] == ["README"]
    done = hs("--cache", str(tmp_path / "cache"), "import", str(archive), "--layout",
              str(foreign), "--init")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "registry.example.com/a:1" in OCILayout.open(foreign).refs()


@pytest.mark.parametrize("nested", [False, True])
def test_a_failed_import_into_a_new_directory_leaves_nothing(
    oci_builder: Callable[..., LayoutBuilder], tmp_path: Path, nested: bool
) -> None:
    b = oci_builder("src")
    img = b.image("registry.example.com/a:1")
    archive = tmp_path / "a.tar"
    assert hs("export", "--layout", str(b.path), "-o", str(archive)).returncode == 0
    with tarfile.open(archive) as tar:  # the same archive without its config blob
        members = [(m, (f := tar.extractfile(m)) and f.read()) for m in tar.getmembers()]
    config = f"blobs/sha256/{img.config.digest.split(':')[1]}"
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
        for member, data in members:
            if member.name != config:
                tar.addfile(member, io.BytesIO(data) if data is not None else None)
    dest = tmp_path / "new" / "deeper" if nested else tmp_path / "new"
    with pytest.raises(InvalidArchiveError, match="incomplete"):
        import_archive(archive, dest, cache=tmp_path / "cache")
    assert not (tmp_path / "new").exists()


def test_a_failed_pull_into_new_parents_leaves_nothing(registry: Registry, tmp_path: Path) -> None:
    dest = tmp_path / "a" / "b"
    done = hs("pull", "--plain-http", "--layout", str(dest), f"{registry.host_port}/no/such:tag")
    assert_one_line(done, 4)
    assert not (tmp_path / "a").exists()


def unsupported_layouts(b: LayoutBuilder) -> dict[str, Callable[[], None]]:
    index = b.path / "index.json"
    layout = b.path / "oci-layout"

    def set_index(**fields: object) -> Callable[[], None]:
        return lambda: index.write_text(json.dumps({**json.loads(index.read_text()), **fields}))

    return {
        "index schemaVersion 3": set_index(schemaVersion=3),
        "index of another media type": set_index(mediaType=MANIFEST),
        "oci-layout 2.0.0": lambda: layout.write_text('{"imageLayoutVersion":"2.0.0"}'),
        "deep index.json": lambda: index.write_bytes(DEEP),
        "deep oci-layout": lambda: layout.write_bytes(DEEP[:20_000] + DEEP[-20_000:]),
        "truncated index.json": lambda: index.write_bytes(index.read_bytes()[:-3]),
        "repeated key": lambda: index.write_text(
            '{"schemaVersion":2,"schemaVersion":2,"manifests":[]}'
        ),
    }  # fmt: skip


CASES = ["index schemaVersion 3", "index of another media type", "oci-layout 2.0.0",
         "deep index.json", "deep oci-layout", "truncated index.json", "repeated key"]  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_every_command_refuses_an_unsupported_layout(
    pushed: str, oci_builder: Callable[..., LayoutBuilder], tmp_path: Path, case: str
) -> None:
    """Every command reads a layout through the same two checks: all of them are run on
    the version cases, the first (a writer) on the malformed ones."""
    b = oci_builder("l")
    img = b.image("registry.example.com/a:1")
    unsupported_layouts(b)[case]()
    before = {p: p.read_bytes() for p in (b.path / "index.json", b.path / "oci-layout")}
    path = str(b.path)
    commands = [
        ["tag", "--layout", path, img.digest, "registry.example.com/a:2"],
        ["refs", "--layout", path],
        ["pull", "--plain-http", "--layout", path, pushed],
        ["export", "--layout", path, "-o", str(tmp_path / "x.tar")],
        ["inspect", "--layout", path, "registry.example.com/a:1"],
    ]
    for args in commands if case in ("index schemaVersion 3", "oci-layout 2.0.0") else commands[:1]:
        done = hs(*args)
        assert_one_line(done, 10)
        words = ("unsupported", "too deeply nested", "repeats", "not an image", "not valid JSON")
        assert any(w in done.stderr for w in words), done.stderr
    assert {p: p.read_bytes() for p in before} == before  # nothing was rewritten


def test_import_refuses_an_archive_with_a_deep_index(
    oci_builder: Callable[..., LayoutBuilder], tmp_path: Path
) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", DEEP)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    archive = tmp_path / "deep.tar"
    archive.write_bytes(buf.getvalue())
    done = hs("--cache", str(tmp_path / "cache"), "import", str(archive), "--layout",
              str(tmp_path / "dest"))  # fmt: skip
    assert_one_line(done, 10, "too deeply nested")
    assert not (tmp_path / "dest").exists()


def test_an_absurd_declared_size_is_refused_before_anything_is_read(
    oci_builder: Callable[..., LayoutBuilder], tmp_path: Path
) -> None:
    """Fault case 17: a manifest descriptor of 2^62 bytes is over the document cap, so it is
    refused on its size alone: by a layout reader, and by import before a byte is written."""
    b = oci_builder("l")
    b.image("registry.example.com/a:1")
    index = json.loads((b.path / "index.json").read_text())
    index["manifests"][0]["size"] = 1 << 62
    (b.path / "index.json").write_text(json.dumps(index))
    done = hs("inspect", "--layout", str(b.path), "registry.example.com/a:1")
    assert_one_line(done, 10, str(1 << 62))
    archive = tmp_path / "absurd.tar"
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("oci-layout", "index.json"):
            tar.add(b.path / name, name)
        manifest = b.path / "blobs/sha256" / index["manifests"][0]["digest"].split(":")[1]
        tar.add(manifest, f"blobs/sha256/{manifest.name}")
    with pytest.raises(InvalidArchiveError, match="but its descriptor declares"):
        import_archive(archive, tmp_path / "dest", cache=tmp_path / "cache")
    written = [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.stat().st_size]
    assert [p.name for p in written if p.parent.name != "cache"] == []  # no blob, no partial


def test_a_failed_copy_into_a_new_layout_leaves_nothing(
    oci_builder: Callable[..., LayoutBuilder], tmp_path: Path
) -> None:
    b = oci_builder("src")
    img = b.image("a", layers=1)
    b.blob_path(img.layers[0].digest).unlink()  # the source cannot deliver its layer
    done = hs("--cache", str(tmp_path / "cache"), "copy", f"oci:{b.path}:a",
              f"oci:{tmp_path / 'new' / 'dst'}:a")  # fmt: skip
    assert_one_line(done, 4)
    assert not (tmp_path / "new").exists()
