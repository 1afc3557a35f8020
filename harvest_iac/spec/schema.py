"""The JSON Schema of one environment file, for editors (`harvest schema`)."""

from __future__ import annotations

import json
from typing import Any

from harvest_iac.spec.models import EnvironmentSpec

SCHEMA_ID = "https://github.com/harvest-iac/harvest/schema/environment-v1.json"


def schema() -> dict[str, Any]:
    """The schema of a file as written: `extends` allowed, `environment` and `app` optional
    (a base file has neither; an environment gets them from itself or its base)."""
    document = EnvironmentSpec.model_json_schema(by_alias=True, mode="validation")
    document["properties"]["extends"] = {
        "type": "string",
        "description": "a base file (path relative to this file) merged under this one",
    }
    document["required"] = ["harvest"]
    document["title"] = "harvest environment file"
    document["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    document["$id"] = SCHEMA_ID
    return document


def schema_json() -> str:
    """The schema as stable, sorted JSON text."""
    return json.dumps(schema(), indent=2, sort_keys=True)
