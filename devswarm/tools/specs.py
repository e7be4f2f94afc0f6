"""What the model is told about the tools: argument models, results, errors, and specs.

Every tool takes a pydantic arguments model (its JSON schema is what the model is shown) and
its handler's docstring is the tool's description, written for the model. The specs are part
of every cached request prefix: a change here re-bills it (tests/test_tool_specs.py pins them).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ToolResult(BaseModel):
    """A tool's answer: the text the model reads, an error type for records, finish arguments."""

    output: str
    error_type: str | None = None
    finish: dict | None = None


class ToolError(Exception):
    """A mistake the model can recover from; becomes ToolResult(error_type=..., output=message)."""

    error_type = "tool_error"

    def __init__(self, message: str, error_type: str | None = None) -> None:
        super().__init__(message)
        if error_type is not None:
            self.error_type = error_type


# -- argument models (their schemas are what the model sees) ---------------------------------


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")  # → "additionalProperties": false


class ListFilesArgs(_Args):
    path: str = Field(".", description="Folder to list, relative to the repository root.")
    pattern: str = Field(
        "**/*",
        description="Glob for the files to list, e.g. '*.py' (a name at any depth), "
        "'src/**/*.ts' (a path under the folder), '*.{js,ts}'.",
    )


class ReadFileArgs(_Args):
    path: str = Field(description="File to read, relative to the repository root.")
    start_line: int = Field(1, ge=1, description="First line to show (1-based).")
    end_line: int | None = Field(None, ge=1, description="Last line to show; default: the end.")


class WriteFileArgs(_Args):
    path: str = Field(description="File to create or overwrite, relative to the repository root.")
    content: str = Field(description="The complete new content of the file.")


class EditFileArgs(_Args):
    path: str = Field(description="File to edit, relative to the repository root.")
    old: str = Field(
        description="Exact text to replace, including whitespace and indentation; it must "
        "occur exactly once in the file."
    )
    new: str = Field(description="The text to put in its place (may be empty to delete).")


class SearchArgs(_Args):
    pattern: str = Field(description="Regular expression (Perl-style) to search for.")
    path: str = Field(".", description="Folder or file to search, relative to the repository root.")
    glob: str | None = Field(
        None, description="Only search files matching this glob, e.g. '*.py' or 'tests/**/*.py'."
    )


class RunArgs(_Args):
    command: str = Field(min_length=1, description="A bash command, run in the repository root.")
    timeout: float | None = Field(
        None,
        gt=0,
        description="Seconds before the command is killed; default and maximum: the limit.",
    )


class FinishArgs(_Args):
    summary: str = Field(description="What you did: the changes, and how you checked them.")
    not_done: str = Field("", description="What you did not do or could not finish, and why.")
    concerns: str = Field(
        "", description="Risks, doubts or follow-up work your planner should know."
    )


# -- specs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tool:
    """One tool: its name, its arguments model, and the handler that runs it."""

    name: str
    args: type[BaseModel]
    # called with the Toolbox and the validated arguments; its docstring is the description
    handler: Callable[[Any, Any], str | ToolResult]
    writes: bool  # hidden from read-only agents


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema without pydantic's titles (tokens the model doesn't need)."""
    schema = model.model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    return schema


def _description(tool: Tool) -> str:
    """The handler's docstring as one paragraph: the tool's description for the model."""
    return " ".join((inspect.getdoc(tool.handler) or "").split())


def tool_spec(tool: Tool) -> dict:
    """The tool in the OpenAI `tools` request parameter format."""
    return {
        "type": "function",
        "function": {
            "name": tool.name,
            "description": _description(tool),
            "parameters": _schema(tool.args),
        },
    }
