"""TypeScript types for a hub's frontend, generated from its AsyncAPI document.

The document (:func:`livehub.asyncapi.asyncapi_document`) already says what every typed
channel carries and what every RPC method takes and returns, as JSON Schemas of the
Pydantic models. :func:`typescript` turns it into one self-contained TypeScript module:

* a type per schema (``interface`` for objects; unions, literals, tuples, records, nullables);
* ``Channels``: each channel pattern, the channel names it matches (a template literal type,
  ``chat:${string}`` for ``chat:{room}``) and its publication data;
* ``RpcMethods``: each RPC method's request and response;
* helpers that take the official ``centrifuge`` SDK's objects as they are (structurally, so
  the module imports nothing): ``typedRpc``, ``typedPublish``, ``publication``, ``patternOf``.

Only the standard library is used, and the output depends on the document alone (schemas
sorted by name, channels in the hub's order), so regenerating an unchanged hub changes no byte.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["CodegenError", "typescript"]

SCHEMA_PREFIX = "#/components/schemas/"

#: How livehub's ChannelPattern reads a pattern: ``{name}`` parameters, matching ``[^:#]+``.
PARAM = re.compile(r"({\w+})")
PARAM_REGEX = "[^:#]+"

#: Names the generated module defines or uses itself, and TypeScript's own type names: a
#: schema called one of these gets a ``Model`` suffix so nothing is shadowed.
RESERVED = frozenset(
    "Channels ChannelPattern ChannelName PatternOf PatternOfOne IsParam PublicationOf PATTERNS "
    "RpcMethods RpcMethod RpcRequest RpcResponse RpcClient Publisher PublicationContextLike "
    "typedRpc typedPublish publication patternOf "
    "Array ReadonlyArray Promise RegExp Record Partial Required Readonly Pick Omit Exclude Extract "
    "NonNullable Object String Number Boolean Symbol Function Date Error JSON Math "
    "string number boolean object symbol bigint any unknown never void null undefined this "
    "break case catch class const continue debugger default delete do else enum export extends "
    "false finally for function if import in instanceof new return super switch throw true try "
    "typeof var while with implements interface let package private protected public static yield "
    "type keyof infer is as".split()
)

IDENTIFIER = re.compile(r"[A-Za-z_$][\w$]*")
SIMPLE_TYPE = re.compile(r"[\w$]+(\[\])*")
#: JSON Schema keywords worth a line in a property's doc comment.
DOC_TAGS = (
    *("format", "pattern", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"),
    *("minLength", "maxLength", "minItems", "maxItems"),
)


class CodegenError(ValueError):
    """The document is not one this generator can read (not AsyncAPI 3, a dangling $ref, ...)."""


def typescript(document: Mapping[str, Any]) -> str:
    """The TypeScript module for an AsyncAPI 3 document of a livehub hub."""
    version = str(document.get("asyncapi", ""))
    if not version.startswith("3."):
        raise CodegenError(f"an AsyncAPI 3 document is needed, this one says asyncapi={version!r}")
    return _Generator(document).module()


# -- small text helpers


def _literal(value: Any) -> str:
    """A JSON value as a TypeScript literal type; composite values have no literal type."""
    if value is None or isinstance(value, bool | int | float | str):
        return json.dumps(value, ensure_ascii=False)
    return "unknown"


def _key(name: str) -> str:
    """A property key: bare when it is an identifier, quoted otherwise."""
    return name if IDENTIFIER.fullmatch(name) else json.dumps(name, ensure_ascii=False)


def _union(parts: Iterable[str]) -> str:
    unique = list(dict.fromkeys(parts))
    if "unknown" in unique:
        return "unknown"
    return " | ".join(unique) if unique else "never"


def _array(item: str) -> str:
    return f"{item}[]" if SIMPLE_TYPE.fullmatch(item) else f"Array<{item}>"


def _comment(lines: list[str], indent: str) -> str:
    """A JSDoc block (empty when there is nothing to say); ``*/`` in the text cannot end it."""
    lines = [line.replace("*/", "*\\/").rstrip() for line in lines]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        return ""
    if len(lines) == 1:
        return f"{indent}/** {lines[0]} */\n"
    body = "".join(f"{indent} *{' ' + line if line else ''}\n" for line in lines)
    return f"{indent}/**\n{body}{indent} */\n"


def _template(pattern: str, param: Callable[[int], str]) -> str:
    """A template literal type of a pattern: its text, and ``param(i)`` for its i-th parameter."""
    parts, count = [], 0
    for part in PARAM.split(pattern):
        if PARAM.fullmatch(part):
            parts.append("${" + param(count) + "}")
            count += 1
        else:
            parts.append(part.replace("\\", "\\\\").replace("`", "\\`").replace("${", "\\${"))
    return "`" + "".join(parts) + "`"


def _names(pattern: str) -> str:
    """The names a pattern matches, as TypeScript can say it: `` `chat:${string}` `` for ``chat:{room}``."""
    return _template(pattern, lambda i: "string")


def _belongs(pattern: str) -> str:
    """A type that is ``true`` when the channel name ``C`` matches the pattern as livehub's
    ChannelPattern does (each parameter non-empty, without ``:`` or ``#``), else ``false``."""
    template = _template(pattern, lambda i: f"infer P{i}")
    count = len(PARAM.findall(pattern))
    if not count:
        return f"(C extends {template} ? true : false)"
    checks = ", ".join(f"IsParam<P{i}>" for i in range(count))
    trues = ", ".join(["true"] * count)
    return f"(C extends {template} ? ([{checks}] extends [{trues}] ? true : false) : false)"


def _regex(pattern: str) -> str:
    """The JavaScript regex source livehub's ChannelPattern compiles the pattern to."""
    parts = []
    for part in PARAM.split(pattern):
        parts.append(
            PARAM_REGEX if PARAM.fullmatch(part) else re.sub(r"([\\^$.*+?()[\]{}|/])", r"\\\1", part)
        )
    return "^" + "".join(parts) + "$"


def _unescape_pointer(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


# -- the generator


class _Generator:
    def __init__(self, document: Mapping[str, Any]) -> None:
        self.document = document
        components = document.get("components") or {}
        self.schemas: Mapping[str, Any] = components.get("schemas") or {}
        self.names = self._name_schemas(sorted(self.schemas))

    # names

    @staticmethod
    def _name_schemas(keys: list[str]) -> dict[str, str]:
        """A distinct TypeScript identifier for every schema key, the same for the same keys."""
        names: dict[str, str] = {}
        taken: set[str] = set()
        for key in keys:
            base = re.sub(r"[^\w$]", "_", key) or "Schema"
            if base[0].isdigit():
                base = "_" + base
            if base in RESERVED:
                base += "Model"
            name, n = base, 2
            while name in taken:
                name, n = f"{base}{n}", n + 1
            taken.add(name)
            names[key] = name
        return names

    def _ref(self, ref: str) -> str:
        if ref.startswith(SCHEMA_PREFIX):
            key = _unescape_pointer(ref[len(SCHEMA_PREFIX) :])
            if key in self.names:
                return self.names[key]
        raise CodegenError(f"$ref {ref!r} names no schema of components.schemas")

    def _resolve(self, ref: str) -> Any:
        """What a local JSON pointer (``#/channels/x/messages/y``) points at in the document."""
        if not ref.startswith("#/"):
            raise CodegenError(f"only local $refs are supported, not {ref!r}")
        node: Any = self.document
        for token in ref[2:].split("/"):
            token = _unescape_pointer(token)
            if not isinstance(node, Mapping) or token not in node:
                raise CodegenError(f"$ref {ref!r} points at nothing in the document")
            node = node[token]
        return node

    def _message(self, node: Any) -> Mapping[str, Any]:
        """A message, following ``$ref``s (an operation's message refers to a channel's, which
        refers to one of components.messages)."""
        for _ in range(8):  # a reference chain is short; a cycle is an error
            if not isinstance(node, Mapping):
                break
            if "$ref" not in node:
                return node
            node = self._resolve(str(node["$ref"]))
        raise CodegenError(f"a message is not an object or its $refs go round: {node!r}"[:200])

    # schema -> TypeScript type

    def type_of(self, schema: Any, indent: str = "") -> str:
        """The TypeScript type of a JSON Schema; what TypeScript cannot say (bounds, formats)
        is left to the server, which validates with the model."""
        if schema is True:
            return "unknown"
        if schema is False:
            return "never"
        if not isinstance(schema, Mapping):
            raise CodegenError(f"a schema must be an object or a boolean, not {schema!r}"[:200])
        if "$ref" in schema:
            return self._ref(str(schema["$ref"]))
        if "const" in schema:
            return _literal(schema["const"])
        if "enum" in schema:
            return _union(_literal(v) for v in schema["enum"])
        for key in ("anyOf", "oneOf"):
            if key in schema:
                return _union(self.type_of(s, indent) for s in schema[key])
        if "allOf" in schema:
            parts = [self.type_of(s, indent) for s in schema["allOf"]]
            if len(parts) == 1:
                return parts[0]
            return " & ".join(p if SIMPLE_TYPE.fullmatch(p) else f"({p})" for p in parts) or "unknown"
        kind = schema.get("type")
        if isinstance(kind, list):
            return _union(self.type_of({**schema, "type": k}, indent) for k in kind)
        if kind == "string":
            return "string"
        if kind in ("integer", "number"):
            return "number"
        if kind == "boolean":
            return "boolean"
        if kind == "null":
            return "null"
        if kind == "array":
            return self._array(schema, indent)
        if kind == "object" or "properties" in schema:
            return self._object(schema, indent)
        return "unknown"  # {} and the document's "any JSON value"

    def _array(self, schema: Mapping[str, Any], indent: str) -> str:
        items = schema.get("items")
        if "prefixItems" in schema:
            members = [self.type_of(s, indent) for s in schema["prefixItems"]]
            if items not in (None, False):
                members.append(f"...{_array(self.type_of(items, indent))}")
            return "[" + ", ".join(members) + "]"
        return _array("unknown" if items is None else self.type_of(items, indent))

    def _object(self, schema: Mapping[str, Any], indent: str) -> str:
        properties: Mapping[str, Any] = schema.get("properties") or {}
        required = set(schema.get("required") or ())
        extra = schema.get("additionalProperties")
        inner = indent + "  "
        lines = []
        for name, sub in properties.items():
            optional = "" if name in required else "?"
            lines.append(self.doc(sub, inner) + f"{inner}{_key(name)}{optional}: {self.type_of(sub, inner)};")
        if extra is not False and (extra is not None or not properties):
            # With named properties, other keys can only be typed `unknown`: an index
            # signature's type must also cover every named property's.
            value = "unknown" if properties or extra in (None, True) else self.type_of(extra, inner)
            lines.append(f"{inner}[key: string]: {value};")
        return "{\n" + "\n".join(lines) + f"\n{indent}}}"

    @staticmethod
    def doc(schema: Any, indent: str) -> str:
        if not isinstance(schema, Mapping):
            return ""
        lines = str(schema.get("description", "")).strip().splitlines()
        tags = [f"@{tag} {json.dumps(schema[tag], ensure_ascii=False)}" for tag in DOC_TAGS if tag in schema]
        if "default" in schema:
            tags.append(f"@default {json.dumps(schema['default'], ensure_ascii=False, sort_keys=True)}")
        if schema.get("deprecated") is True:
            tags.append("@deprecated")
        if lines and tags:
            lines.append("")
        return _comment(lines + tags, indent)

    # the module

    def module(self) -> str:
        info = self.document.get("info") or {}
        title = str(info.get("title", "")).replace("\n", " ")
        head = [
            f"// TypeScript types of the livehub hub {json.dumps(title, ensure_ascii=False)}, generated",
            "// from its AsyncAPI document by `livehub codegen ts`. Do not edit: regenerate it instead.",
        ]
        sections = ["\n".join(head), self._models(), self._channels(), self._rpcs(), HELPERS.strip()]
        return "\n\n".join(s for s in sections if s) + "\n"

    def _models(self) -> str:
        out = []
        for key in sorted(self.schemas):
            schema, name = self.schemas[key], self.names[key]
            doc = self.doc(schema, "")
            body = self.type_of(schema)
            if body.startswith("{\n"):  # an object type: only _object writes one
                out.append(f"{doc}export interface {name} {body}")
            else:
                out.append(f"{doc}export type {name} = {body};")
        return "\n\n".join(out)

    def _channels(self) -> str:
        entries: list[str] = []
        chain: list[str] = []
        regexes: list[str] = []
        for cid, channel in (self.document.get("channels") or {}).items():
            address = channel.get("address") if isinstance(channel, Mapping) else None
            if not isinstance(address, str):
                continue  # RPC methods are channels without an address
            messages = channel.get("messages") or {}
            if not messages:
                raise CodegenError(f"channel {cid!r} has no message")
            message = self._message(messages.get("publication") or next(iter(messages.values())))
            data = self.type_of(message.get("payload", True), "  ")
            doc = _comment(str(channel.get("description", "")).strip().splitlines(), "  ")
            key = json.dumps(address, ensure_ascii=False)
            entries.append(f"{doc}  {key}: {{ name: {_names(address)}; data: {data} }};")
            chain.append(f"  {': ' if chain else ''}{_belongs(address)} extends true ? {key}")
            regexes.append(f"  [{key}, new RegExp({json.dumps(_regex(address), ensure_ascii=False)})],")
        if chain:
            pattern_of = [PATTERN_OF, "type PatternOfOne<C extends string> =", *chain, "  : never;"]
        else:
            pattern_of = ["export type PatternOf<C extends string> = C extends string ? never : never;"]
        lines = [
            "/** Each channel pattern of the hub: the channel names it matches and its publication data. */",
            "export interface Channels {",
            *entries,
            "}",
            "",
            *([IS_PARAM] if any("IsParam<" in line for line in chain) else []),
            PATTERN_OF_DOC,
            *pattern_of,
            "",
            "/** The same patterns, in the same order, for the code that runs. */",
            "const PATTERNS: ReadonlyArray<readonly [ChannelPattern, RegExp]> = [",
            *regexes,
            "];",
        ]
        return "\n".join(lines)

    def _rpcs(self) -> str:
        entries: dict[str, str] = {}
        for oid, operation in (self.document.get("operations") or {}).items():
            if not isinstance(operation, Mapping) or "reply" not in operation:
                continue  # channel operations; an RPC is a send with a reply
            request = self._message((operation.get("messages") or [True])[0])
            reply = operation["reply"]
            response = self._message((reply.get("messages") or [True])[0])
            method = self._method_name(str(oid), request)
            doc_text = str(operation.get("description") or operation.get("summary") or "")
            doc = _comment(doc_text.strip().splitlines(), "  ")
            req = self.type_of(request.get("payload", True), "  ")
            res = self.type_of(response.get("payload", True), "  ")
            entries[method] = f"{doc}  {_key(method)}: {{ request: {req}; response: {res} }};"
        lines = [
            "/** Each RPC method of the hub: what it takes and what it returns. */",
            "export interface RpcMethods {",
            *(entries[m] for m in sorted(entries)),
            "}",
        ]
        return "\n".join(lines)

    @staticmethod
    def _method_name(operation_id: str, request: Mapping[str, Any]) -> str:
        """The method as clients call it. The document names its request message
        ``"<method> request"``; the operation id (``rpc.<method>``) has unsafe characters
        replaced, so it is only the fallback."""
        name = request.get("name")
        if isinstance(name, str) and name.endswith(" request"):
            return name[: -len(" request")]
        return operation_id.removeprefix("rpc.")


IS_PARAM = """\
/** A part of a channel name a {parameter} matches: not empty, without `:` or `#`. */
type IsParam<S extends string> = S extends "" | `${string}:${string}` | `${string}#${string}`
  ? false
  : true;
"""

PATTERN_OF_DOC = """\
/**
 * The pattern a channel name belongs to on the server: the first in the hub's order that
 * matches it, or never. Each name of a union is checked on its own.
 */"""

PATTERN_OF = "export type PatternOf<C extends string> = C extends string ? PatternOfOne<C> : never;"

HELPERS = r"""
/** A channel pattern as declared in Python with `hub.channel(...)`, e.g. "chat:{room}". */
export type ChannelPattern = keyof Channels;
/** A channel name some pattern matches, e.g. "chat:lobby". */
export type ChannelName = Channels[ChannelPattern]["name"];
/** The publication data of a channel name, by the pattern it belongs to (never if none). */
export type PublicationOf<C extends string> = Channels[PatternOf<C>]["data"];

/** An RPC method's name. */
export type RpcMethod = keyof RpcMethods;
/** What an RPC method takes. */
export type RpcRequest<M extends RpcMethod> = RpcMethods[M]["request"];
/** What an RPC method returns. */
export type RpcResponse<M extends RpcMethod> = RpcMethods[M]["response"];

/** What typedRpc needs of a client: the SDK's `Centrifuge` fits as it is. */
export interface RpcClient {
  rpc(method: string, data: unknown): Promise<{ data: unknown }>;
}

/** What typedPublish needs of a client: the SDK's `Centrifuge` fits as it is. */
export interface Publisher<R> {
  publish(channel: string, data: unknown): Promise<R>;
}

/** A publication as the SDK hands it to "publication" handlers (its PublicationContext). */
export interface PublicationContextLike {
  channel: string;
  data: unknown;
}

/** Call an RPC method with a checked request; resolves to its typed response. */
export async function typedRpc<M extends RpcMethod>(
  client: RpcClient,
  method: M,
  request: RpcRequest<M>,
): Promise<RpcResponse<M>> {
  const result = await client.rpc(method, request);
  return result.data as RpcResponse<M>;
}

/** Publish checked data to a channel; resolves to what the client's publish resolves to. */
export function typedPublish<C extends ChannelName, R>(
  client: Publisher<R>,
  channel: C,
  data: PublicationOf<C>,
): Promise<R> {
  return client.publish(channel, data);
}

/** The pattern a channel belongs to on the server (the first that matches), if any. */
export function patternOf(channel: string): ChannelPattern | undefined {
  const found = PATTERNS.find(([, regex]) => regex.test(channel));
  return found === undefined ? undefined : found[0];
}

/**
 * A publication's data, typed, when its channel belongs to `pattern`; undefined otherwise:
 * `const message = publication(ctx, "chat:{room}")` in a "publication" handler.
 */
export function publication<P extends ChannelPattern>(
  ctx: PublicationContextLike,
  pattern: P,
): Channels[P]["data"] | undefined {
  return patternOf(ctx.channel) === pattern ? (ctx.data as Channels[P]["data"]) : undefined;
}
"""
