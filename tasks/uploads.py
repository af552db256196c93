"""Receiving a run's result file: streamed to a temporary file, hashed and counted on the way in.

The result is never held in memory. Two limits guard the disk as well:

- a request whose Content-Length exceeds VANTAGE_MAX_RESULT_BYTES plus room for the
  multipart framing and the other form fields is refused (413) before a byte of it
  is parsed;
- whatever the headers claim, the handler counts the bytes it actually receives and
  stops at the limit (413), deleting what it wrote.
"""

import hashlib

from django.conf import settings
from django.core.files.uploadedfile import TemporaryUploadedFile
from django.core.files.uploadhandler import FileUploadHandler

from core.errors import DomainError, TooLarge

RESULT_FIELD = "result"
# Boundaries, part headers and the small fields (status, exit_code, error_kind).
FORM_FRAMING_BYTES = 64 * 1024


def max_finish_request_bytes() -> int:
    """The largest finish request worth parsing: the result, a full log (UTF-8, up to 4 bytes a character), framing."""
    return settings.VANTAGE_MAX_RESULT_BYTES + 4 * settings.VANTAGE_RUN_LOG_MAX_CHARS + FORM_FRAMING_BYTES


class ReceivedResult(TemporaryUploadedFile):
    """A result file on local disk whose size and SHA-256 were taken while it arrived."""

    sha256: str = ""


class ResultUploadHandler(FileUploadHandler):
    """Takes the one `result` file part of a finish request; refuses anything beyond the limit."""

    chunk_size = 256 * 1024

    def __init__(self, request=None):
        super().__init__(request)
        self.limit = settings.VANTAGE_MAX_RESULT_BYTES
        self.received = 0
        self.file = None

    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        if content_length > max_finish_request_bytes():
            raise TooLarge(
                f"The request is {content_length} bytes; results are limited to "
                f"{settings.VANTAGE_MAX_RESULT_BYTES} bytes."
            )
        return None

    def new_file(self, field_name, *args, **kwargs):
        super().new_file(field_name, *args, **kwargs)
        if field_name != RESULT_FIELD:
            raise DomainError(f"Send the result file as '{RESULT_FIELD}'; no other files are accepted.",
                              field=field_name)
        if self.file is not None:
            self.upload_interrupted()
            raise DomainError("Send one result file.", field=RESULT_FIELD)
        self.file = ReceivedResult(self.file_name, self.content_type, 0, self.charset, self.content_type_extra)
        self.sha256 = hashlib.sha256()

    def receive_data_chunk(self, raw_data, start):
        self.received += len(raw_data)
        if self.received > self.limit:
            self.upload_interrupted()
            raise TooLarge(f"The result exceeds the limit of {self.limit} bytes.")
        self.sha256.update(raw_data)
        self.file.write(raw_data)
        return None

    def file_complete(self, file_size):
        self.file.seek(0)
        self.file.size = file_size
        self.file.sha256 = self.sha256.hexdigest()
        return self.file

    def upload_interrupted(self):
        if self.file is not None:
            self.file.close()  # a named temporary file: closing it deletes it
