"""Canonical text form of a graph: parsing (the inverse of ``text_print``)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, NoReturn

import numpy as np

from optc.errors import InvalidModelError
from optc.ir.annotations import Annotation, annotation_types
from optc.ir.dtypes import CONTAINERS, is_valid_dtype
from optc.ir.graph import Dim, Graph, Node, Shape, TypeAttr, Value

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<ref>%(?:"(?:[^"\\]|\\.)*"|[A-Za-z0-9_.\-/]+))
  | (?P<bytes>b"(?:[^"\\]|\\.)*")
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<digest>sha256:[0-9a-f]{64})
  | (?P<number>-?(?:inf|nan|\d+(?:\.\d*)?(?:e[-+]?\d+)?)(?![A-Za-z0-9_]))
  | (?P<dcolon>::)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<comment>\#)
  | (?P<punct>[{}()\[\],=:@<>?])
""", re.VERBOSE)


def parse_graph(text: str, tensors: Mapping[str, np.ndarray] | None = None) -> Graph:
    """Parse canonical text; ``tensors`` maps digests to the arrays printed as ``sha256:``."""
    parser = _Parser(_tokenize(text), tensors or {})
    try:
        graph = parser.graph()
        parser.expect_end()
    except InvalidModelError:
        raise
    except (ValueError, TypeError, OverflowError) as exc:
        # A token of the right kind with a bad value (wrong element count, a field the
        # annotation lacks, a bad escape): report it at the token just read.
        parser.fail(f"{exc}", at_last=True)
    return graph


def _tokenize(text: str) -> list[tuple[str, str, int]]:
    tokens: list[tuple[str, str, int]] = []
    pos, line = 0, 1
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match:
            raise InvalidModelError(f"IR text line {line}: unexpected {text[pos:pos + 20]!r}")
        kind = match.lastgroup or ""
        if kind != "ws":
            tokens.append((kind, match.group(), line))
        line += match.group().count("\n")
        pos = match.end()
    return tokens


