"""fairy_proto.files: a target appears complete or not at all, with the mode a new file gets."""

from __future__ import annotations

import os
import pathlib
import stat
import subprocess
import sys
import threading

import pytest

from fairy_proto import files
from fairy_proto.files import StagedPath, atomic_path, atomic_write


@pytest.fixture
def umask_027():
    previous = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(previous)


def names(folder: pathlib.Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def mode_of(path: pathlib.Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_write_writes_the_content_with_the_mode_the_umask_gives(tmp_path, umask_027):
    target = tmp_path / "result.json"
    with atomic_write(target, "w") as f:
        f.write('{"snow": "ä"}')
        # The data goes to a hidden name beside the target, with the target's suffix.
        (temp,) = [p for p in tmp_path.iterdir()]
        assert temp.name.startswith(".result.partial-") and temp.name.endswith(".json")
        assert not target.exists()
    assert target.read_bytes() == '{"snow": "ä"}'.encode()  # text is UTF-8 by default
    assert mode_of(target) == 0o640  # not mkstemp's 0600
    assert names(tmp_path) == {"result.json"}


def test_binary_mode_and_an_explicit_file_mode(tmp_path):
    target = tmp_path / "package.zip"
    with atomic_write(target, file_mode=0o644, fsync=True) as f:
        f.write(b"PK\x05\x06" + b"\0" * 18)
    assert target.read_bytes().startswith(b"PK")
    assert mode_of(target) == 0o644


def test_current_umask_is_read_without_changing_it(umask_027):
    assert files.current_umask() == 0o027
    assert files.new_file_mode() == 0o640
    assert os.umask(0o027) == 0o027  # still what the fixture set


@pytest.mark.parametrize("error", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_an_exception_mid_write_leaves_the_old_target_and_no_temporary(tmp_path, error):
    target = tmp_path / "timeline.otio"
    target.write_text("old")
    with pytest.raises(type(error)):
        with atomic_write(target, "w", overwrite=True) as f:
            f.write("half of the new")
            f.flush()
            raise error
    assert target.read_text() == "old"
    assert names(tmp_path) == {"timeline.otio"}


@pytest.mark.parametrize("error", [ValueError("encoder crashed"), KeyboardInterrupt()])
def test_an_exception_leaves_no_new_target_either(tmp_path, error):
    with pytest.raises(type(error)):
        with atomic_path(tmp_path / "edit.mp4") as temp:
            temp.write_bytes(b"partial frames")
            raise error
    assert names(tmp_path) == set()


def test_an_existing_target_is_refused_without_overwrite(tmp_path):
    target = tmp_path / "edit.mp4"
    target.write_bytes(b"keep me")
    with pytest.raises(FileExistsError) as info:
        with atomic_write(target):
            pytest.fail("the block must not run")
    assert str(info.value) == f"{target} already exists (pass overwrite=True to replace it)"
    with pytest.raises(FileExistsError):
        with atomic_path(target):
            pytest.fail("the block must not run")
    assert target.read_bytes() == b"keep me"
    with atomic_write(target, overwrite=True) as f:
        f.write(b"new")
    assert target.read_bytes() == b"new"
    assert names(tmp_path) == {"edit.mp4"}


def test_a_target_that_appears_during_the_write_is_not_replaced(tmp_path):
    target = tmp_path / "edit.mp4"
    with pytest.raises(FileExistsError, match="already exists"):
        with atomic_write(target) as f:
            f.write(b"mine")
            target.write_bytes(b"someone else's")
    assert target.read_bytes() == b"someone else's"
    assert names(tmp_path) == {"edit.mp4"}


def test_the_path_variant_for_writers_that_open_the_file_themselves(tmp_path, umask_027):
    target = tmp_path / "cut.otio"
    with atomic_path(target) as temp:
        assert temp.parent == tmp_path and temp.suffix == ".otio" and temp.name.startswith(".")
        assert not temp.exists()  # some writers refuse to write over a file
        temp.write_text("{}")
        assert not target.exists()
    assert target.read_text() == "{}"
    assert mode_of(target) == 0o640
    assert names(tmp_path) == {"cut.otio"}


def test_the_path_variant_takes_a_folder_and_replaces_an_old_one(tmp_path):
    target = tmp_path / "model"
    with atomic_path(target) as temp:
        temp.mkdir()
        (temp / "weights.bin").write_bytes(b"1")
    assert names(target) == {"weights.bin"}
    with atomic_path(target, overwrite=True) as temp:
        temp.mkdir()
        (temp / "config.json").write_text("{}")
    assert names(target) == {"config.json"}
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target, overwrite=True) as temp:
            temp.mkdir()
            (temp / "half.bin").write_bytes(b"")
            raise KeyboardInterrupt
    assert names(target) == {"config.json"}
    assert names(tmp_path) == {"model"}


def test_nothing_written_is_an_error_and_leaves_nothing(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing was written"):
        with atomic_path(tmp_path / "empty.mp4"):
            pass
    assert names(tmp_path) == set()


def test_staged_path_spans_several_calls(tmp_path):
    """An upload or an encoder: opened in one call, written in others, committed or discarded at the end."""
    target = tmp_path / "sub" / "clip.mov"
    staged = StagedPath(target, folder=tmp_path, overwrite=True, fsync=True)
    assert staged.path.parent == tmp_path and staged.path.match(files.TEMPORARY_GLOB)
    out = staged.open()
    out.write(b"chunk 1,")
    out.write(b"chunk 2")
    target.parent.mkdir()
    assert staged.commit() == target
    assert target.read_bytes() == b"chunk 1,chunk 2"
    staged.discard()  # after a commit: nothing to do
    assert target.exists()

    other = StagedPath(tmp_path / "other.mov")
    other.open().write(b"x")
    other.discard()
    other.discard()
    assert names(tmp_path) == {"sub"}
    with pytest.raises(RuntimeError):
        other.commit()


def test_staged_path_as_a_context_manager(tmp_path):
    with StagedPath(tmp_path / "a.txt") as staged:
        staged.path.write_text("a")
    assert (tmp_path / "a.txt").read_text() == "a"
    with pytest.raises(KeyboardInterrupt):
        with StagedPath(tmp_path / "b.txt") as staged:
            staged.open("w").write("b")
            raise KeyboardInterrupt
    assert names(tmp_path) == {"a.txt"}


def test_only_write_modes(tmp_path):
    for mode in ("r", "ab", "rb+", "x"):
        with pytest.raises(ValueError, match="mode must be"):
            with atomic_write(tmp_path / "f", mode):
                pass
    assert names(tmp_path) == set()


def test_a_long_name_keeps_its_suffix_within_the_name_limit(tmp_path):
    target = tmp_path / ("é" * 120 + ".safetensors")  # 240 bytes + suffix
    with atomic_write(target) as f:
        f.write(b"w")
        (temp,) = tmp_path.iterdir()
        assert temp.name.endswith(".safetensors") and len(os.fsencode(temp.name)) <= 255
    assert target.read_bytes() == b"w"


def test_concurrent_writers_of_one_target_never_leave_a_mixed_file(tmp_path):
    target = tmp_path / "pending.json"

    def write(n: int) -> None:
        for _ in range(20):
            with atomic_write(target, overwrite=True) as f:
                f.write(bytes([n]) * 10000)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    data = target.read_bytes()
    assert len(data) == 10000 and len(set(data)) == 1
    assert names(tmp_path) == {"pending.json"}


def test_the_module_imports_only_the_standard_library():
    code = ("import sys; import fairy_proto.files; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "{'grpc', 'google', 'torch', 'fairy', 'fairy_server', 'fairy_plugin'}); print(bad)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
