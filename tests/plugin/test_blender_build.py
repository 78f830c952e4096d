"""The extension package: wheel choice, manifest, zip, Blender's own validator and installer.

No downloads: the third-party wheels come from a folder the test fills with
small placeholder wheels named exactly like the real ones (the choice and the
manifest only depend on the names); the plugin core wheel is the real one.
"""

from __future__ import annotations

import base64
import hashlib
import os
import pathlib
import subprocess
import sys
import textwrap
import tomllib
import zipfile

import pytest

from fairy_plugin.blender import build

# The real file names of the wheels PyPI has for our pins (grpcio ships macOS as universal2,
# protobuf as abi3, opentimelineio per CPython version).
REAL_NAMES = {
    "3.11": [
        "grpcio-1.85.3-cp311-cp311-macosx_11_0_universal2.whl",
        "grpcio-1.85.3-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
        "grpcio-1.85.3-cp311-cp311-win_amd64.whl",
        "opentimelineio-0.18.1-cp311-cp311-macosx_11_0_arm64.whl",
        "opentimelineio-0.18.1-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
        "opentimelineio-0.18.1-cp311-cp311-win_amd64.whl",
        "protobuf-7.36.2-cp310-abi3-macosx_10_9_universal2.whl",
        "protobuf-7.36.2-cp310-abi3-manylinux2014_x86_64.whl",
        "protobuf-7.36.2-cp310-abi3-win_amd64.whl",
    ],
    "3.13": [
        "grpcio-1.85.3-cp313-cp313-macosx_11_0_universal2.whl",
        "grpcio-1.85.3-cp313-cp313-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
        "grpcio-1.85.3-cp313-cp313-win_amd64.whl",
        "opentimelineio-0.18.1-cp313-cp313-macosx_11_0_arm64.whl",
        "opentimelineio-0.18.1-cp313-cp313-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
        "opentimelineio-0.18.1-cp313-cp313-win_amd64.whl",
        "protobuf-7.36.2-cp310-abi3-macosx_10_9_universal2.whl",
        "protobuf-7.36.2-cp310-abi3-manylinux2014_x86_64.whl",
        "protobuf-7.36.2-cp310-abi3-win_amd64.whl",
    ],
}
# Wheels that must never be chosen: wrong Python, wrong version, wrong platform, pure Python.
DISTRACTORS = [
    "grpcio-1.85.3-cp312-cp312-win_amd64.whl",
    "grpcio-1.85.1-cp311-cp311-win_amd64.whl",
    "grpcio-1.85.3-cp311-cp311-musllinux_1_1_x86_64.whl",
    "grpcio-1.85.3-cp311-cp311-manylinux_2_39_x86_64.whl",
    "grpcio-1.85.3-cp311-cp311-macosx_10_10_x86_64.whl",
    "opentimelineio-0.18.1-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl",
]
PINS = {"grpcio": "1.85.3", "protobuf": "7.36.2", "opentimelineio": "0.18.1"}


def placeholder_wheel(path: pathlib.Path) -> None:
    """A valid, empty wheel (metadata only) with the given file name."""
    name, version = path.name.split("-")[:2]
    info = f"{name}-{version}.dist-info"
    files = {f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
             f"{info}/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: false\n"}
    record = "".join(f"{n},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()},"
                     f"{len(d)}\n" for n, d in files.items()) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as archive:
        for n, d in files.items():
            archive.writestr(n, d)
        archive.writestr(f"{info}/RECORD", record)


@pytest.fixture(scope="module")
def wheel_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wheels")
    for name in REAL_NAMES["3.11"] + REAL_NAMES["3.13"] + DISTRACTORS:
        placeholder_wheel(folder / name)
    return folder


def manifest_of(zip_path) -> dict:
    with zipfile.ZipFile(zip_path) as archive:
        return tomllib.loads(archive.read("blender_manifest.toml").decode())


@pytest.mark.parametrize("python", ["3.11", "3.13"])
def test_select_wheels_takes_one_per_platform_at_the_pinned_version(wheel_dir, python):
    chosen = build.select_wheels(wheel_dir, PINS, python, list(build.PLATFORMS))
    assert [p.name for p in chosen] == sorted(REAL_NAMES[python])