class _Parser:
    def __init__(self, tokens: list[tuple[str, str, int]], tensors: Mapping[str, np.ndarray]):
        self.tokens = tokens
        self.pos = 0
        self.tensors = tensors
        self.annotation_types = annotation_types()

    # -- token helpers -------------------------------------------------------------
    def peek(self, offset: int = 0) -> tuple[str, str]:
        index = self.pos + offset
        if index >= len(self.tokens):
            return ("end", "")
        kind, text, _ = self.tokens[index]
        return kind, text

    def take(self, kind: str | None = None, text: str | None = None) -> str:
        got_kind, got_text = self.peek()
        if (kind and got_kind != kind) or (text is not None and got_text != text):
            self.fail(f"expected {text or kind}, got {got_text or 'end of text'!r}")
        self.pos += 1
        return got_text

    def accept(self, text: str) -> bool:
        if self.peek()[1] == text and self.peek()[0] in ("punct", "ident", "dcolon", "comment"):
            self.pos += 1
            return True
        return False

    def fail(self, message: str, at_last: bool = False) -> NoReturn:
        index = self.pos - 1 if at_last else self.pos
        line = self.tokens[max(0, min(index, len(self.tokens) - 1))][2] if self.tokens else 1
        raise InvalidModelError(f"IR text line {line}: {message}")

    def expect_end(self) -> None:
        if self.pos != len(self.tokens):
            self.fail(f"unexpected {self.peek()[1]!r} after the graph")

    # -- grammar -------------------------------------------------------------------
    def graph(self) -> Graph:
        self.take("ident", "graph")
        name = self.name()
        self.take("punct", "{")
        inputs: list[Value] = []
        outputs: list[Value] = []
        nodes: list[Node] = []
        params: dict[str, np.ndarray] = {}
        opsets: dict[str, int] = {}
        metadata: dict[str, str] = {}
        while not self.accept("}"):
            kind, text = self.peek()
            if kind == "end":
                self.fail(f"graph {name!r} is missing its closing '}}'", at_last=True)
            if kind == "ident" and text == "opset":
                self.pos += 1
                domain = json.loads(self.take("string"))
                self.take("punct", "=")
                opsets[domain] = int(self.take("number"))
            elif kind == "ident" and text == "meta":
                self.pos += 1
                key = json.loads(self.take("string"))
                self.take("punct", "=")
                metadata[key] = json.loads(self.take("string"))
            elif kind == "ident" and text in ("input", "output"):
                self.pos += 1
                (inputs if text == "input" else outputs).append(self.value())
            elif kind == "ident" and text == "param":
                self.pos += 1
                value = self.value()
                if value.name in params:
                    self.fail(f"param %{value.name} is defined twice", at_last=True)
                self.take("punct", "=")
                params[value.name] = self.tensor_data(value.dtype, value.shape)
            else:
                nodes.append(self.node())
        return Graph(tuple(inputs), tuple(nodes), tuple(outputs), params, name=name,
                     opsets=opsets, metadata=metadata)

    def name(self) -> str:
        kind, text = self.peek()
        self.pos += 1
        if kind == "string":
            return json.loads(text)
        if kind != "ident":
            self.fail(f"expected a name, got {text!r}")
        return text

    def ref(self) -> str:
        text = self.take("ref")[1:]
        return json.loads(text) if text.startswith('"') else text

    def value(self) -> Value:
        name = self.ref()
        self.take("punct", ":")
        dtype, shape = self.type()
        return Value(name, dtype, shape, self.annotations())

    def dtype(self) -> str | None:
        """``?``, a tensor dtype, or a container such as ``seq(float32)``."""
        if self.accept("?"):
            return None
        dtype = self.take("ident")
        if dtype in CONTAINERS and self.accept("("):
            inner = self.dtype()
            self.take("punct", ")")
            if inner is None:
                self.fail(f"{dtype}(...) needs a known element dtype", at_last=True)
            dtype = f"{dtype}({inner})"
        if not is_valid_dtype(dtype):
            self.fail(f"unknown dtype {dtype!r}", at_last=True)
        return dtype

    def type(self) -> tuple[str | None, Shape]:
        dtype = self.dtype()
        if not self.accept("["):
            return dtype, None
        dims: list[Dim] = []
        while not self.accept("]"):
            kind, text = self.peek()
            self.pos += 1
            if kind == "number":
                dims.append(int(text))
            elif text == "?":
                dims.append(None)
            elif kind == "ident":
                dims.append(text)
            elif kind == "string":
                dims.append(json.loads(text))
            else:
                self.fail(f"bad dimension {text!r}")
            self.accept(",")
        return dtype, tuple(dims)

    def annotations(self) -> tuple[Annotation, ...]:
        found: list[Annotation] = []
        while self.accept("@"):
            kind = self.take("ident")
            cls = self.annotation_types.get(kind)
            if cls is None:
                self.fail(f"unknown annotation @{kind}")
            self.take("punct", "(")
            fields: dict[str, Any] = {}
            while not self.accept(")"):
                key = self.take("ident")
                self.take("punct", "=")
                fields[key] = self.scalar_or_list()
                self.accept(",")
            found.append(cls(**fields))  # type: ignore[misc]
        return tuple(found)

    def node(self) -> Node:
        outputs: list[Value] = []
        if self.accept("("):
            self.take("punct", ")")
        else:
            outputs.append(self.node_output())
            while self.accept(","):
                outputs.append(self.node_output())
        self.take("punct", "=")
        domain = ""
        if self.peek()[0] == "string" and self.peek(1)[0] == "dcolon":
            domain = json.loads(self.take("string"))
            self.take("dcolon")
        op = self.name()
        self.take("punct", "(")
        inputs: list[str] = []
        while not self.accept(")"):
            inputs.append("" if self.accept("_") else self.ref())
            self.accept(",")
        attrs: dict[str, Any] = {}
        if self.accept("{"):
            while not self.accept("}"):
                key = self.take("ident")
                if key in attrs:
                    self.fail(f"attribute {key!r} given twice", at_last=True)
                self.take("punct", "=")
                attrs[key] = self.attr_value()
                self.accept(",")
        annotations = self.annotations()
        name = json.loads(self.take("string")) if self.accept("#") else ""
        return Node(op, tuple(inputs), tuple(outputs), attrs, domain=domain, name=name,
                    annotations=annotations)

    def node_output(self) -> Value:
        # "_" is an omitted optional output, kept so later outputs keep their positions.
        return Value("") if self.accept("_") else self.value()

    def attr_value(self) -> Any:
        kind, text = self.peek()
        if kind == "ident" and text == "type" and self.peek(1) == ("punct", "<"):
            return self.type_attr()
        if kind == "punct" and text == "[" and self.peek(1) == ("ident", "type") \
                and self.peek(2) == ("punct", "<"):
            self.pos += 1
            items = []
            while not self.accept("]"):
                items.append(self.type_attr())
                self.accept(",")
            return tuple(items)
        if kind == "ident" and text == "tensor":
            self.pos += 1
            self.take("punct", "<")
            dtype, shape = self.type()
            self.take("punct", ">")
            return self.tensor_data(dtype, shape)
        if kind == "punct" and text == "[" and self.peek(1) == ("ident", "graph"):
            self.pos += 1
            graphs = []
            while not self.accept("]"):
                graphs.append(self.graph())
                self.accept(",")
            return graphs[0] if len(graphs) == 1 else tuple(graphs)
        return self.scalar_or_list()

    def type_attr(self) -> TypeAttr:
        self.take("ident", "type")
        self.take("punct", "<")
        dtype, shape = self.type()
        self.take("punct", ">")
        if dtype is None:
            self.fail("a type attribute needs a dtype", at_last=True)
        return TypeAttr(dtype, shape)

    def scalar_or_list(self) -> Any:
        kind, text = self.peek()
        self.pos += 1
        if kind == "punct" and text == "[":
            items = []
            while not self.accept("]"):
                items.append(self.scalar_or_list())
                self.accept(",")
            return tuple(items)
        if kind == "number":
            return _number(text)
        if kind == "string":
            return json.loads(text)
        if kind == "bytes":
            return json.loads(text[1:]).encode("latin-1")
        if kind == "ident" and text in ("true", "false"):
            return text == "true"
        self.fail(f"bad value {text!r}")

    def tensor_data(self, dtype: str | None, shape: Shape) -> np.ndarray:
        if dtype is None or shape is None or not all(isinstance(d, int) for d in shape):
            self.fail("a tensor needs a known dtype and static shape")
        kind, text = self.peek()
        if kind == "digest":
            self.pos += 1
            digest = text.split(":", 1)[1]
            if digest not in self.tensors:
                self.fail(f"tensor sha256:{digest[:12]}... not in the tensor store")
            return self.tensors[digest]
        items = self.scalar_or_list()
        if not isinstance(items, tuple):
            self.fail("expected a tensor's values in [...]")
        return _build_array(items, str(dtype), tuple(int(d) for d in shape))  # type: ignore[union-attr]


def _number(text: str) -> int | float:
    if any(c in text for c in ".en") or text.endswith("inf"):
        return float(text)
    return int(text)


def _build_array(items: tuple[Any, ...], dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    if dtype == "string":
        array = np.array(list(items), dtype=object)
    else:
        array = np.array([float(x) if isinstance(x, float) else x for x in items],
                         dtype=np_dtype(dtype))
    return array.reshape(shape)


def np_dtype(name: str) -> np.dtype:
    """numpy dtype for an optc dtype name (ml_dtypes covers bfloat16 and float8)."""
    if name == "string":
        return np.dtype(object)
    try:
        return np.dtype(name)
    except TypeError:
        import ml_dtypes

        return np.dtype(getattr(ml_dtypes, name))
