"""Options of the ``haive-lg backup`` commands that name archive locations and labels.

An archive is a path, a ``file://`` URL, or a URL of an object store
(``s3://bucket/key``, ``gs://``, ``az://``); credentials come from the
store's usual environment (``AWS_ACCESS_KEY_ID`` ... for S3), the endpoint
of an S3-compatible store from ``--endpoint-url`` or ``HAIVE_S3_ENDPOINT_URL``.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from haive_langgraph.cli._common import repeatable

EndpointOption = Annotated[
    str | None,
    typer.Option(
        "--endpoint-url",
        help="Endpoint of an S3-compatible store for s3:// URLs (default: "
        "HAIVE_S3_ENDPOINT_URL, else AWS).",
    ),
]
LabelOption = Annotated[
    str | None, typer.Option("--label", help="A label stored in the archive's manifest.")
]
MetaOption = Annotated[
    list[str] | None, repeatable("--meta", "KEY=VALUE stored in the archive's manifest")
]


def storage_options(endpoint_url: str | None) -> dict[str, Any] | None:
    """The fsspec options the command line sets (the endpoint), or ``None``."""
    return {"endpoint_url": endpoint_url} if endpoint_url else None


def metadata(items: list[str] | None) -> dict[str, str] | None:
    """``--meta KEY=VALUE`` items as a mapping."""
    if not items:
        return None
    from haive_langgraph.ops._archive_meta import parse_metadata

    return parse_metadata(items)
