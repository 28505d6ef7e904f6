"""Build dist/worker-demo-<version>.zip from app/: `python build.py [--out DIR]`.

The zip holds start.sh, meta.ini and worker.py at its root, as `POST /v1/apps/upload`
wants. It is reproducible: fixed timestamps and modes, files in sorted order.
"""

from __future__ import annotations

import argparse
import configparser
import stat
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
APP = HERE / "app"
EPOCH = (2020, 1, 1, 0, 0, 0)


def read_meta(app: Path = APP) -> dict[str, str]:
    parser = configparser.ConfigParser()
    parser.read_string("[meta]\n" + (app / "meta.ini").read_text())
    return dict(parser["meta"])


def build(out_dir: Path = HERE / "dist", app: Path = APP) -> Path:
    meta = read_meta(app)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{meta['name']}-{meta['version']}.zip"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in app.iterdir() if p.is_file() and p.suffix != ".pyc"):
            info = zipfile.ZipInfo(path.name, EPOCH)
            mode = 0o755 if path.name.endswith(".sh") else 0o644
            info.external_attr = (stat.S_IFREG | mode) << 16  # a regular file, with its mode
            info.create_system = 3  # Unix, wherever it is built
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "dist", help="output directory")
    print(build(parser.parse_args().out))


if __name__ == "__main__":
    main()
