"""A real S3 protocol server for tests: moto's server mode, started as a subprocess on a
free loopback port (skipped, saying why, when moto or s3fs is not installed)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class S3Server:
    endpoint: str
    bucket: str

    @property
    def options(self) -> dict[str, Any]:
        return {"endpoint_url": self.endpoint}

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def fs(self) -> Any:
        import s3fs

        return s3fs.S3FileSystem(endpoint_url=self.endpoint, skip_instance_cache=True)

    def keys(self, prefix: str) -> list[str]:
        fs = self.fs()
        try:
            return sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{self.bucket}/{prefix}"))
        except FileNotFoundError:
            return []

    def multipart_uploads(self) -> list[Any]:
        import boto3

        client = boto3.client("s3", endpoint_url=self.endpoint)
        return list(client.list_multipart_uploads(Bucket=self.bucket).get("Uploads", []))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def s3_server() -> Iterator[S3Server]:
    """Start moto's S3 server, set test credentials, make a bucket; stop it afterwards."""
    for module, why in (("moto.server", "moto[server]"), ("s3fs", "s3fs"), ("boto3", "boto3")):
        try:
            __import__(module)
        except ImportError:
            pytest.skip(f"{why} is not installed (pip install -e '.[dev]'): no S3 server to test")
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    saved = {k: os.environ.get(k) for k in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto's S3 server did not start") from None
                time.sleep(0.1)
        server = S3Server(endpoint, f"haive-{uuid.uuid4().hex[:8]}")
        server.fs().mkdir(server.bucket)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
