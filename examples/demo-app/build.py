"""Build dist/demo-app-<version>.zip from app/: `python build.py [--out DIR] [--port N]`.

The zip holds start.sh, meta.ini and server.py at its root, as `POST /v1/apps/upload`
wants. It is reproducible: fixed timestamps and modes, files in sorted order. `--port`
changes the port of the `service=` line in the zipped meta.ini (the app listens on that
port), e.g. to stay clear of a port already taken on the nodes.
"""

from __future__ import annotations

import argparse
import configparser
import re
import stat
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
APP = HERE / "app"
EPOCH = (2020, 1, 1, 0, 0, 0)
_SERVICE_PORT = re.compile(r"^(service[ \t]*=[ \t]*[^:\n]+:[^:\n]+:)\d+[ \t]*$", re.M)


def read_meta(app: Path = APP) -> dict[str, str]:
    parser = configparser.ConfigParser()
    parser.read_string("[meta]\n" + (app / "meta.ini").read_text())
    return dict(parser["meta"])


def with_port(meta: str, port: int) -> str:
    """meta.ini text whose service line says `port`."""
    if not 1 <= port <= 65535:
        raise SystemExit(f"--port must be 1..65535, got {port}")
    changed, count = _SERVICE_PORT.subn(rf"\g<1>{port}", meta)
    if count != 1:
        raise SystemExit("meta.ini must have exactly one service= line to change its port")
    return changed


def build(out_dir: Path = HERE / "dist", app: Path = APP, port: int | None = None) -> Path:
    meta = read_meta(app)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{meta['name']}-{meta['version']}.zip"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in app.iterdir() if p.is_file() and p.suffix != ".pyc"):
            data = path.read_bytes()
            if path.name == "meta.ini" and port is not None:
                data = with_port(data.decode(), port).encode()
            info = zipfile.ZipInfo(path.name, EPOCH)
            mode = 0o755 if path.name.endswith(".sh") else 0o644
            info.external_attr = (stat.S_IFREG | mode) << 16  # a regular file, with its mode
            info.create_system = 3  # Unix, wherever it is built
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "dist", help="output directory")
    parser.add_argument("--port", type=int, help="the service port (default: meta.ini's)")
    args = parser.parse_args()
    print(build(args.out, port=args.port))


if __name__ == "__main__":
    main()
