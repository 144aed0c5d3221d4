"""Code fingerprints: hashes of normalized syntax trees, following project code.

A stage's fingerprint covers its own function and, transitively, every function, method, class
and module-level constant it references that is defined in **project code**: a module loaded
from a ``.py`` file outside the standard library and the installed packages (site-packages,
the interpreter's prefixes), other than physpipe and pytest themselves. References are followed
through globals (``from x import f``), attribute chains on modules (``import x; x.f``,
``x.sub.g``), closure cells, default arguments, and decorators that wrap (``__wrapped__``, or a
decorator object holding the function, such as a scikit-fem form).

Precision matters as much as recall: comments, docstrings and formatting never count, and only
what a stage reaches does (another function of the same module does not). A module-level
constant counts by the statement that assigns it, not by its value, so keys stay the same in
every process. ``track=`` adds code outside the project (a function, class or whole module).

Every function is analysed once per process (memoized by identity); a stage's fingerprint is
then a walk over memoized nodes. What was not project code but was reached is reported as
``modules`` so records can name the distributions a stage used (provenance, not part of keys).
"""

from __future__ import annotations

import ast
import functools
import inspect
import os
import site
import sys
import sysconfig
import types
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import xxhash

from pytest_physpipe import sources
from pytest_physpipe.errors import PhyspipeWarning, StageError
from pytest_physpipe.frozen import FrozenValue

__all__ = ["CodeFingerprint", "clear_memo", "code_of", "fingerprint", "fingerprint_source"]

#: Packages whose code is the tool, not the physics: never followed.
_TOOL_PACKAGES = ("pytest_physpipe", "_pytest", "pytest", "pluggy", "xdist")


@dataclass(init=False, repr=False, eq=False)
class CodeFingerprint(FrozenValue):
    """What :func:`code_of` returns for a stage function.

    ``digest`` goes into the key; ``parts`` names every piece of code it covered (the stage as
    ``<stage>``, then ``module.qualname`` of each helper and ``module.NAME`` of each constant)
    with that piece's own fingerprint, so an edit can be traced to what changed; ``modules``
    are the top-level names of non-project modules the code reached.
    """

    digest: str
    parts: dict[str, str] = field(default_factory=dict)
    modules: tuple[str, ...] = ()

    def __init__(
        self, digest: str, parts: dict[str, str] | None = None, modules: tuple[str, ...] = ()
    ) -> None:
        self.__dict__.update(digest=digest, parts={} if parts is None else parts, modules=modules)


# -- normalizing source ----------------------------------------------------------------------------


_DOC_HOLDERS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)


def _is_docstring(statement: ast.stmt) -> bool:
    return (
        isinstance(statement, ast.Expr)
        and isinstance(statement.value, ast.Constant)
        and isinstance(statement.value.value, str)
    )


def _digest_tree(node: ast.AST, *, drop_decorators: bool = False) -> str:
    return xxhash.xxh3_128_hexdigest(_stable_dump(node, drop_decorators).encode())


def fingerprint_source(source: str) -> str:
    """Fingerprint of a stage's source: its normalized AST, decorators left out.

    Decorator arguments that affect results (version, config) are keyed separately; the rest
    (resources, slow, retries, ...) must not invalidate the cache.
    """
    return _digest_tree(sources.parse(source), drop_decorators=True)


def _stable_dump(node: Any, drop_decorators: bool = False) -> str:
    """Like ``ast.dump`` without docstrings, and the same on every Python version.

    ``ast.dump`` changed its output for empty fields in 3.13, and new versions add fields
    (``type_params`` in 3.12); leaving out every empty field keeps keys valid across upgrades.
    Positions are attributes, not fields: where code sits in its file never counts. A body
    holding only a docstring dumps as ``pass``, so ``def f(): "doc"`` equals ``def f(): pass``.
    With ``drop_decorators``, the top node's decorators are left out (a stage's ``@stage``).
    """
    if isinstance(node, ast.AST):
        fields = []
        for name in node._fields:
            value = getattr(node, name, None)
            if name == "decorator_list" and drop_decorators:
                continue
            if (
                name == "body"
                and isinstance(node, _DOC_HOLDERS)
                and value
                and _is_docstring(value[0])
            ):
                value = value[1:] or [ast.Pass()]
            if value is None or value == []:
                continue
            fields.append(f"{name}={_stable_dump(value)}")
        return f"{type(node).__name__}({','.join(fields)})"
    if isinstance(node, list):
        return "[" + ",".join(_stable_dump(item) for item in node) + "]"
    return repr(node)


