"""Build the installable Blender extension zip.

    python -m fairy_plugin.blender.build --out dist/
    python -m fairy_plugin.blender.build --out dist/ --python 3.13      # Blender 5.1+
    python -m fairy_plugin.blender.build --out dist/ --wheels-from DIR  # no downloads

The zip holds the extension's modules, its manifest and ``wheels/``: the plugin
core (``fairy_plugin`` and ``fairy_proto``) as a pure-Python wheel built here,
so the extension never depends on this project being installed, plus grpcio,
protobuf and opentimelineio for linux-x64, windows-x64 and macos-arm64 at the
Python of the target Blender (3.11 for 4.2 to 5.0, 3.13 for 5.1+). Blender
installs the wheels itself when the extension is enabled.

The package is checked with Blender's own validator (``blender_ext.py validate``,
shipped with Blender and with the ``bpy`` module) when one is found, and always
with the checks in :func:`check_package`.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import hashlib
import importlib.metadata
import importlib.util
import pathlib
import subprocess
import sys
import tempfile
import tomllib
import zipfile

import tomli_w
from fairy_proto.files import atomic_write
from packaging.tags import Tag, compatible_tags, cpython_tags, mac_platforms
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion

__all__ = ["BuildError", "PLATFORMS", "PYTHONS", "build", "build_core_wheel", "select_wheels",
           "check_package", "find_blender_validator", "main"]

_HERE = pathlib.Path(__file__).resolve().parent
# The compiled packages the core needs, in every target platform's flavour.
DEPENDENCIES = ("grpcio", "protobuf", "opentimelineio")
# Oldest versions the generated fairy_proto stubs accept (they check at import).
_MINIMUM_VERSIONS = {"grpcio": "1.85.1", "protobuf": "7.35.1", "opentimelineio": "0.17.0"}

# Blender platform -> the pip --platform tags that fit it (newest first). Blender
# 4.2+ needs glibc 2.28 on Linux and macOS 11.2 on Apple silicon.
PLATFORMS = {
    "linux-x64": ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"),
    "windows-x64": ("win_amd64",),
    "macos-arm64": ("macosx_11_0_arm64", "macosx_11_0_universal2", "macosx_10_15_universal2",
                    "macosx_10_13_universal2", "macosx_10_9_universal2"),
}
# Target Python -> the Blender versions embedding it (min inclusive, max exclusive; "" = open).
PYTHONS = {
    "3.11": ("4.2.0", "5.1.0"),
    "3.13": ("5.1.0", ""),
}
_EXCLUDED = {"build.py"}


class BuildError(Exception):
    """The package cannot be built as asked; the message says what to change."""


# --- wheels -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class WheelName:
    filename: str
    distribution: str  # canonical name (packaging.utils.canonicalize_name)
    version: str
    tags: frozenset[Tag]

    @classmethod
    def parse(cls, filename: str) -> "WheelName":
        try:
            name, version, _build, tags = parse_wheel_filename(filename)
        except (InvalidWheelFilename, InvalidVersion) as exc:
            raise BuildError(f"{filename} is not a wheel file name ({exc})") from None
        return cls(filename, canonicalize_name(name), str(version), frozenset(tags))


def _target_platform_tags(platform: str) -> list[str]:
    """The platform tags a wheel may carry to load in Blender on ``platform``, most specific first:
    Blender 4.2+ needs glibc 2.28 on Linux and macOS 11 on Apple silicon."""
    if platform == "linux-x64":
        return [f"manylinux_2_{minor}_x86_64" for minor in range(28, 4, -1)] + [
            "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
    if platform == "windows-x64":
        return ["win_amd64"]
    if platform == "macos-arm64":
        return list(mac_platforms((11, 0), "arm64"))
    raise BuildError(f"unknown Blender platform {platform!r}; use one of {', '.join(PLATFORMS)}")


def _supported_tags(python: tuple[int, int], platform: str) -> list[Tag]:
    """Every tag CPython ``python`` in Blender on ``platform`` loads, best first (packaging.tags' order:
    the exact CPython ABI, then abi3 of it and older, then pure Python)."""
    platforms = _target_platform_tags(platform)
    interpreter = f"cp{python[0]}{python[1]}"
    return [*cpython_tags(python, platforms=platforms), *compatible_tags(python, interpreter, platforms)]


def _preference(wheel: WheelName, python: tuple[int, int], platform: str) -> int:
    """0 when the wheel cannot load on CPython ``python`` in Blender on ``platform``, else a preference
    (higher is better)."""
    supported = _supported_tags(python, platform)
    ranks = [rank for rank, tag in enumerate(supported) if tag in wheel.tags]
    return len(supported) - min(ranks) if ranks else 0


def select_wheels(folder: pathlib.Path, pins: dict[str, str], python: str,
                  platforms: list[str]) -> list[pathlib.Path]:
    """One wheel per (dependency, platform) from ``folder``, at the pinned version; a wheel
    serving several platforms (universal2, pure Python) is listed once."""
    version = tuple(int(x) for x in python.split("."))
    candidates = []
    for path in sorted(folder.glob("*.whl")):
        try:
            candidates.append((path, WheelName.parse(path.name)))
        except BuildError:
            continue
    chosen: dict[str, pathlib.Path] = {}
    for dist, pinned in pins.items():
        for platform in platforms:
            best, best_score = None, 0
            for path, wheel in candidates:
                if wheel.distribution != dist or wheel.version != pinned:
                    continue
                score = _preference(wheel, version, platform)
                if score and score > best_score:
                    best, best_score = path, score
            if best is None:
                raise BuildError(
                    f"no {dist} {pinned} wheel for {platform} (Python {python}) in {folder}; "
                    "add it there or build without --wheels-from to download it")
            chosen[best.name] = best
    return [chosen[name] for name in sorted(chosen)]


def download_wheels(dest: pathlib.Path, pins: dict[str, str], python: str, platforms: list[str]) -> None:
    """``pip download`` the pinned dependencies for each platform into ``dest`` (binary wheels only)."""
    dest.mkdir(parents=True, exist_ok=True)
    abi = "cp" + python.replace(".", "")
    for platform in platforms:
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--no-deps",
                   "--python-version", python, "--implementation", "cp", "--abi", abi, "--abi", "abi3",
                   "--dest", str(dest)]
        for tag in PLATFORMS[platform]:
            command += ["--platform", tag]
        command += [f"{name}=={version}" for name, version in pins.items()]
        print(f"downloading wheels for {platform} (Python {python})", flush=True)
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["pip failed"])[-1]
            raise BuildError(f"pip could not download the {platform} wheels: {last}")


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _package_files(package: str) -> tuple[pathlib.Path, list[pathlib.Path]]:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise BuildError(f"cannot find the {package} package; install the project (pip install -e .)")
    root = pathlib.Path(list(spec.submodule_search_locations)[0])
    return root, sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def build_core_wheel(dest: pathlib.Path, version: str) -> pathlib.Path:
    """The plugin core (``fairy_plugin`` without its editor subpackages, and ``fairy_proto``)
    as a pure-Python wheel, written reproducibly (fixed timestamps, sorted entries)."""
    plugin_root, plugin_files = _package_files("fairy_plugin")
    proto_root, proto_files = _package_files("fairy_proto")
    entries: list[tuple[str, bytes]] = []
    for path in plugin_files:
        rel = path.relative_to(plugin_root)
        if len(rel.parts) == 1:  # the core modules only; editors' subpackages stay out
            entries.append((f"fairy_plugin/{rel.as_posix()}", path.read_bytes()))
    for path in proto_files:
        entries.append((f"fairy_proto/{path.relative_to(proto_root).as_posix()}", path.read_bytes()))
    dist_info = f"fairy_plugin_core-{version}.dist-info"
    requires = "".join(f"Requires-Dist: {name}>={minimum}\n" for name, minimum in _MINIMUM_VERSIONS.items())
    entries.append((f"{dist_info}/METADATA", (
        "Metadata-Version: 2.1\nName: fairy-plugin-core\n"
        f"Version: {version}\nSummary: Fairy editor plugin core (client, range math, relinking)\n"
        f"License: Apache-2.0\n{requires}").encode()))
    entries.append((f"{dist_info}/WHEEL", (
        "Wheel-Version: 1.0\nGenerator: fairy_plugin.blender.build\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n").encode()))
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in entries)
    entries.append((f"{dist_info}/RECORD", (record + f"{dist_info}/RECORD,,\n").encode()))
    path = dest / f"fairy_plugin_core-{version}-py3-none-any.whl"
    _write_zip(path, entries)
    return path


# --- the package --------------------------------------------------------------------


def _write_zip(path: pathlib.Path, entries: list[tuple[str, bytes]]) -> None:
    """Write a zip atomically (temporary file beside it, then rename) with fixed timestamps."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # 0644 whatever the umask: a package is meant to be shared.
    with atomic_write(path, "wb", overwrite=True, file_mode=0o644) as raw, \
            zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED if name.endswith(".whl") else zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)


