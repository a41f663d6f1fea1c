"""A bucket-bound S3 client whose every failure is one clear `RegistryError`.

The registry talks to S3 only through :class:`Bucket`. It builds the boto3
client from a `RegistryConfig` (bounded retries, timeouts, path-style
addressing for S3-compatible endpoints; credentials from the standard AWS
environment variables and profiles) and translates botocore's exceptions into
one-line messages that name the endpoint, the bucket and what was being done:
an unreachable server, rejected or missing credentials, a missing bucket.

Conditional writes are the registry's only concurrency primitive:
`put_new` (`If-None-Match: *`) creates a key only if nothing is there, and
`put_if_match` (`If-Match: <etag>`) replaces a key only if nobody changed it
since it was read. Both return `False` on HTTP 412 instead of raising.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, BinaryIO

import boto3
import botocore.exceptions
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
)

from pmg.config import RegistryConfig
from pmg.errors import RegistryError

# Codes S3 (and S3-compatible servers) answer when the key pair is wrong or
# not allowed; HEAD requests carry no body, so only the bare status code.
_CREDENTIAL_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AccessDenied",
        "InvalidToken",
        "ExpiredToken",
        "InvalidClientTokenId",
        "AuthorizationHeaderMalformed",
        "403",
    }
)
_MISSING_BUCKET_CODES = frozenset({"NoSuchBucket"})
_MISSING_KEY_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_PRECONDITION_CODES = frozenset({"PreconditionFailed", "412"})


def make_client(cfg: RegistryConfig) -> Any:
    """Build the boto3 S3 client the registry uses.

    Retries use botocore's `standard` mode with `cfg.max_attempts` retries
    (so at most `max_attempts + 1` requests, with jittered exponential
    backoff), so a down server fails after a bounded time. A configured
    `endpoint_url` (SeaweedFS, MinIO, ...) gets path-style addressing, which
    every S3-compatible server and AWS itself accept.

    Raises:
        RegistryError: `AWS_PROFILE` names a profile that does not exist,
            the environment has half a key pair, or the endpoint URL is
            not one.
    """
    config = Config(
        retries={"max_attempts": cfg.max_attempts, "mode": "standard"},
        connect_timeout=cfg.connect_timeout,
        read_timeout=cfg.read_timeout,
        s3={"addressing_style": "path"} if cfg.endpoint_url else None,
    )
    try:
        session = boto3.session.Session()
        return session.client("s3", endpoint_url=cfg.endpoint_url, region_name=cfg.region, config=config)
    except ProfileNotFound as err:
        raise RegistryError(f"AWS profile not found: {err}; check AWS_PROFILE") from None
    except PartialCredentialsError as err:
        # e.g. an access key with an empty secret: botocore resolves env
        # credentials when the client is built, before any request.
        raise RegistryError(
            f"incomplete AWS credentials ({err}): set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(or AWS_PROFILE)"
        ) from None
    except (BotoCoreError, ValueError) as err:
        where = cfg.endpoint_url or "AWS S3"
        raise RegistryError(f"cannot set up an S3 client for {where}: {err}") from None


def _error_code(err: ClientError) -> str:
    return str(
        err.response.get("Error", {}).get("Code")
        or err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
    )


class Bucket:
    """One bucket of one endpoint, with errors translated for people.

    Args:
        cfg: the registry section (bucket, endpoint, retries).
        client: a boto3 S3 client to use instead of building one (tests pass
            one with explicit credentials or an injected failure).
    """

    def __init__(self, cfg: RegistryConfig, client: Any | None = None) -> None:
        self.cfg = cfg
        self.name = cfg.bucket
        self.client = client if client is not None else make_client(cfg)
        self.endpoint = str(self.client.meta.endpoint_url)

    # ----------------------------------------------------------- errors

    def _attempts(self) -> int | None:
        # botocore's `max_attempts` counts retries; it keeps the total here.
        retries = getattr(self.client.meta.config, "retries", None) or {}
        if "total_max_attempts" in retries:
            return int(retries["total_max_attempts"])
        return int(retries["max_attempts"]) + 1 if "max_attempts" in retries else None

    def translate(self, err: Exception, what: str) -> RegistryError:
        """The `RegistryError` a botocore exception stands for, in one line."""
        where = f"{self.endpoint} (bucket {self.name!r})"
        if isinstance(err, ClientError):
            code = _error_code(err)
            if code in _CREDENTIAL_CODES:
                return RegistryError(
                    f"credentials rejected by {self.endpoint} ({code}) while {what} in bucket {self.name!r}: "
                    "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
                )
            if code in _MISSING_BUCKET_CODES:
                return self.missing_bucket()
            message = err.response.get("Error", {}).get("Message") or "no message"
            return RegistryError(f"S3 error {code} from {where} while {what}: {message}")
        if isinstance(err, (NoCredentialsError, PartialCredentialsError)):
            return RegistryError(
                f"no usable AWS credentials for {self.endpoint} while {what}: "
                "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE"
            )
        if isinstance(err, (botocore.exceptions.ConnectionError, HTTPClientError)):
            attempts = self._attempts()
            tries = f" after {attempts} attempts" if attempts else ""
            return RegistryError(f"cannot reach S3 endpoint {where} while {what}{tries}: {err}")
        return RegistryError(f"S3 request to {where} failed while {what}: {err}")

    def missing_bucket(self) -> RegistryError:
        return RegistryError(
            f"bucket {self.name!r} does not exist at {self.endpoint}: create it with `pmg registry init` "
            "(or `pmg registry push --create-bucket`)"
        )

    @contextlib.contextmanager
    def errors(self, what: str) -> Iterator[None]:
        """Turn any botocore failure inside the block into a `RegistryError`."""
        try:
            yield
        except (ClientError, BotoCoreError) as err:
            raise self.translate(err, what) from err

    # ------------------------------------------------------------ bucket

    def exists(self) -> bool:
        """Whether the bucket exists (and the credentials may see it)."""
        try:
            self.client.head_bucket(Bucket=self.name)
        except ClientError as err:
            if _error_code(err) in ({"404"} | _MISSING_BUCKET_CODES):
                return False
            raise self.translate(err, "checking the bucket") from err
        except BotoCoreError as err:
            raise self.translate(err, "checking the bucket") from err
        return True

    def require(self) -> None:
        """Raise a clear `RegistryError` unless the bucket exists."""
        if not self.exists():
            raise self.missing_bucket()

    def create(self) -> bool:
        """Create the bucket if it is missing; return whether it was created."""
        if self.exists():
            return False
        kwargs: dict[str, Any] = {"Bucket": self.name}
        region = self.cfg.region
        if region and region != "us-east-1" and not self.cfg.endpoint_url:
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self.client.create_bucket(**kwargs)
        except ClientError as err:
            if _error_code(err) in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                return False
            raise self.translate(err, "creating the bucket") from err
        except BotoCoreError as err:
            raise self.translate(err, "creating the bucket") from err
        return True

    # ------------------------------------------------------------ objects

    def put_new(self, key: str, body: bytes | BinaryIO, what: str, content_type: str | None = None) -> bool:
        """Create `key` only if no object exists there (`If-None-Match: *`).

        Returns:
            True if this call created the object, False if one already existed.
        """
        kwargs: dict[str, Any] = {"Bucket": self.name, "Key": key, "Body": body, "IfNoneMatch": "*"}
        if content_type:
            kwargs["ContentType"] = content_type
        try:
            self.client.put_object(**kwargs)
        except ClientError as err:
            if _error_code(err) in _PRECONDITION_CODES:
                return False
            raise self.translate(err, what) from err
        except BotoCoreError as err:
            raise self.translate(err, what) from err
        return True

    def put_if_match(self, key: str, body: bytes, etag: str, what: str) -> bool:
        """Replace `key` only if its ETag is still `etag` (`If-Match`).

        Returns:
            True if replaced, False if the object changed (or vanished) since.
        """
        try:
            self.client.put_object(
                Bucket=self.name, Key=key, Body=body, IfMatch=etag, ContentType="application/json"
            )
        except ClientError as err:
            if _error_code(err) in _PRECONDITION_CODES | _MISSING_KEY_CODES:
                return False
            raise self.translate(err, what) from err
        except BotoCoreError as err:
            raise self.translate(err, what) from err
        return True

    def get(self, key: str, what: str) -> tuple[bytes, str] | None:
        """The object's bytes and ETag, or None if there is no such key."""
        try:
            response = self.client.get_object(Bucket=self.name, Key=key)
            return response["Body"].read(), str(response["ETag"])
        except ClientError as err:
            if _error_code(err) in _MISSING_KEY_CODES:
                return None
            raise self.translate(err, what) from err
        except BotoCoreError as err:
            raise self.translate(err, what) from err

    def stream(self, key: str, what: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Yield the object's bytes in chunks (errors translated, also mid-read).

        Raises:
            RegistryError: the key does not exist, or any S3 failure.
        """
        try:
            response = self.client.get_object(Bucket=self.name, Key=key)
            yield from response["Body"].iter_chunks(chunk_size)
        except ClientError as err:
            if _error_code(err) in _MISSING_KEY_CODES:
                raise RegistryError(
                    f"s3://{self.name}/{key} is missing at {self.endpoint} while {what}"
                ) from err
            raise self.translate(err, what) from err
        except BotoCoreError as err:
            raise self.translate(err, what) from err

    def delete(self, key: str, what: str) -> None:
        with self.errors(what):
            self.client.delete_object(Bucket=self.name, Key=key)

    def list_keys(self, prefix: str, what: str) -> dict[str, int]:
        """Every key under `prefix` with its size in bytes."""
        out: dict[str, int] = {}
        with self.errors(what):
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.name, Prefix=prefix):
                for item in page.get("Contents", []):
                    out[item["Key"]] = int(item["Size"])
        return out

    def list_folders(self, prefix: str, what: str) -> list[str]:
        """The immediate "sub-folders" (common prefixes) under `prefix`."""
        out: list[str] = []
        with self.errors(what):
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.name, Prefix=prefix, Delimiter="/"):
                out.extend(item["Prefix"] for item in page.get("CommonPrefixes", []))
        return out