# -- what counts as project code -------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _installed_roots() -> tuple[str, ...]:
    # One get_paths(): each get_path() expands every path of the scheme again.
    scheme = sysconfig.get_paths()
    paths = {scheme.get(n) for n in ("stdlib", "platstdlib", "purelib", "platlib")}
    paths |= {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    paths |= set(getattr(site, "getsitepackages", list)())
    user = getattr(site, "getusersitepackages", None)
    if user is not None:
        paths.add(user())
    return tuple(sorted(os.path.realpath(p) + os.sep for p in paths if p))


@functools.lru_cache(maxsize=4096)
def _is_project_file(filename: str) -> bool:
    if not filename.endswith(".py") or not os.path.isfile(filename):
        return False
    real = os.path.realpath(filename)
    parts = real.split(os.sep)
    if "site-packages" in parts or "dist-packages" in parts:
        return False
    return not real.startswith(_installed_roots())


def _is_project_module(module: types.ModuleType | None) -> bool:
    if module is None:
        return False
    name = module.__name__
    if name.split(".")[0] in _TOOL_PACKAGES:
        return False
    filename = getattr(module, "__file__", None)
    return isinstance(filename, str) and _is_project_file(filename)


def _module_of(obj: Any) -> types.ModuleType | None:
    name = getattr(obj, "__module__", None)
    return sys.modules.get(name) if isinstance(name, str) else None


def _top_module(obj: Any) -> str | None:
    if isinstance(obj, types.ModuleType):
        name: object = obj.__name__
    else:
        name = getattr(type(obj), "__module__", None) if not callable(obj) else None
        name = getattr(obj, "__module__", None) or name
    if not isinstance(name, str) or not name:
        return None
    top = name.split(".")[0]
    return None if top in ("builtins", "__main__") or top in _TOOL_PACKAGES else top


# -- the graph of code -----------------------------------------------------------------------------


class _Node:
    """One piece of code: its own fingerprint, what it references, what it reached outside."""

    __slots__ = ("digest", "label", "modules", "refs")

    def __init__(self, label: str, digest: str, refs: list[Any], modules: set[str]) -> None:
        self.label = label
        self.digest = digest
        self.refs = refs
        self.modules = modules


class _Analyzer:
    """Fingerprints pieces of code and lists their references; memoized for the process."""

    def __init__(self) -> None:
        self.nodes: dict[int, tuple[object, _Node | None]] = {}
        # By module object too: a module imported afresh (edited, or in a new in-process run)
        # must be read again.
        self.constants: dict[tuple[str, str], tuple[object, _Node | None]] = {}
        self.module_bindings: dict[int, tuple[object, dict[str, list[ast.stmt]]]] = {}

    def clear(self) -> None:
        self.nodes.clear()
        self.constants.clear()
        self.module_bindings.clear()

    # -- objects -------------------------------------------------------------------------------

    def node(self, obj: Any) -> _Node | None:
        """The node of a project function or class (after unwrapping), else ``None``."""
        memo = self.nodes.get(id(obj))
        if memo is not None and memo[0] is obj:
            return memo[1]
        result = self._build(obj)
        self.nodes[id(obj)] = (obj, result)
        return result

    def _build(self, obj: Any) -> _Node | None:
        if isinstance(obj, types.MethodType):
            obj = obj.__func__
        if isinstance(obj, staticmethod | classmethod):
            obj = obj.__func__
        if isinstance(obj, property):
            return self._group(obj, [obj.fget, obj.fset, obj.fdel])
        if isinstance(obj, functools.partial):
            return self._group(obj, [obj.func, *obj.args, *obj.keywords.values()])
        if isinstance(obj, types.FunctionType):
            wrapped = getattr(obj, "__wrapped__", None)
            if wrapped is not None and wrapped is not obj:
                inner = self.node(wrapped)
                if not _is_project_module(_module_of(obj)):
                    return inner  # a library's wrapper (functools.wraps): only the inside counts
                if inner is not None:
                    own = self._function(obj)
                    if own is not None:
                        own.refs.append(wrapped)
                    return own
            return self._function(obj)
        if isinstance(obj, type):
            return self._class(obj)
        if isinstance(obj, types.ModuleType) or callable(obj) is False:
            return None
        # A decorator object holding the function it decorates (a scikit-fem form, a numba
        # dispatcher, a click command): what it holds is the code that runs.
        held = [v for v in _held_functions(obj)]
        return self._group(obj, held) if held else None

    def _group(self, obj: Any, members: list[Any]) -> _Node | None:
        refs = [m for m in members if m is not None]
        if not refs:
            return None
        label = _label(obj)
        return _Node(
            label=label, digest=xxhash.xxh3_128_hexdigest(label.encode()), refs=refs, modules=set()
        )

    def _function(self, func: types.FunctionType) -> _Node | None:
        module = _module_of(func)
        if not _is_project_module(module) and not _is_project_file(func.__code__.co_filename):
            return None
        # The code object, not the function: inspect would unwrap a wrapper to what it wraps,
        # and the wrapper's own code runs too.
        tree = sources.node_of(func.__code__)
        if tree is None:
            return None
        digest = _digest_tree(tree)
        names = _code_names(func.__code__)
        label = _label(func)
        if getattr(func, "__wrapped__", None) is not None:
            label = f"{label}.<wrapper {func.__code__.co_name}>"
        scope = _Scope(func.__globals__, _closure(func), owner=label)
        refs, modules = self._resolve(tree, scope, names)
        defaults = [(str(i), v) for i, v in enumerate(func.__defaults__ or ())]
        defaults += list((func.__kwdefaults__ or {}).items())
        for position, default in defaults:
            # Defaults are evaluated where the function is defined (a factory's argument):
            # the value, not the expression in the source, is what runs.
            if _followable(default):
                refs.append(default)
            elif isinstance(default, _PLAIN):
                refs.append(_Value(f"{label}.<default {position}>", repr(default)))
        return _Node(label=label, digest=digest, refs=refs, modules=modules)

    def _class(self, cls: type) -> _Node | None:
        module = _module_of(cls)
        if not _is_project_module(module) or _is_config_class(cls):
            return None
        tree = sources.node_of(cls)
        if tree is None:
            return None
        digest = _digest_tree(tree)
        assert module is not None
        label = _label(cls)
        refs, modules = self._resolve(tree, _Scope(vars(module), {}, owner=label), None)
        return _Node(label=label, digest=digest, refs=refs, modules=modules)

    # -- names ---------------------------------------------------------------------------------

    def _resolve(
        self, tree: ast.AST, scope: _Scope, names: set[str] | None
    ) -> tuple[list[Any], set[str]]:
        """What the names of ``tree`` refer to: project objects to follow, outside modules."""
        refs: list[Any] = []
        modules: set[str] = set()
        for chain in _name_chains(tree):
            head = chain[0]
            if names is not None and head not in names:
                continue  # a local variable or parameter, not a global or closure
            found, obj = scope.lookup(head)
            if not found:
                continue
            if head in scope.closure and not _followable(obj):
                if isinstance(obj, _PLAIN):
                    refs.append(_Value(f"{scope.owner}.<closure {head}>", repr(obj)))
                continue
            owner, name = scope.module_name, head
            for attr in chain[1:]:
                if not isinstance(obj, types.ModuleType):
                    break
                try:
                    obj, owner, name = getattr(obj, attr), obj.__name__, attr
                except AttributeError:
                    break
            top = _top_module(obj)
            if top is not None and not _is_project_module(sys.modules.get(top)):
                modules.add(top)  # a library the code uses: provenance
            if _followable(obj):
                refs.append(obj)  # (a library's decorator object may hold project code)
                continue
            if not isinstance(obj, types.ModuleType) and owner is not None:
                refs.append(_Constant(owner, name))
        return refs, modules

    def constant(self, ref: _Constant) -> _Node | None:
        """A module-level constant, fingerprinted by the statements that bind it."""
        memo_key = (ref.module, ref.name)
        module = sys.modules.get(ref.module)
        memo = self.constants.get(memo_key)
        if memo is not None and memo[0] is module:
            return memo[1]
        # A constant defined from itself ends the recursion here.
        self.constants[memo_key] = (module, None)
        result = self._constant(ref)
        self.constants[memo_key] = (module, result)
        return result

    def _constant(self, ref: _Constant) -> _Node | None:
        module = sys.modules.get(ref.module)
        if not _is_project_module(module):
            return None
        assert module is not None
        statements = self._bindings(module).get(ref.name)
        if not statements:
            return None
        refs: list[Any] = []
        modules: set[str] = set()
        dumps = []
        for statement in statements:
            if isinstance(statement, ast.ImportFrom):
                source_module = _import_target(module, statement)
                original = next(
                    (a.name for a in statement.names if (a.asname or a.name) == ref.name), ref.name
                )
                if source_module is not None:
                    refs.append(_Constant(source_module, original))
                dumps.append(f"from {source_module} import {original}")
                continue
            dumps.append(_stable_dump(statement))
            scope = _Scope(vars(module), {}, owner=f"{ref.module}.{ref.name}")
            found, more = self._resolve(statement, scope, None)
            refs.extend(r for r in found if not (isinstance(r, _Constant) and r == ref))
            modules |= more
        digest = xxhash.xxh3_128_hexdigest("\n".join(dumps).encode())
        return _Node(label=f"{ref.module}.{ref.name}", digest=digest, refs=refs, modules=modules)

    def _bindings(self, module: types.ModuleType) -> dict[str, list[ast.stmt]]:
        cached = self.module_bindings.get(id(module))
        if cached is not None and cached[0] is module:
            return cached[1]
        bindings: dict[str, list[ast.stmt]] = {}
        filename = getattr(module, "__file__", None)
        found = sources.source_file(filename) if isinstance(filename, str) else None
        for statement in found.tree.body if found is not None else ():
            for name in _bound_names(statement):
                bindings.setdefault(name, []).append(statement)
        self.module_bindings[id(module)] = (module, bindings)
        return bindings


@dataclass(init=False, repr=False, eq=False)
class _Constant(FrozenValue):
    """A module-level name of a project module bound to something that is not code."""

    module: str
    name: str

    def __init__(self, module: str, name: str) -> None:
        self.__dict__.update(module=module, name=name)


@dataclass(init=False, repr=False, eq=False)
class _Value(FrozenValue):
    """A plain value a function closes over or takes as a default, by its ``repr``."""

    label: str
    text: str

    def __init__(self, label: str, text: str) -> None:
        self.__dict__.update(label=label, text=text)


#: Values whose ``repr`` is the same in every process (closure cells, defaults).
_PLAIN = (bool, int, float, complex, str, bytes, type(None))


class _Scope:
    """Where a function's free names live: its closure cells, then its module's globals."""

    def __init__(self, globals_: dict[str, Any], closure: dict[str, Any], *, owner: str) -> None:
        self.globals = globals_
        self.closure = closure
        self.owner = owner
        name = globals_.get("__name__")
        self.module_name = name if isinstance(name, str) else None

    def lookup(self, name: str) -> tuple[bool, Any]:
        if name in self.closure:
            return True, self.closure[name]
        if name in self.globals:
            return True, self.globals[name]
        return False, None


def _closure(func: types.FunctionType) -> dict[str, Any]:
    cells: dict[str, Any] = {}
    for name, cell in zip(func.__code__.co_freevars, func.__closure__ or (), strict=False):
        try:
            cells[name] = cell.cell_contents
        except ValueError:  # an empty cell (a name assigned later in the enclosing function)
            continue
    return cells


def _code_names(code: types.CodeType) -> set[str]:
    """Global and free names the code (and the code nested in it) may load."""
    names = set(code.co_names) | set(code.co_freevars)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def _name_chains(tree: ast.AST) -> Iterator[list[str]]:
    """``a.b.c`` as ``["a", "b", "c"]`` for every name loaded in ``tree`` (longest chains)."""
    inner: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and id(node) not in inner:
            chain: list[str] = []
            current: ast.AST = node
            while isinstance(current, ast.Attribute):
                chain.append(current.attr)
                inner.add(id(current.value))
                current = current.value
            if isinstance(current, ast.Name):
                inner.add(id(current))
                yield [current.id, *reversed(chain)]
        elif (
            isinstance(node, ast.Name) and id(node) not in inner and isinstance(node.ctx, ast.Load)
        ):
            yield [node.id]


def _bound_names(statement: ast.stmt) -> Iterator[str]:
    if isinstance(statement, ast.Assign):
        for target in statement.targets:
            yield from (n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    elif isinstance(statement, ast.AnnAssign | ast.AugAssign):
        if isinstance(statement.target, ast.Name):
            yield statement.target.id
    elif isinstance(statement, ast.ImportFrom):
        for alias in statement.names:
            yield alias.asname or alias.name


def _import_target(module: types.ModuleType, statement: ast.ImportFrom) -> str | None:
    if not statement.level:
        return statement.module
    package = module.__package__ or ""
    parts = package.split(".") if package else []
    if statement.level - 1 > len(parts):
        return None
    base = parts[: len(parts) - (statement.level - 1)]
    return ".".join([*base, statement.module] if statement.module else base) or None


def _held_functions(obj: Any) -> Iterator[Any]:
    attributes = getattr(obj, "__dict__", None)
    if not isinstance(attributes, dict):
        return
    for value in attributes.values():
        if isinstance(value, types.FunctionType) and _is_project_file(value.__code__.co_filename):
            yield value


def _followable(obj: Any) -> bool:
    if isinstance(obj, types.FunctionType | types.MethodType | functools.partial | type):
        return True
    if isinstance(obj, staticmethod | classmethod | property):
        return True
    if callable(obj) and not isinstance(obj, types.BuiltinFunctionType):
        return any(True for _ in _held_functions(obj))
    return False


def _is_config_class(cls: type) -> bool:
    # A config's values are keyed field by field; its class body (validators, field docs)
    # would only add false invalidations.
    return any(
        base.__name__ == "StageConfig" and base.__module__.startswith("pytest_physpipe")
        for base in cls.__mro__[1:]
    )


def _label(obj: Any) -> str:
    qualname = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    module = getattr(obj, "__module__", None) or type(obj).__module__
    return f"{module}.{qualname}"


_ANALYZER = _Analyzer()


def clear_memo() -> None:
    """Forget every memoized fingerprint (a new session may see edited files)."""
    _ANALYZER.clear()
    sources.clear()
    _is_project_file.cache_clear()


# -- fingerprints of stages ------------------------------------------------------------------------


def _walk(roots: Iterable[Any]) -> tuple[dict[str, str], set[str]]:
    parts: dict[str, str] = {}
    modules: set[str] = set()
    seen: set[object] = set()
    stack = list(roots)
    keep: list[Any] = []  # ids stay unique while the objects live
    while stack:
        obj = stack.pop()
        ident: object = obj if isinstance(obj, _Constant | _Value) else id(obj)
        if ident in seen:
            continue
        seen.add(ident)
        keep.append(obj)
        if isinstance(obj, _Value):
            parts[obj.label] = xxhash.xxh3_128_hexdigest(obj.text.encode())
            continue
        node = _ANALYZER.constant(obj) if isinstance(obj, _Constant) else _ANALYZER.node(obj)
        if node is None:
            continue
        label, count = node.label, 1
        while label in parts:  # two lambdas of one module: walk order is deterministic
            count += 1
            label = f"{node.label}#{count}"
        parts[label] = node.digest
        modules |= node.modules
        stack.extend(node.refs)
    return parts, modules


def _stage_digest(func: Any) -> str:
    node = sources.node_of(func)
    if node is not None:
        return _digest_tree(node, drop_decorators=True)
    code = getattr(func, "__code__", None)
    if not isinstance(code, types.CodeType):
        raise StageError(
            f"cannot fingerprint {func!r}: it has no source file and no code object; "
            "track only functions, classes and modules defined in .py files"
        )
    warnings.warn(
        f"no source for {getattr(func, '__qualname__', func)!r}; its bytecode is keyed "
        "instead, so the key changes with the Python version",
        PhyspipeWarning,
        stacklevel=4,
    )
    return xxhash.xxh3_128_hexdigest(code.co_code + repr(code.co_consts).encode())


def _unwrap(obj: Any) -> Any:
    """The code behind a decorated object: ``__wrapped__``, a method's function, a form's."""
    for _ in range(32):  # a wrapper chain is short; a cycle must not hang collection
        if isinstance(obj, types.MethodType | staticmethod | classmethod):
            obj = obj.__func__
        elif isinstance(obj, functools.partial):
            obj = obj.func
        elif getattr(obj, "__wrapped__", None) not in (None, obj):
            obj = obj.__wrapped__
        elif not isinstance(obj, types.FunctionType | type | types.ModuleType):
            attributes = getattr(obj, "__dict__", None)
            held = [v for v in (attributes or {}).values() if isinstance(v, types.FunctionType)]
            if not held:
                return obj
            obj = held[0]
        else:
            return obj
    return obj


def _tracked(obj: Any) -> tuple[str, str, list[Any]]:
    """``(label, digest, refs)`` for one ``track=`` entry: a module, function, class or form."""
    if isinstance(obj, types.ModuleType):
        try:
            return obj.__name__, fingerprint_source(inspect.getsource(obj)), []
        except (OSError, TypeError):
            pass
    label = _label(obj) if not isinstance(obj, types.ModuleType) else obj.__name__
    target = _unwrap(obj)
    try:
        source = inspect.getsource(target)
    except (OSError, TypeError):
        if isinstance(getattr(target, "__code__", None), types.CodeType):
            return label, _stage_digest(target), []
        raise StageError(
            f"track=[{label}]: cannot fingerprint a {type(obj).__name__}: it has no source "
            "file, no code object and holds no function. Track the function, class or module "
            "whose code matters instead."
        ) from None
    return label, _digest_tree(sources.parse(source)), [target]


def code_of(func: Any, track: Iterable[Any] = (), *, follow: bool = True) -> CodeFingerprint:
    """The code fingerprint of a stage function, the project code it reaches and ``track``."""
    own = _stage_digest(func)
    parts: dict[str, str] = {"<stage>": own}
    modules: set[str] = set()
    roots: list[Any] = []
    if follow and isinstance(func, types.FunctionType):
        node = _ANALYZER.node(func)
        if node is not None:
            roots.extend(node.refs)
            modules |= node.modules
    extras: list[str] = []
    for extra in track:
        label, digest, refs = _tracked(extra)
        extras.append(f"{label}={digest}")
        if follow:
            roots.extend(refs)
    if roots:
        found, reached = _walk(roots)
        found.pop(_label(func), None)
        parts.update(found)
        modules |= reached
    if len(parts) == 1 and not extras:
        digest = own
    else:
        lines = [f"{name}={value}" for name, value in sorted(parts.items())]
        digest = xxhash.xxh3_128_hexdigest("\n".join([*lines, *extras]).encode())
    return CodeFingerprint(digest=digest, parts=parts, modules=tuple(sorted(modules)))


def fingerprint(func: Any, track: Iterable[Any] = ()) -> str:
    """The code fingerprint (hex digest) of a stage function; see :func:`code_of`."""
    return code_of(func, track).digest
