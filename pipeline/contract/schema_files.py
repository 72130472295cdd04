"""The versioned JSON Schema files of every topic that enters or leaves the service, generated from the records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter

from pipeline.contract.messages import INPUT_EVENTS, OUTPUT_RECORDS
from pipeline.events.models import SCHEMA_VERSION

SCHEMA_DIR = Path(__file__).with_name("schemas")


def schema_documents() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema document, for every input and output topic."""
    documents = {}
    for topic, model in {**INPUT_EVENTS, **OUTPUT_RECORDS}.items():
        if isinstance(model, type) and issubclass(model, BaseModel):
            schema = model.model_json_schema()
        else:  # a union of records, told apart by a discriminator field
            schema = TypeAdapter(model).json_schema()
            schema["title"] = f"Record on {topic}"
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"urn:provisioning-service:events:{topic}:v{SCHEMA_VERSION}"
        schema["x-topic"] = topic
        documents[f"{topic}.v{SCHEMA_VERSION}.json"] = schema
    return documents


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def write_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, document in schema_documents().items():
        path = directory / name
        path.write_text(render(document))
        written.append(path)
    return written