def render_manifest(text: str, *, wheels: list[str], python: str, platforms: list[str]) -> str:
    """The source manifest with this build's wheel list, platforms and Blender versions: parsed, changed
    and written back with a TOML writer (the source's comments stay in the source)."""
    minimum, maximum = PYTHONS[python]
    manifest = tomllib.loads(text)
    if not isinstance(manifest.get("wheels"), list):
        raise BuildError("blender_manifest.toml must have one `wheels = [ ... ]` list")
    manifest["wheels"] = [f"./wheels/{name}" for name in wheels]
    manifest["platforms"] = list(platforms)
    manifest["blender_version_min"] = minimum
    if maximum:
        manifest["blender_version_max"] = maximum
    else:
        manifest.pop("blender_version_max", None)
    return tomli_w.dumps(manifest, multiline_strings=False)


def _pins(overrides: list[str]) -> dict[str, str]:
    """Each dependency at the version installed here (what the tests ran with), unless pinned on the command line."""
    pins = {}
    for name in DEPENDENCIES:
        try:
            pins[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pins[name] = _MINIMUM_VERSIONS[name]
    for item in overrides:
        name, sep, version = item.partition("==")
        if not sep or name not in DEPENDENCIES or not version:
            raise BuildError(f"--pin '{item}' must be NAME==VERSION with NAME one of {', '.join(DEPENDENCIES)}")
        pins[name] = version
    return pins


def package_name(manifest: dict, python: str) -> str:
    minimum, maximum = PYTHONS[python]
    blender = f"blender{minimum[:-2]}-{_previous_minor(maximum)}" if maximum else f"blender{minimum[:-2]}+"
    return f"{manifest['id']}-{manifest['version']}-{blender}.zip"


def _previous_minor(version: str) -> str:
    major, minor, _ = (int(x) for x in version.split("."))
    return f"{major}.{minor - 1}" if minor else f"{major - 1}.x"


def build(out: pathlib.Path, *, python: str = "3.11", platforms: list[str] | None = None,
          wheels_from: pathlib.Path | None = None, download_dir: pathlib.Path | None = None,
          no_wheels: bool = False, pins: dict[str, str] | None = None,
          validator: pathlib.Path | None = None) -> pathlib.Path:
    """Assemble, check and zip the extension; returns the zip's path (written atomically)."""
    if python not in PYTHONS:
        raise BuildError(f"--python {python} is not a Blender Python; use one of {', '.join(PYTHONS)}")
    platforms = list(platforms or PLATFORMS)
    unknown = [p for p in platforms if p not in PLATFORMS]
    if unknown:
        raise BuildError(f"unknown platform {unknown[0]}; use any of {', '.join(PLATFORMS)}")
    source_manifest = (_HERE / "blender_manifest.toml").read_text(encoding="utf-8")
    manifest = tomllib.loads(source_manifest)
    pins = pins if pins is not None else _pins([])

    with tempfile.TemporaryDirectory(prefix="fairy-blender-build-") as work:
        work = pathlib.Path(work)
        wheels = [build_core_wheel(work, manifest["version"])]
        if not no_wheels:
            folder = wheels_from
            if folder is None:
                folder = download_dir or (out / f"wheel-cache-py{python.replace('.', '')}")
                download_wheels(folder, pins, python, platforms)
            wheels += select_wheels(folder, pins, python, platforms)
        names = sorted(w.name for w in wheels)
        text = render_manifest(source_manifest, wheels=names, python=python, platforms=platforms)
        entries = [("blender_manifest.toml", text.encode())]
        for path in sorted(_HERE.glob("*.py")):
            if path.name not in _EXCLUDED:
                entries.append((path.name, path.read_bytes()))
        entries += [(f"wheels/{w.name}", w.read_bytes()) for w in sorted(wheels, key=lambda w: w.name)]
        target = out / package_name(manifest, python)
        _write_zip(target, entries)
    try:
        problems = check_package(target, require_platforms=not no_wheels)
        if problems:
            raise BuildError(f"the built package is not valid: {problems[0]}")
        validator = validator or find_blender_validator()
        if validator is not None:
            run_blender_validator(validator, target)
    except BaseException:
        target.unlink(missing_ok=True)  # never leave a package that failed its checks
        raise
    return target


# --- checks -------------------------------------------------------------------------


_REQUIRED = ("schema_version", "id", "version", "name", "tagline", "maintainer", "type",
             "blender_version_min", "license")


def check_package(zip_path: pathlib.Path, *, require_platforms: bool = True) -> list[str]:
    """What is wrong with a built package (empty when nothing): the manifest parses, has the
    required keys, lists exactly the wheels inside, and each platform has every dependency."""
    problems = []
    with zipfile.ZipFile(zip_path) as archive:
        names = set(archive.namelist())
        if "blender_manifest.toml" not in names or "__init__.py" not in names:
            return ["blender_manifest.toml and __init__.py must be at the top of the zip"]
        try:
            manifest = tomllib.loads(archive.read("blender_manifest.toml").decode())
        except tomllib.TOMLDecodeError as exc:
            return [f"blender_manifest.toml does not parse: {exc}"]
    problems += [f"the manifest has no '{key}'" for key in _REQUIRED if key not in manifest]
    listed = {w.removeprefix("./") for w in manifest.get("wheels", [])}
    inside = {n for n in names if n.startswith("wheels/")}
    problems += [f"the manifest lists {w} but the zip does not hold it" for w in sorted(listed - inside)]
    problems += [f"the zip holds {w} but the manifest does not list it" for w in sorted(inside - listed)]
    if require_platforms:
        blender_min = tuple(int(x) for x in str(manifest.get("blender_version_min", "0.0.0")).split("."))
        python_min = "3.13" if blender_min >= (5, 1) else "3.11"
        version = tuple(int(x) for x in python_min.split("."))
        wheels = [WheelName.parse(pathlib.PurePosixPath(w).name) for w in listed]
        for platform in manifest.get("platforms", []):
            for dist in DEPENDENCIES:
                if not any(w.distribution == dist and _preference(w, version, platform) for w in wheels):
                    problems.append(f"no {dist} wheel for {platform} (Python {python_min})")
    return problems


def find_blender_validator() -> pathlib.Path | None:
    """Blender's own extension tool (``blender_ext.py``) from an installed ``bpy`` module, if any."""
    spec = importlib.util.find_spec("bpy")
    if spec is None or spec.origin is None:
        return None
    found = sorted(pathlib.Path(spec.origin).parent.glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
    return found[-1] if found else None


def run_blender_validator(validator: pathlib.Path, zip_path: pathlib.Path) -> str:
    """Run ``blender_ext.py validate`` (the check behind ``blender --command extension validate``)."""
    done = subprocess.run([sys.executable, str(validator), "validate", str(zip_path)],
                          capture_output=True, text=True)
    output = (done.stdout + done.stderr).strip()
    if done.returncode != 0 or "error" in output.lower():
        raise BuildError(f"Blender's validator refused {zip_path.name}: {output.splitlines()[-1] if output else done.returncode}")
    return output


# --- command line -------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fairy_plugin.blender.build", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("dist"), help="folder for the zip (default dist/)")
    parser.add_argument("--python", default="3.11", choices=sorted(PYTHONS),
                        help="Blender's Python: 3.11 for Blender 4.2-5.0 (default), 3.13 for 5.1+")
    parser.add_argument("--platform", action="append", choices=sorted(PLATFORMS), dest="platforms",
                        help="build for this platform only (repeatable; default: all three)")
    parser.add_argument("--wheels-from", type=pathlib.Path,
                        help="take grpcio/protobuf/opentimelineio wheels from this folder instead of downloading")
    parser.add_argument("--no-wheels", action="store_true",
                        help="only the core wheel (for a Blender whose Python already has the dependencies)")
    parser.add_argument("--pin", action="append", default=[], metavar="NAME==VERSION",
                        help="dependency version (default: the version installed here)")
    parser.add_argument("--blender-ext", type=pathlib.Path,
                        help="path of Blender's blender_ext.py validator (default: found beside bpy)")
    args = parser.parse_args(argv)
    try:
        if args.wheels_from is not None and not args.wheels_from.is_dir():
            raise BuildError(f"--wheels-from {args.wheels_from} is not a folder")
        target = build(args.out, python=args.python, platforms=args.platforms, wheels_from=args.wheels_from,
                       no_wheels=args.no_wheels, pins=_pins(args.pin), validator=args.blender_ext)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    validated = "Blender's validator" if (args.blender_ext or find_blender_validator()) else "the built-in checks"
    print(f"wrote {target} (checked with {validated})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
