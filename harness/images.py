"""Target images, built offline and cached by content hash."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Callable

import docker.errors

from harness.errors import TargetError

ROOT = Path(__file__).resolve().parent.parent
DOCKER_DIR = ROOT / "docker"
COMMON_DIR = DOCKER_DIR / "common"
LOCK_PATH = "/tmp/synfin-images.lock"

SLIM_IMAGE = "debian:bookworm-slim"
# No mirror argument: mmdebstrap then uses its default Debian archive for a
# stable suite. The recipe string names the cached base image.
BASE_RECIPE = ["mmdebstrap", "--variant=minbase", "--include=python3", "bookworm"]
BASE_REPO = "synfin-base"
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LOG_TAIL_LINES = 25
# A target folder may hold a `prepare` program: run on the host before the image is built, it
# fetches or compiles what the image needs (wheels, a binary) into `build/`, so image builds need
# no network. Its outputs (and cargo's `target/`) are not part of the content hash; its inputs are.
PREPARE = "prepare"
PREPARED = "build"

Log = Callable[[str], None]


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def base_image_tag() -> str:
    return f"{BASE_REPO}:bookworm-{_digest(' '.join(BASE_RECIPE).encode())}"


def context_files(directory: Path | str, prepared: bool = True) -> list[tuple[str, Path]]:
    """A build context: the target's folder, plus docker/common/ (what agents share) as common/.
    Caches never count; prepared outputs go into the image but not into the content hash."""
    skip = {"__pycache__", "target"} | (set() if prepared else {PREPARED})
    out = []
    for root, prefix in ((Path(directory), ""), (COMMON_DIR, "common/")):
        for path in root.rglob("*"):
            rel = path.relative_to(root)
            if path.is_file() and not skip & set(rel.parts) and path.suffix != ".pyc":
                out.append((prefix + rel.as_posix(), path))
    return sorted(out)


def context_digest(directory: Path | str, base_id: str) -> str:
    """12 hex digits over a build context's files (sorted paths, modes, contents) and the base id."""
    h = hashlib.sha256()
    for name, path in context_files(directory, prepared=False):
        rel = name.encode()
        data = path.read_bytes()
        executable = b"x" if os.stat(path).st_mode & 0o111 else b"-"
        h.update(b"%d:%s%s%d:" % (len(rel), rel, executable, len(data)))
        h.update(data)
    h.update(b"base:" + base_id.encode())
    return h.hexdigest()[:12]