def test_missing_wheel_names_the_package_platform_and_python(wheel_dir, tmp_path):
    for name in REAL_NAMES["3.11"]:
        if "win_amd64" not in name or not name.startswith("opentimelineio"):
            placeholder_wheel(tmp_path / name)
    with pytest.raises(build.BuildError, match=r"no opentimelineio 0.18.1 wheel for windows-x64 \(Python 3.11\)"):
        build.select_wheels(tmp_path, PINS, "3.11", list(build.PLATFORMS))
    # Only Linux asked for: the Windows gap does not matter.
    assert len(build.select_wheels(tmp_path, PINS, "3.11", ["linux-x64"])) == 3


def test_package_for_blender_4_2_to_5_0(wheel_dir, tmp_path):
    zip_path = build.build(tmp_path, python="3.11", wheels_from=wheel_dir, pins=PINS)
    assert zip_path.name == "fairy_edit-0.1.0-blender4.2-5.0.zip"
    manifest = manifest_of(zip_path)
    assert manifest["id"] == "fairy_edit" and manifest["type"] == "add-on"
    assert manifest["schema_version"] == "1.0.0" and manifest["license"] == ["SPDX:Apache-2.0"]
    assert (manifest["blender_version_min"], manifest["blender_version_max"]) == ("4.2.0", "5.1.0")
    assert manifest["platforms"] == ["linux-x64", "windows-x64", "macos-arm64"]
    assert set(manifest["permissions"]) == {"network", "files"}
    expected = sorted(["fairy_plugin_core-0.1.0-py3-none-any.whl"] + REAL_NAMES["3.11"])
    assert manifest["wheels"] == [f"./wheels/{n}" for n in expected]
    with zipfile.ZipFile(zip_path) as archive:
        names = set(archive.namelist())
    assert {"__init__.py", "compat.py", "strips.py", "placement.py", "jobs.py", "ui.py"} <= names
    assert "build.py" not in names and not any("__pycache__" in n for n in names)
    assert {n for n in names if n.startswith("wheels/")} == {f"wheels/{n}" for n in expected}
    assert build.check_package(zip_path) == []
    # The committed manifest lists what this build produces for the pinned versions.
    source = tomllib.loads((pathlib.Path(build.__file__).parent / "blender_manifest.toml").read_text())
    assert source["wheels"] == manifest["wheels"]


def test_package_for_blender_5_1_and_later(wheel_dir, tmp_path):
    zip_path = build.build(tmp_path, python="3.13", wheels_from=wheel_dir, pins=PINS)
    assert zip_path.name == "fairy_edit-0.1.0-blender5.1+.zip"
    manifest = manifest_of(zip_path)
    assert manifest["blender_version_min"] == "5.1.0" and "blender_version_max" not in manifest
    assert all("cp311" not in w for w in manifest["wheels"])
    assert build.check_package(zip_path) == []


def test_builds_are_reproducible(wheel_dir, tmp_path):
    first = build.build(tmp_path / "a", wheels_from=wheel_dir, pins=PINS).read_bytes()
    second = build.build(tmp_path / "b", wheels_from=wheel_dir, pins=PINS).read_bytes()
    assert first == second


