"""``hybridstore extract``: ORAS files, Helm charts (.tgz, .prov, --untar), and hostile
names refused with nothing written anywhere."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from support.oci_builder import (
    HELM_CHART,
    HELM_CONFIG,
    OCI_MANIFEST,
    TITLE,
    Blob,
    BuiltArtifact,
    LayoutBuilder,
    SampleContent,
    canonical_json,
    deterministic_targz,
)

from hybridstore.archive.untar import UntarLimits
from hybridstore.errors import InvalidDocumentError, UnsafePathError
from hybridstore.extract import extract
from hybridstore.pull import pull
from hybridstore.remote.transport import TransportOptions

PLAIN = TransportOptions(plain_http=True, retry_base=0.01, retry_cap=0.5)
HYBRIDSTORE = [sys.executable, "-m", "hybridstore.cli"]
PROVENANCE = "application/vnd.cncf.helm.chart.provenance.v1.prov"


def tree(root: Path) -> dict[str, bytes | str]:
    """Every entry below ``root``: file bytes, ``dir`` or ``-> target`` for links."""
    out: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = f"-> {os.readlink(p)}"
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = p.read_bytes()
    return out


def artifact_with(
    b: LayoutBuilder,
    ref: str,
    config: Blob,
    layers: list[tuple[Blob, dict[str, str] | None]],
) -> BuiltArtifact:
    """A manifest of ``config`` and annotated ``layers``, written to ``b`` and tagged ``ref``."""
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [blob.descriptor(annotations=annos) for blob, annos in layers],
    }
    manifest = Blob(OCI_MANIFEST, canonical_json(doc))
    built = BuiltArtifact(manifest, config, tuple(blob for blob, _ in layers), None, None, ref)
    for blob in built.blobs.values():
        b.write_blob(blob)
    b.tag(built, ref)
    return built


def chart_with(
    b: LayoutBuilder,
    ref: str,
    archive: bytes,
    *,
    name: str = "demo",
    version: str = "1.0.0",
    prov: bytes | None = None,
) -> BuiltArtifact:
    """A Helm chart manifest around ``archive`` (and a provenance layer), tagged ``ref``."""
    config = Blob(HELM_CONFIG, canonical_json({"name": name, "version": version}))
    layers = [Blob(HELM_CHART, archive)] + ([Blob(PROVENANCE, prov)] if prov else [])
    return artifact_with(b, ref, config, [(layer, None) for layer in layers])


def test_oras_files_from_a_layout_and_from_a_registry(
    oci_builder: Callable[..., LayoutBuilder],
    registry_content: SampleContent,
    tmp_cache: Path,
    tmp_path: Path,
) -> None:
    b = oci_builder()
    files = {"readme.txt": b"hello\n", "conf/app.yaml": b"a: 1\n"}
    b.artifact("files", files=files)
    result = extract("files", layout=b.path, output=tmp_path / "out")
    assert tree(tmp_path / "out") == {"readme.txt": b"hello\n", "conf": "dir", **files}
    assert sorted(f.path for f in result.files) == sorted(files)

    artifact = registry_content.artifact
    done = subprocess.run(
        [*HYBRIDSTORE, "extract", "--plain-http", "--json", artifact.ref, "-o"]
        + [str(tmp_path / "remote")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["digest"] == artifact.digest
    expected = {f"file{i}.bin": layer.data for i, layer in enumerate(artifact.built.layers)}
    assert tree(tmp_path / "remote") == expected
    cached = {p.name for p in tmp_cache.glob("blobs/sha256/*")}
    assert {layer.hex for layer in artifact.built.layers} <= cached


def test_helm_chart_as_helm_pull_writes_it(
    oci_builder: Callable[..., LayoutBuilder], registry_content: SampleContent, tmp_path: Path
) -> None:
    b = oci_builder()
    _tar, archive = deterministic_targz({"demo/Chart.yaml": b"name: demo\nversion: 1.0.0\n"})
    chart_with(b, "signed", archive, prov=b"-----BEGIN PGP SIGNED MESSAGE-----\n")
    out = tmp_path / "vendor"
    extract("signed", layout=b.path, output=out)
    assert tree(out) == {
        "demo-1.0.0.tgz": archive,
        "demo-1.0.0.tgz.prov": b"-----BEGIN PGP SIGNED MESSAGE-----\n",
    }

    pull(registry_content.chart.ref, layout=tmp_path / "charts", transport=PLAIN)
    untarred = extract(
        registry_content.chart.ref, layout=tmp_path / "charts", output=out, untar_chart=True
    )
    assert untarred.chart is not None and untarred.chart.name == "demo-chart"
    chart_yaml = (out / "demo-chart" / "Chart.yaml").read_text()
    assert "version: 0.1.0" in chart_yaml
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # staging is gone
    with pytest.raises(UnsafePathError, match="already exists|directory of that name"):
        extract(
            registry_content.chart.ref, layout=tmp_path / "charts", output=out, untar_chart=True
        )


def test_oras_directory_layers_are_unpacked_safely(
    oci_builder: Callable[..., LayoutBuilder], tmp_path: Path
) -> None:
    b = oci_builder()
    config = Blob("application/vnd.oci.empty.v1+json", b"{}")
    _tar, packed = deterministic_targz({"site/index.html": b"<p>hi</p>", "site/css/a.css": b"a"})
    unpack = {TITLE: "site", "io.deis.oras.content.unpack": "true"}
    artifact_with(
        b, "dir", config, [(Blob("application/vnd.oci.image.layer.v1.tar+gzip", packed), unpack)]
    )
    extract("dir", layout=b.path, output=tmp_path / "out")
    assert tree(tmp_path / "out") == {
        "site": "dir",
        "site/index.html": b"<p>hi</p>",
        "site/css": "dir",
        "site/css/a.css": b"a",
    }
    _tar, other = deterministic_targz({"elsewhere/x": b"x"})
    layer = Blob("application/vnd.oci.image.layer.v1.tar+gzip", other)
    artifact_with(b, "mismatch", config, [(layer, {**unpack, TITLE: "named"})])
    with pytest.raises(InvalidDocumentError, match="must unpack to one directory"):
        extract("mismatch", layout=b.path, output=tmp_path / "out2")
    assert tree(tmp_path / "out2") == {}


@pytest.mark.parametrize("title", ["../x", "/abs/x", "a/../../x", "a\\..\\x", "./x", "a//x"])
def test_hostile_titles_are_refused_and_nothing_is_written(
    title: str, oci_builder: Callable[..., LayoutBuilder], tmp_path: Path
) -> None:
    b = oci_builder()
    b.artifact("evil", files={"fine.txt": b"ok", title: b"pwned"})
    out = tmp_path / "sandbox" / "out"
    out.mkdir(parents=True)
    with pytest.raises(UnsafePathError, match="refusing layer title"):
        extract("evil", layout=b.path, output=out)
    assert tree(tmp_path / "sandbox") == {"out": "dir"}  # not even fine.txt
    assert not Path("/abs/x").exists()


def test_a_symlink_planted_in_the_output_is_never_followed(
    oci_builder: Callable[..., LayoutBuilder], tmp_path: Path
) -> None:
    b = oci_builder()
    b.artifact("evil", files={"sub/x": b"pwned"})
    b.artifact("evil2", files={"link": b"pwned"})
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").symlink_to(outside)
    (out / "link").symlink_to(outside / "target")
    done = subprocess.run(
        [*HYBRIDSTORE, "extract", "--layout", str(b.path), "evil", "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 10
    assert "symlink" in done.stderr and done.stderr.count("\n") == 1
    with pytest.raises(UnsafePathError, match="symlink"):
        extract("evil2", layout=b.path, output=out)
    assert tree(outside) == {}
    assert tree(out) == {"sub": f"-> {outside}", "link": f"-> {outside / 'target'}"}


def test_hostile_chart_names_and_archives(
    oci_builder: Callable[..., LayoutBuilder], tmp_path: Path
) -> None:
    b = oci_builder()
    _tar, archive = deterministic_targz({"demo/Chart.yaml": b"name: demo\n"})
    for i, name in enumerate(["..", ".", "a/b", ""]):
        chart_with(b, f"bad{i}", archive, name=name)
        with pytest.raises(UnsafePathError, match="chart name"):
            extract(f"bad{i}", layout=b.path, output=tmp_path / "out")
    chart_with(b, "badversion", archive, version="../../1.0")
    with pytest.raises(UnsafePathError, match="chart version"):
        extract("badversion", layout=b.path, output=tmp_path / "out")

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("demo/Chart.yaml")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"name\n"))
        link = tarfile.TarInfo("demo/escape")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc"
        tar.addfile(link)
    chart_with(b, "linked", buf.getvalue())
    with pytest.raises(UnsafePathError, match="link"):
        extract("linked", layout=b.path, output=tmp_path / "out", untar_chart=True)

    _tar, big = deterministic_targz({"demo/payload.bin": b"\0" * 50_000})
    chart_with(b, "bomb", big)
    with pytest.raises(InvalidDocumentError, match="more than 1000 bytes"):
        extract(
            "bomb",
            layout=b.path,
            output=tmp_path / "out",
            untar_chart=True,
            limits=UntarLimits(max_bytes=1000),
        )
    assert not (tmp_path / "out").exists() or tree(tmp_path / "out") == {}
