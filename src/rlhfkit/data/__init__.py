"""Record schemas, file loading, validation and prompt formatting."""

from rlhfkit.data.records import (
    demonstration_response,
    format_prompt,
    load_records,
    prompt_messages,
    prompt_text,
    read_rows,
)

__all__ = ["demonstration_response", "format_prompt", "load_records", "prompt_messages", "prompt_text", "read_rows"]
