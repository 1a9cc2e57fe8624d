"""CLI conventions a skopeo, oras or crane user expects: global options anywhere, one shape
per command family, one missing-layout error, shell completion. Real processes throughout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.oci_builder import LayoutBuilder, SampleContent, push_built
from support.registry import Registry

SCRIPT = Path(sys.executable).with_name("hybridstore")


@pytest.fixture(autouse=True)
def private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test here reads the real credentials or writes the real cache."""
    (tmp_path / "home").mkdir()
    for name in ("HOME", "XDG_CONFIG_HOME", "XDG_RUNTIME_DIR", "DOCKER_CONFIG"):
        monkeypatch.setenv(name, str(tmp_path / "home" / name.lower()))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.setenv("HYBRIDSTORE_CACHE_DIR", str(tmp_path / "home" / "cache"))


def hs(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("HYBRIDSTORE_") or k == "HYBRIDSTORE_CACHE_DIR"
    }
    return subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=120, env=env or base
    )


def hs_json(*args: str) -> Any:
    done = hs(*args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.registry
def test_global_options_are_taken_after_the_subcommand(
    registry_content: SampleContent, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    done = hs(
        "pull", "-q", "--debug", "--cache", str(cache), "--plain-http",
        "--layout", str(tmp_path / "l"), registry_content.image.ref,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""  # -q after the subcommand
    assert "DEBUG" in done.stderr  # --debug after the subcommand
    assert any((cache / "blobs" / "sha256").iterdir())  # --cache after the subcommand
    for argv in (
        ["cache", "info", "--cache", str(cache)],
        ["cache", "--cache", str(cache), "info"],
    ):
        assert hs_json(*argv, "--json")["root"] == str(cache)
    # a later position wins over an earlier one, and over the environment
    env = dict(os.environ, HYBRIDSTORE_CACHE_DIR=str(tmp_path / "env"))
    late = hs("--cache", str(tmp_path / "early"), "cache", "info", "--cache", str(cache), "--json",
              env=env)  # fmt: skip
    assert json.loads(late.stdout)["root"] == str(cache)


def test_layout_verify_and_gc_take_layout_and_durations_like_the_rest(tmp_path: Path) -> None:
    LayoutBuilder(tmp_path / "l").image("latest", layers=1)
    layout = str(tmp_path / "l")
    assert hs_json("layout", "verify", "--layout", layout, "--json")["ok"] is True
    report = hs_json("layout", "gc", "--layout", layout, "--grace", "1h", "--json")
    assert report["reachable"] > 0
    assert hs("layout", "gc", layout, "--grace", "90m", "--dry-run").returncode == 0
    both = hs("layout", "verify", layout, "--layout", layout)
    assert both.returncode == 2 and "--layout" in both.stderr
    bad = hs("layout", "gc", "--layout", layout, "--grace", "soon")
    assert bad.returncode == 2 and "not a duration" in bad.stderr


def test_a_missing_layout_is_one_message_and_exit_code_everywhere(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    commands = [
        ["refs", "--layout", missing],
        ["tag", "--layout", missing, "a", "b"],
        ["untag", "--layout", missing, "a"],
        ["push", "--layout", missing, "a", "localhost:1/x:y"],
        ["export", "--layout", missing, "-o", str(tmp_path / "x.tar")],
        ["extract", "--layout", missing, "-o", str(tmp_path / "out")],
        ["inspect", "--layout", missing],
        ["referrers", "--layout", missing],
        ["layout", "verify", "--layout", missing],
        ["layout", "gc", missing],
        ["copy", f"oci:{missing}:a", f"oci:{tmp_path / 'dst'}"],
    ]
    for argv in commands:
        done = hs(*argv)
        assert done.returncode == 4, (argv, done.stderr)
        assert done.stderr == (
            f"hybridstore: error: {missing} is not an OCI layout (no oci-layout file): "
            "check the path, or pull, copy or import into it first\n"
        ), argv
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]  # nothing new


def test_completion_scripts_complete_commands(tmp_path: Path) -> None:
    env = dict(os.environ, PATH=f"{SCRIPT.parent}:/usr/bin:/bin")
    script = (
        'eval "$(hybridstore completion bash)"; COMP_WORDS=(hybridstore pu); COMP_CWORD=1; '
        '_hybridstore_completion hybridstore; printf "%s\\n" "${COMPREPLY[@]}"'
    )
    done = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["pull", "push"]
    for shell in ("zsh", "fish"):
        text = hs("completion", shell).stdout
        assert "_HYBRIDSTORE_COMPLETE" in text and f"{shell}_complete" in text
    assert hs("completion", "tcsh").returncode == 2


@pytest.mark.registry
def test_multi_ref_pull_reports_every_ref_and_keeps_the_good_ones(
    registry_content: SampleContent, tmp_path: Path
) -> None:
    good = registry_content.image
    missing = f"{good.host_port}/sample/does-not-exist:v1"
    layout = str(tmp_path / "l")
    done = hs("pull", "--plain-http", "--json", "--layout", layout, missing, good.ref)
    assert done.returncode == 4
    entries = json.loads(done.stdout)
    assert [e.get("digest") for e in entries] == [good.digest, None]
    assert entries[1]["reference"] == missing
    assert entries[1]["error"]["exit_code"] == 4 and entries[1]["error"]["ref"] == missing
    assert done.stderr.count("\n") == 1 and missing in done.stderr
    assert [r["digest"] for r in hs_json("refs", "--layout", layout, "--json")] == [good.digest]
    # one ref: the same list shape
    one = hs_json("pull", "--plain-http", "--json", "--layout", layout, good.ref)
    assert isinstance(one, list) and one[0]["digest"] == good.digest
    # --fail-fast: today's stop at the first failure, nothing written to a new layout
    fast = hs("pull", "--plain-http", "--json", "--fail-fast", "--layout", str(tmp_path / "f"),
              missing, good.ref)  # fmt: skip
    assert fast.returncode == 4
    assert json.loads(fast.stdout)["error"]["exit_code"] == 4
    assert not (tmp_path / "f").exists()


def test_with_json_an_error_is_also_a_json_object_on_stdout(tmp_path: Path) -> None:
    done = hs("inspect", "--json", "--layout", str(tmp_path / "nope"))
    assert done.returncode == 4
    error = json.loads(done.stdout)["error"]
    assert error["exit_code"] == 4 and "not an OCI layout" in error["message"]
    assert done.stderr.startswith("hybridstore: error: ")
    bad_ref = hs("inspect", "--json", "UPPER/Case:x")
    assert bad_ref.returncode == 10
    assert json.loads(bad_ref.stdout)["error"]["ref"] == "UPPER/Case:x"  # the ref it concerns
    usage = hs("refs", "--json")
    assert usage.returncode == 2
    assert "--layout" in json.loads(usage.stdout)["error"]["message"]
    plain = hs("inspect", "--layout", str(tmp_path / "nope"))
    assert plain.stdout == ""


@pytest.mark.registry
def test_copy_into_a_layout_reports_fetched_and_linked_blobs(
    registry_content: SampleContent, tmp_path: Path
) -> None:
    env = dict(os.environ, HYBRIDSTORE_CACHE_DIR=str(tmp_path / "cache"))
    src = f"docker://{registry_content.image.ref}"
    first = hs("copy", "--plain-http", src, f"oci:{tmp_path / 'a'}:app", env=env)
    assert first.returncode == 0, first.stderr
    assert "uploaded" not in first.stdout and "mounted" not in first.stdout
    assert " 0 fetched" not in first.stdout and "fetched" in first.stdout
    again = hs("copy", "--plain-http", src, f"oci:{tmp_path / 'b'}:app", env=env)
    assert "0 fetched" in again.stdout and "linked from the cache" in again.stdout
    linked = int(again.stdout.split(" linked from the cache")[0].rsplit(" ", 1)[1])
    assert linked > 0


@pytest.mark.registry
def test_a_layout_ref_is_taken_in_every_spelling_pull_took(
    registry_content: SampleContent, tmp_path: Path
) -> None:
    chart, image = registry_content.chart, registry_content.image
    layout = str(tmp_path / "charts")
    pulled = hs("pull", "--plain-http", "--layout", layout, f"oci://{chart.ref}")
    assert pulled.returncode == 0, pulled.stderr
    for spelling in (f"oci://{chart.ref}", chart.ref, chart.tag, chart.digest):
        out = hs_json("inspect", "--layout", layout, spelling, "--json")
        assert out["descriptor"]["digest"] == chart.digest, spelling
        done = hs("extract", "--layout", layout, spelling, "-o", str(tmp_path / "vendor"))
        assert done.returncode == 0, (spelling, done.stderr)
    stable = f"{chart.host_port}/{chart.repo}:stable"
    tagged = hs_json("tag", "--layout", layout, f"oci://{chart.ref}", stable, "--json")
    assert tagged["digest"] == chart.digest
    untag = hs("untag", "--layout", layout, f"oci://{stable}")
    assert untag.returncode == 0, untag.stderr
    # a referrer's fallback index is not "the only ref", and refs shows it under its subject
    images = str(tmp_path / "images")
    done = hs("pull", "--plain-http", "--include-referrers", "--layout", images, image.ref)
    assert done.returncode == 0, done.stderr
    rows = hs_json("refs", "--layout", images, "--json")
    assert [r["name"] for r in rows] == [image.ref]
    assert [r["name"].rsplit(":", 1)[1] for r in rows[0]["referrers"]] == [
        "sha256-" + image.digest.split(":", 1)[1]
    ]
    sole = hs_json("inspect", "--layout", images, "--json")
    assert sole["descriptor"]["digest"] == image.digest


def _stderr_on_a_tty(*args: str) -> tuple[int, str]:
    """Run the CLI with stderr on a pseudo-terminal (stdout a pipe); what the terminal got."""
    import pty

    leader, follower = pty.openpty()
    env = dict(os.environ, TERM="xterm", COLUMNS="100")
    proc = subprocess.Popen([str(SCRIPT), *args], stdout=subprocess.PIPE, stderr=follower, env=env)
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the process closed its end
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    proc.communicate(timeout=120)
    return proc.returncode, seen.decode("utf-8", "replace")


def test_export_and_import_show_progress_on_a_terminal(tmp_path: Path) -> None:
    LayoutBuilder(tmp_path / "l").image("latest", layers=2)
    archive = str(tmp_path / "site.tar")
    code, terminal = _stderr_on_a_tty("export", "--layout", str(tmp_path / "l"), "-o", archive)
    assert code == 0, terminal
    assert "exporting" in terminal
    code, terminal = _stderr_on_a_tty("import", archive, "--layout", str(tmp_path / "i"),
                                      "--cache", str(tmp_path / "cache"))  # fmt: skip
    assert code == 0, terminal
    assert "importing" in terminal
    assert hs_json("refs", "--layout", str(tmp_path / "i"), "--json")[0]["name"] == "latest"


def assert_umoci_unpacks(image: str, bundle: Path) -> None:
    unpack = ["umoci", "unpack"] + (["--rootless"] if os.geteuid() != 0 else [])
    done = subprocess.run(
        [*unpack, "--image", image, str(bundle)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.registry
@pytest.mark.skopeo
@pytest.mark.umoci
def test_a_single_platform_pull_is_readable_by_skopeo_and_umoci_on_any_host(
    registry_content: SampleContent, tmp_path: Path
) -> None:
    import platform as host

    index = registry_content.index
    other = "linux/amd64" if host.machine() in ("aarch64", "arm64") else "linux/arm64"
    layout = tmp_path / "l"
    pulled = hs("pull", "--plain-http", "--platform", other, "--layout", str(layout), index.ref)
    assert pulled.returncode == 0, pulled.stderr
    assert f"manifest of index {index.digest}" in pulled.stdout  # says the digest changed
    name = hs_json("refs", "--layout", str(layout), "--json")[0]["name"]
    inspected = subprocess.run(
        ["skopeo", "--insecure-policy", "inspect", f"oci:{layout}:{name}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)["Architecture"] == other.split("/")[1]
    assert_umoci_unpacks(f"{layout}:{name}", tmp_path / "bundle")


@pytest.mark.registry
@pytest.mark.skopeo
@pytest.mark.umoci
def test_format_oci_converts_docker_media_types_for_the_oci_readers(
    registry: Registry, oci_builder: Callable[..., LayoutBuilder], repo_name: str, tmp_path: Path
) -> None:
    built = oci_builder().index("docker", flavor="docker")
    ref = f"{registry.host_port}/{repo_name}:v1"
    push_built(built, registry, f"{repo_name}:v1")
    kept, converted = tmp_path / "kept", tmp_path / "oci"

    def skopeo_inspect(layout: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["skopeo", "--insecure-policy", "inspect", "--raw", f"oci:{layout}:{ref}"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    assert hs("pull", "--plain-http", "--layout", str(kept), ref).returncode == 0
    assert skopeo_inspect(kept).returncode != 0  # skopeo's oci: reader refuses Docker types
    done = hs("pull", "--plain-http", "--format", "oci", "--layout", str(converted), ref)
    assert done.returncode == 0, done.stderr
    host_manifest = hs_json("refs", "--layout", str(kept), "--json")[0]["digest"]
    assert f"converted to OCI media types from {host_manifest}" in done.stdout
    raw = skopeo_inspect(converted)
    assert raw.returncode == 0, raw.stderr
    manifest = json.loads(raw.stdout)
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert {layer["mediaType"] for layer in manifest["layers"]} == {
        "application/vnd.oci.image.layer.v1.tar+gzip"
    }
    assert hs_json("layout", "verify", "--layout", str(converted), "--json")["ok"] is True
    assert_umoci_unpacks(f"{converted}:{ref}", tmp_path / "bundle")
    # a registry destination keeps digests: refused, not silently ignored
    refused = hs("copy", "--plain-http", "--format", "oci", ref, f"{registry.host_port}/x/y:1")
    assert refused.returncode == 10 and "layouts" in refused.stderr
