"""Rust symbol demangling (legacy ``_ZN…E`` and v0 ``_R…``), pure Python.

``demangle(name)`` never raises: anything it cannot read comes back unchanged. The output
follows rustc-demangle; ``verbose=True`` adds crate hashes and integer-constant types, as
``c++filt`` prints them.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_LLVM_SUFFIX = re.compile(r"\.llvm\.\d+$")
_MAX_DEPTH = 300
_MAX_OUTPUT = 1 << 16


def demangle(name: str, verbose: bool = False) -> str:
    """The readable form of a Rust symbol name, or ``name`` itself."""
    bare = _LLVM_SUFFIX.sub("", name)
    try:
        if bare.startswith(("_ZN", "__ZN", "ZN")):
            result = _demangle_legacy(bare, verbose)
        elif bare.startswith(("_R", "__R", "R")):
            result = _V0(bare).demangle(verbose)
        else:
            return name
    except (_Invalid, RecursionError, IndexError, ValueError):
        return name
    return name if result is None else result


class _Invalid(Exception):
    pass


# --- legacy -------------------------------------------------------------------------------

_LEGACY_ESCAPES = {"SP": "@", "BP": "*", "RF": "&", "LT": "<", "GT": ">", "LP": "(", "RP": ")", "C": ","}


def _demangle_legacy(name: str, verbose: bool) -> str | None:
    rest = name[name.index("ZN") + 2 :]
    elements: list[str] = []
    while not rest.startswith("E"):
        digits = re.match(r"\d+", rest)
        if digits is None:
            return None
        length = int(digits.group())
        start = digits.end()
        element = rest[start : start + length]
        if len(element) != length or not element:
            return None
        elements.append(element)
        rest = rest[start + length :]
    suffix = rest[1:]
    if not elements or (suffix and not suffix.startswith((".", "$"))):
        return None
    if not verbose and len(elements) > 1 and re.fullmatch(r"h[0-9a-f]{16}", elements[-1]):
        elements.pop()
    return "::".join(_unescape_legacy(e) for e in elements) + suffix


def _unescape_legacy(element: str) -> str:
    rest = element[1:] if element.startswith("_$") else element
    out: list[str] = []
    while rest:
        if rest.startswith("."):
            if rest.startswith(".."):
                out.append("::")
                rest = rest[2:]
            else:
                out.append(".")
                rest = rest[1:]
        elif rest.startswith("$"):
            end = rest.find("$", 1)
            if end < 0:
                break
            escape = rest[1:end]
            char = _LEGACY_ESCAPES.get(escape)
            if char is None and re.fullmatch(r"u[0-9a-f]+", escape):
                code = int(escape[1:], 16)
                if code <= 0x10FFFF and chr(code).isprintable():
                    char = chr(code)
            if char is None:
                break
            out.append(char)
            rest = rest[end + 1 :]
        else:
            stop = min((i for i in (rest.find("$"), rest.find(".")) if i >= 0), default=len(rest))
            out.append(rest[:stop])
            rest = rest[stop:]
    out.append(rest)
    return "".join(out)


# --- v0 -----------------------------------------------------------------------------------

_BASIC_TYPES = {
    "a": "i8",
    "b": "bool",
    "c": "char",
    "d": "f64",
    "e": "str",
    "f": "f32",
    "h": "u8",
    "i": "isize",
    "j": "usize",
    "l": "i32",
    "m": "u32",
    "n": "i128",
    "o": "u128",
    "s": "i16",
    "t": "u16",
    "u": "()",
    "v": "...",
    "x": "i64",
    "y": "u64",
    "z": "!",
    "p": "_",
}
_BASE62 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


class _V0:
    """A recursive-descent reader of the v0 grammar (RFC 2603) that prints as it parses."""

    def __init__(self, name: str) -> None:
        start = name.index("R") + 1
        # An optional encoding version (decimal) precedes the path; only version 0 exists.
        if start < len(name) and name[start].isdigit():
            raise _Invalid
        self.sym = name[start:]
        self.pos = 0
        self.depth = 0
        self.bound_lifetimes = 0
        self.verbose = False
        self.out: list[str] = []
        self.printing = True
        self.size = 0

    def demangle(self, verbose: bool) -> str:
        self.verbose = verbose
        if not self.sym or not self.sym[0].isupper():
            raise _Invalid
        self.path(True)
        # An instantiating crate may follow; it is parsed, not printed.
        if self.pos < len(self.sym) and self.sym[self.pos].isupper():
            self.skip(lambda: self.path(False))
        rest = self.sym[self.pos :]
        if rest and not rest.startswith((".", "$")):
            raise _Invalid
        return "".join(self.out) + rest  # a compiler suffix such as ``.cold`` stays as written

    # -- low level --

    def emit(self, text: str) -> None:
        if self.printing:
            self.size += len(text)
            if self.size > _MAX_OUTPUT:
                raise _Invalid
            self.out.append(text)

    def skip(self, parse: Callable[[], object]) -> None:
        saved = self.printing
        self.printing = False
        try:
            parse()
        finally:
            self.printing = saved

    def peek(self) -> str:
        return self.sym[self.pos] if self.pos < len(self.sym) else ""

    def eat(self, char: str) -> bool:
        if self.peek() == char:
            self.pos += 1
            return True
        return False

    def next(self) -> str:
        if self.pos >= len(self.sym):
            raise _Invalid
        char = self.sym[self.pos]
        self.pos += 1
        return char

    def enter(self) -> None:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise _Invalid

    def leave(self) -> None:
        self.depth -= 1

    def integer62(self) -> int:
        if self.eat("_"):
            return 0
        value = 0
        while True:
            char = self.next()
            if char == "_":
                return value + 1
            digit = _BASE62.find(char)
            if digit < 0:
                raise _Invalid
            value = value * 62 + digit

    def opt_integer62(self, tag: str) -> int:
        return self.integer62() + 1 if self.eat(tag) else 0

    def disambiguator(self) -> int:
        return self.opt_integer62("s")

    def ident(self) -> str:
        punycode = self.eat("u")
        start = self.pos
        if self.peek() == "0":  # never written with leading zeros, so "0" ends the number
            self.pos += 1
        else:
            while self.peek().isdigit():
                self.pos += 1
        digits = self.sym[start : self.pos]
        if not digits:
            raise _Invalid
        length = int(digits)
        self.eat("_")
        text = self.sym[self.pos : self.pos + length]
        if len(text) != length:
            raise _Invalid
        self.pos += length
        if not punycode:
            return text
        ascii_part, _, encoded = text.rpartition("_")
        try:
            return _decode_punycode(ascii_part, encoded)
        except (UnicodeError, ValueError):
            raise _Invalid from None

    def backref(self, parse: Callable[[], object]) -> None:
        start = self.pos - 1
        target = self.integer62()
        if target >= start:
            raise _Invalid
        saved = self.pos
        self.pos = target
        try:
            parse()
        finally:
            self.pos = saved

    def lifetime(self, index: int) -> None:
        if index == 0:
            self.emit("'_")
            return
        depth = self.bound_lifetimes - index
        if depth < 0:
            raise _Invalid
        self.emit("'" + chr(ord("a") + depth) if depth < 26 else f"'_{depth}")

    def binder(self, body: Callable[[], object]) -> None:
        count = self.opt_integer62("G")
        if count:
            self.emit("for<")
            for i in range(count):
                if i:
                    self.emit(", ")
                self.bound_lifetimes += 1
                self.lifetime(1)
            self.emit("> ")
        body()
        self.bound_lifetimes -= count

    def sep_list(self, item: Callable[[], object], separator: str) -> int:
        count = 0
        while not self.eat("E"):
            if count:
                self.emit(separator)
            item()
            count += 1
        return count

    # -- grammar --

    def path(self, in_value: bool) -> None:
        self.enter()
        tag = self.next()
        if tag == "C":
            dis = self.disambiguator()
            self.emit(self.ident())
            if self.verbose:
                self.emit(f"[{dis:x}]")
        elif tag == "N":
            namespace = self.next()
            if not namespace.isalpha():
                raise _Invalid
            self.path(in_value)
            dis = self.disambiguator()
            name = self.ident()
            if namespace.isupper():
                kind = {"C": "closure", "S": "shim"}.get(namespace, namespace)
                self.emit("::{" + kind + (":" + name if name else "") + f"#{dis}" + "}")
            elif name:
                self.emit("::" + name)
        elif tag in "MXY":
            if tag != "Y":
                self.disambiguator()
                self.skip(lambda: self.path(False))
            self.emit("<")
            self.type()
            if tag != "M":
                self.emit(" as ")
                self.path(False)
            self.emit(">")
        elif tag == "I":
            self.path(in_value)
            if in_value:
                self.emit("::")
            self.emit("<")
            self.sep_list(self.generic_arg, ", ")
            self.emit(">")
        elif tag == "B":
            self.backref(lambda: self.path(in_value))
        else:
            raise _Invalid
        self.leave()

    def generic_arg(self) -> None:
        if self.eat("L"):
            self.lifetime(self.integer62())
        elif self.eat("K"):
            self.const(False)
        else:
            self.type()

    def type(self) -> None:
        self.enter()
        tag = self.next()
        basic = _BASIC_TYPES.get(tag)
        if basic is not None:
            self.emit(basic)
        elif tag in "RQ":
            self.emit("&")
            if self.eat("L"):
                index = self.integer62()
                if index:
                    self.lifetime(index)
                    self.emit(" ")
            if tag == "Q":
                self.emit("mut ")
            self.type()
        elif tag == "P":
            self.emit("*const ")
            self.type()
        elif tag == "O":
            self.emit("*mut ")
            self.type()
        elif tag in "AS":
            self.emit("[")
            self.type()
            if tag == "A":
                self.emit("; ")
                self.const(True)
            self.emit("]")
        elif tag == "T":
            self.emit("(")
            if self.sep_list(self.type, ", ") == 1:
                self.emit(",")
            self.emit(")")
        elif tag == "F":
            self.binder(self.fn_sig)
        elif tag == "D":
            self.emit("dyn ")
            self.binder(lambda: self.sep_list(self.dyn_trait, " + "))
            if not self.eat("L"):
                raise _Invalid
            index = self.integer62()
            if index:
                self.emit(" + ")
                self.lifetime(index)
        elif tag == "B":
            self.backref(self.type)
        else:
            self.pos -= 1
            self.path(False)
        self.leave()

    def fn_sig(self) -> None:
        unsafe = self.eat("U")
        abi = None
        if self.eat("K"):
            abi = "C" if self.eat("C") else self.ident().replace("_", "-")
        if unsafe:
            self.emit("unsafe ")
        if abi is not None:
            self.emit(f'extern "{abi}" ')
        self.emit("fn(")
        self.sep_list(self.type, ", ")
        self.emit(")")
        if not self.eat("u"):
            self.emit(" -> ")
            self.type()

    def dyn_trait(self) -> None:
        is_open = self.path_maybe_open_generics()
        while self.eat("p"):
            self.emit(", " if is_open else "<")
            is_open = True
            self.emit(self.ident())
            self.emit(" = ")
            self.type()
        if is_open:
            self.emit(">")

    def path_maybe_open_generics(self) -> bool:
        if self.eat("B"):
            result = []
            self.backref(lambda: result.append(self.path_maybe_open_generics()))
            return result[0]
        if self.eat("I"):
            self.path(False)
            self.emit("<")
            self.sep_list(self.generic_arg, ", ")
            return True
        self.path(False)
        return False

    def hex_nibbles(self) -> str:
        start = self.pos
        while self.peek() and self.peek() in "0123456789abcdef":
            self.pos += 1
        nibbles = self.sym[start : self.pos]
        if not self.eat("_"):
            raise _Invalid
        return nibbles

    def const_uint(self, tag: str) -> None:
        nibbles = self.hex_nibbles()
        value = int(nibbles, 16) if nibbles else 0
        self.emit(str(value) if value < 1 << 64 else "0x" + nibbles)
        if self.verbose:
            self.emit(_BASIC_TYPES[tag])

    def const(self, in_value: bool) -> None:
        self.enter()
        tag = self.next()
        braced = False

        def open_brace() -> None:
            nonlocal braced
            if not in_value:
                braced = True
                self.emit("{")

        if tag == "p":
            self.emit("_")
        elif tag in "htmyoj":
            self.const_uint(tag)
        elif tag in "aslxni":
            if self.eat("n"):
                self.emit("-")
            self.const_uint(tag)
        elif tag == "b":
            value = self.hex_nibbles()
            if value not in ("0", "1"):
                raise _Invalid
            self.emit("true" if value == "1" else "false")
        elif tag == "c":
            nibbles = self.hex_nibbles()
            self.emit(repr(chr(int(nibbles or "0", 16))))
        elif tag == "e":
            open_brace()
            self.emit("*")
            self.const_str()
        elif tag in "RQ":
            if tag == "R" and self.eat("e"):
                self.const_str()
            else:
                open_brace()
                self.emit("&" if tag == "R" else "&mut ")
                self.const(True)
        elif tag == "A":
            open_brace()
            self.emit("[")
            self.sep_list(lambda: self.const(True), ", ")
            self.emit("]")
        elif tag == "T":
            open_brace()
            self.emit("(")
            if self.sep_list(lambda: self.const(True), ", ") == 1:
                self.emit(",")
            self.emit(")")
        elif tag == "V":
            open_brace()
            self.path(True)
            shape = self.next()
            if shape == "T":
                self.emit("(")
                self.sep_list(lambda: self.const(True), ", ")
                self.emit(")")
            elif shape == "S":
                self.emit(" { ")
                self.sep_list(self.const_field, ", ")
                self.emit(" }")
            elif shape != "U":
                raise _Invalid
        elif tag == "B":
            self.backref(lambda: self.const(in_value))
        else:
            raise _Invalid
        if braced:
            self.emit("}")
        self.leave()

    def const_field(self) -> None:
        self.disambiguator()
        self.emit(self.ident())
        self.emit(": ")
        self.const(True)

    def const_str(self) -> None:
        nibbles = self.hex_nibbles()
        if len(nibbles) % 2:
            raise _Invalid
        text = bytes.fromhex(nibbles).decode("utf-8")
        self.emit('"' + text.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"')


def _decode_punycode(ascii_part: str, encoded: str) -> str:
    """RFC 3492 decoding with Rust's ``_`` in place of ``-``."""
    text = (ascii_part + "-" + encoded) if ascii_part else encoded
    return text.encode("ascii").decode("punycode")
