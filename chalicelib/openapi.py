"""The REST API's OpenAPI 3.1 document, kept beside the code in openapi.json."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

# Inside chalicelib/ so that `chalice package` ships it with the Lambda.
DOCUMENT_PATH = Path(__file__).with_name("openapi.json")


@functools.cache
def document() -> dict[str, Any]:
    """The document, read once per Lambda container."""
    loaded: dict[str, Any] = json.loads(DOCUMENT_PATH.read_text(encoding="utf-8"))
    return loaded
