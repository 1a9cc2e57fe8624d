"""``hybridstore validate`` agrees with the library on the spec's vectors and maps errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hybridstore.cli import cli
from hybridstore.oci import mediatypes as mt
from hybridstore.oci.limits import MAX_DOCUMENT_BYTES
from hybridstore.oci.schema import check_document

REPO = Path(__file__).resolve().parents[1]
KINDS = {
    "manifest": mt.OCI_MANIFEST,
    "index": mt.OCI_INDEX,
    "descriptor": mt.OCI_DESCRIPTOR,
    "config": mt.OCI_CONFIG,
    "layout": mt.OCI_LAYOUT_HEADER,
}
SCRIPT = Path(sys.executable).with_name("hybridstore")


def _vectors_dir() -> Path | None:
    env = os.environ.get("HYBRIDSTORE_CONFORMANCE_DIR")
    base = Path(env) if env else REPO.parent / "shared" / "conformance" / "oci-image-spec"
    for candidate in (base, base / "vectors", base / "oci-image-spec" / "vectors"):
        if (candidate / "manifest.json").is_file():
            return candidate
    return None


def _vector_params() -> list[Any]:
    directory = _vectors_dir()
    if directory is None:
        reason = "OCI conformance vectors not found (see tests/test_conformance.py)"
        return [pytest.param(None, None, None, marks=pytest.mark.skip(reason=reason))]
    out = []
    for kind, media_type in KINDS.items():
        for i, entry in enumerate(json.loads((directory / f"{kind}.json").read_text())):
            out.append(
                pytest.param(media_type, entry["document"], entry["valid"], id=f"{kind}-{i}")
            )
    for i, entry in enumerate(json.loads((directory / "spec-examples.json").read_text())):
        out.append(
            pytest.param(
                entry["mediaType"], entry["document"], entry["valid"], id=f"spec-examples-{i}"
            )
        )
    return out


def run(args: list[str], stdin: bytes | None = None) -> Any:
    return CliRunner().invoke(cli, ["validate", *args], input=stdin, catch_exceptions=False)


@pytest.mark.parametrize(("media_type", "document", "valid"), _vector_params())
def test_cli_agrees_with_library_on_vector(
    tmp_path: Path, media_type: str, document: str, valid: bool
) -> None:
    path = tmp_path / "doc.json"
    path.write_text(document)
    report = check_document(document.encode(), media_type)
    assert report.valid is valid

    result = run([str(path), "--media-type", media_type])
    assert result.exit_code == (0 if valid else 1)
    expected = ["valid"] if valid else list(report.problems)
    assert result.stdout.splitlines() == expected

    as_json = run(["--json", "-m", media_type, "-"], stdin=document.encode())
    assert as_json.exit_code == result.exit_code
    assert json.loads(as_json.stdout) == {
        "file": "-",
        "mediaType": media_type,
        "valid": valid,
        "problems": list(report.problems),
    }


def test_media_type_is_guessed_when_not_given(tmp_path: Path) -> None:
    path = tmp_path / "index.json"
    path.write_text(json.dumps({"schemaVersion": 2, "manifests": []}))
    result = run(["--json", str(path)])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["mediaType"] == mt.OCI_INDEX


def test_alias_and_schema1(tmp_path: Path) -> None:
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"schemaVersion": 1, "name": "x", "fsLayers": []}))
    result = run([str(path), "-m", "manifest"])
    assert result.exit_code == 1
    assert len(result.stdout.splitlines()) == 1 and "schema1" in result.stdout


# Real processes through the console script: exit codes and the one-line stderr.


def script(
    args: list[str], stdin: bytes = b"", cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    if not SCRIPT.is_file():
        pytest.skip(f"console script {SCRIPT} not installed (pip install -e .)")
    return subprocess.run(
        [str(SCRIPT), "validate", *args],
        input=stdin.decode(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_script_valid_and_invalid(tmp_path: Path) -> None:
    good = tmp_path / "oci-layout"
    good.write_text('{"imageLayoutVersion": "1.0.0"}')
    ok = script([str(good)])
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "valid\n", "")
    bad = script(["-"], stdin=b'{"imageLayoutVersion": "2"}')
    assert bad.returncode == 1
    assert bad.stdout == "$.imageLayoutVersion: '2' is not one of ['1.0.0']\n"


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["missing.json"], 4, "missing.json: no such file"),
        (["-m", "text/plain", "-"], 10, "cannot validate media type 'text/plain'"),
        (["."], 10, "is a directory"),
    ],
)
def test_script_errors_are_one_line_with_exit_code(
    tmp_path: Path, args: list[str], code: int, fragment: str
) -> None:
    result = script(args, stdin=b"{}", cwd=tmp_path)
    assert result.returncode == code
    assert result.stderr.count("\n") == 1 and fragment in result.stderr
    assert result.stderr.startswith("hybridstore: error: ")


@pytest.mark.parametrize("via_stdin", [False, True])
def test_oversized_input_is_refused(tmp_path: Path, via_stdin: bool) -> None:
    # Valid JSON padded past the cap: refused for its size, not parsed.
    body = b'{"imageLayoutVersion": "1.0.0"}' + b" " * MAX_DOCUMENT_BYTES
    path = tmp_path / "big.json"
    path.write_bytes(body)
    result = script(["-"], stdin=body) if via_stdin else script([str(path)])
    assert result.returncode == 10
    assert f"larger than {MAX_DOCUMENT_BYTES} bytes" in result.stderr
    # Exactly at the cap is still read.
    path.write_bytes(body[:MAX_DOCUMENT_BYTES])
    assert script([str(path)]).returncode == 0
