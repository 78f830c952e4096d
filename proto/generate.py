"""Regenerate (or check) the committed Python code for the fairy/v1 contract.

    python proto/generate.py          # rewrite proto/fairy_proto/v1/*
    python proto/generate.py --check  # exit 1 if the committed code is stale

The generated modules are committed so a plain ``pip install`` needs no
grpcio-tools; ``tests/server/test_proto_current.py`` runs ``--check``.
"""

from __future__ import annotations

import argparse
import pathlib
import re
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
PROTO = "fairy/v1/fairy.proto"
PACKAGE_DIR = HERE / "fairy_proto" / "v1"
GENERATED = ("fairy_pb2.py", "fairy_pb2.pyi", "fairy_pb2_grpc.py")


def _generate(out_dir: pathlib.Path) -> None:
    from grpc_tools import protoc

    argv = [
        "protoc",
        f"-I{HERE}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        str(HERE / PROTO),
    ]
    if protoc.main(argv) != 0:
        raise SystemExit("protoc failed")
    grpc_file = out_dir / "fairy" / "v1" / "fairy_pb2_grpc.py"
    # protoc writes an absolute import (`from fairy.v1 import fairy_pb2`) that
    # would resolve to the model library; the generated modules live in
    # fairy_proto.v1, so make it package-relative.
    text = grpc_file.read_text()
    text = re.sub(r"^from fairy\.v1 import fairy_pb2", "from . import fairy_pb2", text, flags=re.M)
    grpc_file.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare with the committed code")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = pathlib.Path(tmp)
        _generate(tmp_path)
        stale = []
        for name in GENERATED:
            new = (tmp_path / "fairy" / "v1" / name).read_text()
            target = PACKAGE_DIR / name
            if not target.exists() or target.read_text() != new:
                stale.append(name)
                if not args.check:
                    target.write_text(new)
    if args.check and stale:
        print(f"stale generated code: {', '.join(stale)}; run python proto/generate.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
