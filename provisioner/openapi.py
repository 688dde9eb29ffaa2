"""The API's OpenAPI document: data in openapi.yaml, served as JSON."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import yaml

from provisioner import __version__


@lru_cache(maxsize=1)
def openapi_document() -> dict:
    doc = yaml.safe_load(resources.files("provisioner").joinpath("openapi.yaml").read_text())
    doc["info"]["version"] = __version__
    return doc