@contextlib.contextmanager
def _build_lock(log: Log):
    """Serialise builds across processes (pytest-xdist workers)."""
    with open(LOCK_PATH, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log("another process is building images; waiting for it")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _exists(client, ref: str) -> bool:
    try:
        client.images.get(ref)
        return True
    except docker.errors.ImageNotFound:
        return False


def ensure_base_image(client, log: Log) -> str:
    """A local Debian bookworm image with python3 (or one apt can add it to)."""
    override = os.environ.get("SYNFIN_BASE_IMAGE")
    if override:
        if not _exists(client, override):
            raise TargetError(f"SYNFIN_BASE_IMAGE={override} is not a local image "
                              f"(docker load or docker build it first)")
        return override
    if _exists(client, SLIM_IMAGE):
        return SLIM_IMAGE
    tag = base_image_tag()
    # A base built earlier wins over the network: repeat runs stay offline.
    if _exists(client, tag):
        return tag
    try:
        log(f"trying to pull {SLIM_IMAGE}")
        with _api_timeout(client, 30):
            client.images.pull("debian", "bookworm-slim")
        return SLIM_IMAGE
    except Exception as exc:  # noqa: BLE001 - no registry is the expected case offline
        log(f"pull of {SLIM_IMAGE} failed ({str(exc).splitlines()[0][:200]}); building locally")
    with _build_lock(log):
        if not _exists(client, tag):
            build_base_image(client, tag, log)
    return tag


@contextlib.contextmanager
def _api_timeout(client, seconds: float):
    # A daemon that cannot reach a registry may stall; bound the HTTP wait.
    old = client.api.timeout
    client.api.timeout = seconds
    try:
        yield
    finally:
        client.api.timeout = old


def build_base_image(client, tag: str, log: Log) -> None:
    """mmdebstrap a minimal bookworm with python3 into a tarball and import it as `tag`."""
    if shutil.which("mmdebstrap") is None:
        raise TargetError(f"no base image: {SLIM_IMAGE} is not local, cannot be pulled, and "
                          f"mmdebstrap is missing; install mmdebstrap (apt-get install mmdebstrap) "
                          f"or set SYNFIN_BASE_IMAGE to a local image")
    log("building base image with mmdebstrap (once, ~20 s)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="synfin-base-") as tmp:
        tarball = os.path.join(tmp, "rootfs.tar")
        proc = subprocess.run(BASE_RECIPE + [tarball], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, errors="replace")
        if proc.returncode != 0:
            tail = "\n".join(proc.stdout.splitlines()[-LOG_TAIL_LINES:])
            raise TargetError(f"base image {tag} failed to build: mmdebstrap exited with "
                              f"code {proc.returncode}\n{tail}")
        repo, _, version = tag.partition(":")
        try:
            client.api.import_image_from_file(tarball, repository=repo, tag=version,
                                              changes=[f"ENV PATH={BASE_PATH}"])
        except docker.errors.APIError as exc:
            raise TargetError(f"base image {tag} failed to import: {exc}") from None
    if not _exists(client, tag):
        raise TargetError(f"base image {tag} failed to import: the tag is missing afterwards")
    log(f"built base image {tag} in {time.monotonic() - started:.1f} s")


def target_image_tag(name: str, base_id: str) -> str:
    return f"synfin-{name}:{context_digest(DOCKER_DIR / name, base_id)}"


def target_image_built(client, name: str) -> bool:
    """Whether docker/<name>/'s current image exists (so starting it builds nothing)."""
    base = base_image_tag()
    if not (DOCKER_DIR / name / "Dockerfile").is_file() or not _exists(client, base):
        return False
    return _exists(client, target_image_tag(name, client.images.get(base).id))


def ensure_target_image(client, name: str, log: Log) -> str:
    """The image for docker/<name>/, built only when its content or base changed."""
    context = DOCKER_DIR / name
    if not (context / "Dockerfile").is_file():
        raise TargetError(f"image synfin-{name}: no {context}/Dockerfile")
    base = ensure_base_image(client, log)
    base_id = client.images.get(base).id
    tag = target_image_tag(name, base_id)
    if _exists(client, tag):
        return tag
    with _build_lock(log):
        if _exists(client, tag):
            return tag
        started = time.monotonic()
        _prepare(context, name, log)
        log(f"building image {tag} from {base}")
        try:
            client.images.build(fileobj=_context_tar(context), custom_context=True,
                                buildargs={"BASE": base}, tag=tag, rm=True, forcerm=True)
        except docker.errors.BuildError as exc:
            lines = []
            for chunk in exc.build_log or []:
                text = chunk.get("stream") or chunk.get("error") or ""
                lines.extend(l for l in text.splitlines() if l.strip())
            tail = "\n".join(lines[-LOG_TAIL_LINES:])
            raise TargetError(f"image synfin-{name} failed to build: {exc.msg}\n{tail}") from None
        except docker.errors.APIError as exc:
            raise TargetError(f"image synfin-{name} failed to build: {exc}") from None
        log(f"built image {tag} in {time.monotonic() - started:.1f} s")
        _prune(client, f"synfin-{name}", keep=tag, log=log)
    return tag


def _context_tar(context: Path) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, path in context_files(context):
            tar.add(str(path), arcname=name)
    buf.seek(0)
    return buf


def _prepare(context: Path, name: str, log: Log) -> None:
    program = context / PREPARE
    if not program.exists():
        return
    log(f"preparing image synfin-{name} on the host ({program.relative_to(ROOT)})")
    proc = subprocess.run([str(program)], cwd=context, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, errors="replace")
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-LOG_TAIL_LINES:])
        raise TargetError(f"image synfin-{name} failed to prepare ({program.name} exited {proc.returncode})\n{tail}")


def _prune(client, repository: str, keep: str, log: Log) -> None:
    """Drop the superseded builds of a target, so cached images do not pile up on the machine."""
    # The low-level listing: the high-level one inspects each image it lists, and fails on one
    # another run removes meanwhile.
    for image in client.api.images(name=repository):
        tags = image.get("RepoTags") or []
        if keep in tags:
            continue
        for old in tags:
            try:
                client.images.remove(old)
                log(f"removed superseded image {old}")
            except docker.errors.APIError:
                pass  # still used by a container of a run going on: a later build removes it