def test_blenders_own_validator_accepts_the_package_and_catches_a_broken_one(wheel_dir, tmp_path):
    validator = build.find_blender_validator()
    assert validator is not None, "bpy ships Blender's blender_ext.py"
    zip_path = build.build(tmp_path, wheels_from=wheel_dir, pins=PINS, validator=validator)
    assert "Success" in build.run_blender_validator(validator, zip_path)
    broken = tmp_path / "broken.zip"
    with zipfile.ZipFile(zip_path) as src, zipfile.ZipFile(broken, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "blender_manifest.toml":
                data = data.replace(b'tagline = "Instruction-guided video edits on sequencer strips with Fairy"',
                                    b'tagline = "Ends with a period."')
            dst.writestr(item, data)
    with pytest.raises(build.BuildError, match="Blender's validator refused broken.zip"):
        build.run_blender_validator(validator, broken)


def test_check_package_finds_a_missing_platform_wheel(wheel_dir, tmp_path):
    zip_path = build.build(tmp_path, wheels_from=wheel_dir, pins=PINS)
    gutted = tmp_path / "gutted.zip"
    with zipfile.ZipFile(zip_path) as src, zipfile.ZipFile(gutted, "w") as dst:
        for item in src.infolist():
            if "win_amd64" in item.filename and "grpcio" in item.filename:
                continue
            data = src.read(item)
            if item.filename == "blender_manifest.toml":
                data = b"\n".join(line for line in data.split(b"\n") if b"grpcio-1.85.3-cp311-cp311-win" not in line)
            dst.writestr(item, data)
    assert build.check_package(gutted) == ["no grpcio wheel for windows-x64 (Python 3.11)"]


def test_core_wheel_holds_the_core_and_imports_without_the_project(tmp_path):
    wheel = build.build_core_wheel(tmp_path, "0.1.0")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        record = archive.read("fairy_plugin_core-0.1.0.dist-info/RECORD").decode()
        for line in record.splitlines():
            name, digest, size = line.split(",")
            if digest:
                data = archive.read(name)
                assert int(size) == len(data)
                assert digest == "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(
                    b"=").decode()
        archive.extractall(tmp_path / "site")
    assert {"fairy_plugin/client.py", "fairy_plugin/runner.py", "fairy_plugin/ranges.py",
            "fairy_proto/v1/fairy_pb2.py", "fairy_proto/v1/fairy_pb2_grpc.py"} <= set(names)
    assert not any(n.startswith(("fairy_plugin/blender", "fairy_plugin/resolve")) for n in names)
    site = tmp_path / "site"
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(site)!r})
        import fairy_plugin.client, fairy_plugin.runner, fairy_proto.v1.fairy_pb2_grpc
        assert fairy_plugin.__file__.startswith({str(site)!r}), fairy_plugin.__file__
        assert fairy_proto.__file__.startswith({str(site)!r}), fairy_proto.__file__
        assert "torch" not in sys.modules and "fairy" not in sys.modules
    """)
    subprocess.run([sys.executable, "-c", script], check=True)


def test_blender_installs_and_enables_the_built_package(tmp_path):
    """Blender's own installer (Preferences > Get Extensions > Install from Disk) on the built zip.

    Built with --no-wheels so the test needs no downloads: this Python already has
    grpcio, protobuf and opentimelineio; the core still comes from the package's wheel.
    """
    zip_path = build.build(tmp_path / "dist", no_wheels=True)
    script = textwrap.dedent(f"""
        import sys, bpy
        result = bpy.ops.extensions.package_install_files(
            filepath={str(zip_path)!r}, repo="user_default", enable_on_install=True)
        assert result == {{"FINISHED"}}, result
        assert "bl_ext.user_default.fairy_edit" in bpy.context.preferences.addons.keys()
        assert "bl_ext.user_default.fairy_edit.ui" in sys.modules
        import fairy_plugin
        assert fairy_plugin.__file__.startswith({str(tmp_path / "user")!r}), fairy_plugin.__file__
        assert bpy.ops.fairy.edit_strips.get_rna_type().name == "Fairy Edit\\u2026"
        assert hasattr(bpy.types, "SEQUENCER_PT_fairy_jobs")
        bpy.ops.extensions.package_uninstall(repo_index=1, pkg_id="fairy_edit")
        assert not hasattr(bpy.types, "SEQUENCER_PT_fairy_jobs")
        print("installed-ok")
    """)
    # A private Blender user folder, so nothing lands in the real ~/.config/blender.
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "user"))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert "installed-ok" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]


def test_command_line_reports_bad_input_in_one_line(tmp_path, capsys):
    assert build.main(["--out", str(tmp_path), "--wheels-from", str(tmp_path / "nope")]) == 1
    assert capsys.readouterr().err.strip() == f"error: --wheels-from {tmp_path / 'nope'} is not a folder"
    assert build.main(["--out", str(tmp_path), "--pin", "numpy==1.0", "--no-wheels"]) == 1
    assert "must be NAME==VERSION with NAME one of grpcio" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.zip"))
