"""Tool calls written as text, for servers or models without native tool calling.

The tools are described in the prompt (`tools_prompt`, Hermes style, the format most open
models were trained on), and `parse_text_calls` reads the calls a model writes, in the formats
their documentation gives (fixtures: tests/fixtures/textcalls.json, each with its source):

- Hermes / Qwen: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, one or more, also
  Python-literal dicts (Hermes' README shows single quotes) and Qwen3-Coder's
  `<function=name><parameter=key>value</parameter></function>` inside the tags;
- Llama 3.1: `<|python_tag|>{"name": ..., "parameters": {...}}<|eom_id|>`, the user-defined
  `<function=name>{...}</function>`, and `<|python_tag|>tool.call(key="value")` (also the
  pythonic `[tool(key="value"), ...]` of Llama 3.2);
- Mistral: `[TOOL_CALLS] [{"name": ..., "arguments": {...}}, ...]` (tokenizers v2 to v7) and
  `[TOOL_CALLS]name[ARGS]{...}` (v11, optionally with `[CALL_ID]id`);
- a fenced ```json block or a bare JSON object (or list) with a name and its arguments.

Each call is validated against the tool's schema (known name, an object of arguments, required
ones present, no unknown ones where the schema forbids them, JSON types). What fails becomes an
error the agent shows the model and records as a tool-call error row; it is never fatal.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

NAME_KEYS = ("name", "tool", "tool_name")
ARGUMENT_KEYS = ("arguments", "parameters", "args", "input")
TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
}
HERMES = re.compile(r"<tool_call>(.*?)(?:</tool_call>|\Z)", re.DOTALL)
QWEN_XML = re.compile(r"<function=([^>\s]+)>(.*?)(?:</function>|\Z)", re.DOTALL)
QWEN_PARAM = re.compile(r"<parameter=([^>\s]+)>\n?(.*?)\n?</parameter>", re.DOTALL)
LLAMA_FUNCTION = re.compile(r"<function=([^>\s]+)>(.*?)</function>", re.DOTALL)
PYTHON_TAG = re.compile(r"<\|python_tag\|>(.*?)(?:<\|eom_id\|>|<\|eot_id\|>|\Z)", re.DOTALL)
FENCED = re.compile(r"```(?:json|tool_call|tool_code)?[ \t]*\n(.*?)```", re.DOTALL)
MISTRAL_V11 = re.compile(r"^\s*([\w.-]+)\s*(?:\[CALL_ID\]\s*\w+\s*)?\[ARGS\](.*)$", re.DOTALL)
END_TOKENS = re.compile(r"</s>|<\|eot_id\|>|<\|eom_id\|>|<\|im_end\|>")


@dataclass
class TextCalls:
    """What a reply's text held: valid `calls` (shaped like native ones: id, name, arguments as
    JSON text) and `errors`, one per call that failed (id; name: the tool named, if known;
    written: what was written; error: why it failed). `attempted`: it tried to call a tool."""

    calls: list[dict[str, str]] = field(default_factory=list)
    errors: list[dict[str, str | None]] = field(default_factory=list)
    attempted: bool = False


def tools_prompt(specs: list[dict[str, Any]]) -> str:
    """The tools described in the prompt, and how to call them, for text tool calling."""
    tools = "\n".join(json.dumps(s["function"], sort_keys=True) for s in specs)
    return (
        "You can call tools. They are described in JSON (name, description, parameters as a "
        f"JSON Schema) inside <tools></tools>:\n<tools>\n{tools}\n</tools>\n"
        "To call a tool, write its name and arguments as one JSON object inside "
        "<tool_call></tool_call> tags:\n<tool_call>\n"
        '{"name": "<tool name>", "arguments": {<the arguments as a JSON object>}}\n'
        "</tool_call>\nYou may write several <tool_call> blocks in one reply. Each result "
        "comes back inside <tool_response></tool_response> tags."
    )


def tool_responses(results: list[tuple[str, str]]) -> str:
    """The message that gives text tool calls their results: (tool name, output) each."""
    return "\n".join(
        f'<tool_response name="{name}">\n{output}\n</tool_response>' for name, output in results
    )


def parse_text_calls(content: str | None, specs: list[dict[str, Any]]) -> TextCalls:
    """The tool calls written in `content`, validated against `specs` (OpenAI tool format)."""
    text = content or ""
    found = _extract(text)
    result = TextCalls(attempted=bool(found))
    schemas = {s["function"]["name"]: s["function"].get("parameters") or {} for s in specs}
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    for index, (name, arguments, excerpt) in enumerate(found):
        call_id = f"call_text_{digest}_{index}"  # deterministic: a rerun sends the same
        problem = _problem(name, arguments, schemas)
        if problem is not None:
            known = name if name in schemas else None
            result.errors.append(
                {"id": call_id, "name": known, "written": excerpt[:500], "error": problem}
            )
            continue
        assert name is not None
        result.calls.append(
            {"id": call_id, "name": name, "arguments": json.dumps(arguments, ensure_ascii=False)}
        )
    return result


# -- extraction: (name or None, arguments or an error message, what was written) -------------

Found = tuple[str | None, Any, str]


def _extract(text: str) -> list[Found]:
    """The call attempts in the first format the text uses."""
    if "[TOOL_CALLS]" in text:
        return _mistral(text)
    if "<tool_call>" in text:
        return [f for m in HERMES.finditer(text) for f in _hermes(m.group(1))]
    if "<|python_tag|>" in text:
        return [f for m in PYTHON_TAG.finditer(text) for f in _values(m.group(1))]
    if LLAMA_FUNCTION.search(text):
        return [(m.group(1), _loads(m.group(2)), m.group(0)) for m in LLAMA_FUNCTION.finditer(text)]
    fenced = [f for m in FENCED.finditer(text) for f in _values(m.group(1), strict=True)]
    if fenced:
        return fenced
    return _values(text, strict=True)


def _mistral(text: str) -> list[Found]:
    found: list[Found] = []
    for chunk in END_TOKENS.sub("", text).split("[TOOL_CALLS]")[1:]:
        if chunk.strip().startswith("["):  # v2 to v7: a JSON list of calls
            found += _values(chunk)
        elif m := MISTRAL_V11.match(chunk):
            found.append((m.group(1), _loads(m.group(2)), chunk.strip()))
        else:
            found.append((None, "expected a JSON list or name[ARGS]{...}", chunk.strip()))
    return found


def _hermes(body: str) -> list[Found]:
    if m := QWEN_XML.search(body):  # Qwen3-Coder: one parameter per tag, values as text
        arguments = {k: _xml_value(v) for k, v in QWEN_PARAM.findall(m.group(2))}
        return [(m.group(1), arguments, body.strip())]
    return _values(body)


def _values(text: str, *, strict: bool = False) -> list[Found]:
    """Call-shaped values in `text`: one JSON (or Python-literal) value, JSON objects one after
    another, or a pythonic call list. `strict`: only values that are clearly calls count (a bare
    JSON answer that is not a call is left for the answer parser)."""
    text = END_TOKENS.sub("", text).strip()
    if not text:
        return [] if strict else [(None, "an empty tool call", text)]
    values = _json_values(text)
    if values is None and (call := _python_calls(text)) is not None:
        return call
    if values is None and strict:
        values = _embedded_objects(text)
    if values is None:
        return [] if strict else [(None, _loads(text, "the tool call"), text)]
    found: list[Found] = []
    for value in values:
        for item in value if isinstance(value, list) else [value]:
            shaped = _call_shape(item)
            if shaped is None and strict:
                continue
            found.append(
                shaped or (None, "not an object with a tool name and arguments", str(item))
            )
    return found


def _json_values(text: str) -> list[Any] | None:
    """One or more JSON values written one after another (Ollama's Qwen template puts several
    calls in one block, a line each); Python literals as a fallback; None if neither parses."""
    decoder, values, pos = json.JSONDecoder(), [], 0
    while pos < len(text):
        try:
            value, end = decoder.raw_decode(text, pos)
        except ValueError:
            values = []
            break
        values.append(value)
        pos = end
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
    if values:
        return values
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    return [value] if isinstance(value, dict | list) else None


def _embedded_objects(text: str) -> list[Any]:
    """JSON objects inside prose ("I'll list the files: {...}"), outermost ones only."""
    decoder, values, pos = json.JSONDecoder(), [], text.find("{")
    while pos >= 0:
        try:
            value, end = decoder.raw_decode(text, pos)
        except ValueError:
            pos = text.find("{", pos + 1)
            continue
        values.append(value)
        pos = text.find("{", end)
    return values


def _python_calls(text: str) -> list[Found] | None:
    """`tool.call(key="value")` (Llama 3.1's built-in tools) or `[tool(key=...), ...]`."""
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError:
        return None
    nodes = tree.elts if isinstance(tree, ast.List) else [tree]
    if not nodes or not all(isinstance(n, ast.Call) for n in nodes):
        return None
    found: list[Found] = []
    for node in nodes:
        assert isinstance(node, ast.Call)
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr == "call":
            func = func.value
        name = func.id if isinstance(func, ast.Name) else None
        try:
            arguments: Any = {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg}
        except ValueError:
            arguments = "arguments must be literal values"
        if node.args:
            arguments = "pass arguments by name (key=value)"
        found.append((name, arguments, ast.unparse(node)))
    return found


def _call_shape(value: Any) -> Found | None:
    """(name, arguments) of a call-shaped object, else None."""
    if not isinstance(value, dict):
        return None
    if isinstance(value.get("function"), dict):  # OpenAI's own shape, written out
        value = value["function"]
    name = next((value[k] for k in (*NAME_KEYS, "function") if isinstance(value.get(k), str)), None)
    if name is None:
        return None
    key = next((k for k in ARGUMENT_KEYS if k in value), None)
    if key is None:
        if len(value) > 2:  # a named object with other fields: an answer, not a call
            return None
        arguments: Any = {}
    else:
        arguments = value[key]
        if isinstance(arguments, str):  # JSON-encoded, as in the OpenAI API
            arguments = _loads(arguments)
    return name, arguments, json.dumps(value, ensure_ascii=False)


def _loads(text: str, what: str = "the arguments") -> Any:
    """A JSON (or Python-literal) object, or an error message saying why not."""
    text = text.strip()
    try:
        return json.loads(text)
    except ValueError as exc:
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return f"{what} is not valid JSON ({exc})"
        return value if isinstance(value, dict) else f"{what} is not valid JSON ({exc})"


def _xml_value(text: str) -> Any:
    """A Qwen3-Coder parameter: JSON when it parses (numbers, lists), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


# -- validation ---------------------------------------------------------------------------


def _problem(name: str | None, arguments: Any, schemas: dict[str, dict]) -> str | None:
    """Why a call does not fit the tools' schemas, or None if it does."""
    if name is None:
        return (
            f"could not read a tool call: {arguments}"
            if isinstance(arguments, str)
            else (
                "could not read a tool call: write a JSON object with the tool's name and arguments"
            )
        )
    if name not in schemas:
        return f"unknown tool {name!r}; the tools are: {', '.join(sorted(schemas))}"
    if isinstance(arguments, str):
        return f"{name}: {arguments}"
    if not isinstance(arguments, dict):
        return f"{name}: the arguments must be a JSON object, not {type(arguments).__name__}"
    schema = schemas[name]
    properties = schema.get("properties") or {}
    missing = [k for k in schema.get("required", []) if k not in arguments]
    if missing:
        return f"{name}: missing required argument(s): {', '.join(missing)}"
    if schema.get("additionalProperties") is False:
        unknown = [k for k in arguments if k not in properties]
        if unknown:
            return f"{name}: unknown argument(s): {', '.join(unknown)}"
    for key, value in arguments.items():
        wanted = (properties.get(key) or {}).get("type")
        kinds = [wanted] if isinstance(wanted, str) else (wanted or [])
        if kinds and value is not None and not any(_is(value, k) for k in kinds):
            return (
                f"{name}: argument {key!r} must be {' or '.join(kinds)}, not {type(value).__name__}"
            )
    return None


def _is(value: Any, kind: str) -> bool:
    if kind == "null":
        return value is None
    if kind in ("integer", "number"):
        if isinstance(value, str):  # "10": coerced by the tool's own validation, as pydantic does
            return bool(re.fullmatch(r"-?\d+" if kind == "integer" else r"-?\d+(\.\d+)?", value))
        if isinstance(value, bool):
            return False
    return isinstance(value, TYPES.get(kind, (object,)))
