"""Export files in S3: `exports/<tenant>/<export_id>.<ext>` in the session bucket, SSE-KMS, written
by multipart upload part by part (so an export is never whole in memory), handed out by a
presigned GET. The bucket's `ExpireExports` lifecycle rule deletes them after a day; incomplete
multipart uploads are aborted by the `AbortIncompleteMultipart` rule.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.domain.errors import DependencyUnavailable
from chalicelib.observability import logger


def _unavailable(action: str, exc: Exception) -> DependencyUnavailable:
    code = exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else type(exc).__name__
    logger.warning("export storage call failed", extra={"action": action, "aws_error": code})
    return DependencyUnavailable("The export could not be stored; retry shortly.", code="storage_unavailable")


class S3ExportObjects:
    def __init__(self, s3: Any, *, bucket: str, kms_key_id: str) -> None:
        self._s3 = s3
        self._bucket = bucket
        self._kms_key_id = kms_key_id

    @staticmethod
    def export_key(tenant: str, export_id: str, ext: str) -> str:
        return f"exports/{tenant}/{export_id}.{ext}"

    def start(self, key: str, content_type: str) -> str:
        try:
            resp = self._s3.create_multipart_upload(Bucket=self._bucket, Key=key, ContentType=content_type,
                                                    ServerSideEncryption="aws:kms", SSEKMSKeyId=self._kms_key_id)
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable("create_multipart_upload", exc) from None
        return str(resp["UploadId"])

    def upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> str:
        try:
            resp = self._s3.upload_part(Bucket=self._bucket, Key=key, UploadId=upload_id, PartNumber=number,
                                        Body=data)
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable("upload_part", exc) from None
        return str(resp["ETag"])

    def complete(self, key: str, upload_id: str, etags: list[str]) -> None:
        parts = [{"PartNumber": i + 1, "ETag": etag} for i, etag in enumerate(etags)]
        try:
            self._s3.complete_multipart_upload(Bucket=self._bucket, Key=key, UploadId=upload_id,
                                               MultipartUpload={"Parts": parts})
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable("complete_multipart_upload", exc) from None

    def abort(self, key: str, upload_id: str) -> None:
        try:
            self._s3.abort_multipart_upload(Bucket=self._bucket, Key=key, UploadId=upload_id)
        except (ClientError, BotoCoreError) as exc:
            # The bucket's lifecycle rule aborts it after a day anyway.
            logger.warning("export upload abort failed", extra={"aws_error": type(exc).__name__})

    def presign_get(self, key: str, *, expires_in: int, filename: str) -> str:
        try:
            url = self._s3.generate_presigned_url(
                "get_object", ExpiresIn=expires_in, HttpMethod="GET",
                Params={"Bucket": self._bucket, "Key": key,
                        "ResponseContentDisposition": f'attachment; filename="{filename}"'})
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable("presign_get", exc) from None
        return str(url)
