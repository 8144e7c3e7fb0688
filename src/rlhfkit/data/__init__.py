"""Record schemas, reading data sources (files, folders, datasets), validation and prompt formatting."""

from rlhfkit.data.readers import read_located, read_rows
from rlhfkit.data.records import (
    demonstration_response,
    format_prompt,
    from_trl,
    load_records,
    prompt_messages,
    prompt_text,
)

__all__ = [
    "demonstration_response",
    "format_prompt",
    "from_trl",
    "load_records",
    "prompt_messages",
    "prompt_text",
    "read_located",
    "read_rows",
]
