"""Debian packages some tests need (a cross compiler and qemu for aarch64, clang), installed on
first use with apt-get, so CI on a fresh machine runs those tests instead of skipping them.

    require({"clang": "clang"})                     # binary -> Debian package

Missing binaries are installed (apt-get install; apt-get update first if that fails). Where they
cannot be installed on a Debian machine the test fails with apt's message; on a machine without
apt-get (not Debian) it is skipped, saying what to install."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

import pytest


@functools.lru_cache(maxsize=None)
def _apt_install(packages: tuple[str, ...]) -> str | None:
    """None on success, else the last line apt printed."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if r.returncode:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, text=True, env=env, timeout=900)
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if r.returncode:
        lines = (r.stderr or r.stdout).strip().splitlines()
        return lines[-1] if lines else f"apt-get exited {r.returncode}"
    return None


def require(tools: dict[str, str]) -> None:
    """Make every binary of `tools` (binary -> Debian package) available, or fail/skip the test."""
    missing = {b: p for b, p in tools.items() if shutil.which(b) is None}
    if not missing:
        return
    packages = tuple(sorted(set(missing.values())))
    if shutil.which("apt-get") is None:
        pytest.skip(f"needs {', '.join(missing)} (Debian packages {' '.join(packages)}); no apt-get here")
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        pytest.skip(f"needs {', '.join(missing)}: run `apt-get install {' '.join(packages)}` as root")
    why = _apt_install(packages)
    still = [b for b in missing if shutil.which(b) is None]
    if still:
        pytest.fail(f"could not install {' '.join(packages)} for {', '.join(still)}: {why}")
