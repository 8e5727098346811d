"""An embedded S3 server for the demo: moto's ThreadedMotoServer on 127.0.0.1, a free port, quiet."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# moto accepts any credentials; these are set for the demo's own process only (boto3 reads them from the env).
ACCESS_KEY = "demo"
SECRET_KEY = "demo"  # noqa: S105 - not a secret: moto accepts anything
REGION = "us-east-1"


class DemoS3:
    """moto's S3 server in a thread of this process; `stop()` (or leaving the `with`) shuts it down."""

    def __init__(self) -> None:
        self._server: Any = None
        self.url = ""

    def __enter__(self) -> DemoS3:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> str:
        """Start the server on a free loopback port (port 0: the kernel picks it at bind time); returns its URL."""
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # werkzeug logs every request at INFO
        from moto.server import ThreadedMotoServer  # noqa: PLC0415 - only the demo needs moto

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()  # returns once the socket listens
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        return self.url

    def stop(self) -> None:
        """Shut the server down (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            server.stop()

    def client(self) -> S3Client:
        """A boto3 client for the server (path-style; checksums only where required, as the agent's)."""
        import boto3  # noqa: PLC0415
        from botocore.config import Config  # noqa: PLC0415

        config = Config(request_checksum_calculation="when_required", response_checksum_validation="when_required",
                        s3={"addressing_style": "path"}, retries={"mode": "standard", "total_max_attempts": 3})
        client: S3Client = boto3.session.Session().client(
            "s3", endpoint_url=self.url, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
            region_name=REGION, config=config)
        return client

    def make_lock_bucket(self, name: str) -> str:
        """Create a bucket with Object Lock enabled (which turns versioning on); no default retention."""
        self.client().create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
        return name
