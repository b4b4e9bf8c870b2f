"""Every import points down the rooms of DESIGN.md ("Rooms and doors"); no import circles.

A room is a top-level module or package of ``vo_service``. Imports are read from the source
(module level, inside functions and under ``TYPE_CHECKING`` alike), so a lazy import does
not hide an arrow pointing up or a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "vo_service"

# Rank of each room, lowest first: a module may import its own room or a lower rank, never
# a higher one, nor another room of its own rank (except at the top, where the ways in —
# the web application, its HTTP middleware, the web page and the command line — meet).
ROOMS: dict[str, int] = {
    # settings, the error types and storage-failure classification, SODA shapes
    "config": 0, "errors": 0, "shapes": 0,
    # the cutout engine: a pure library (FITS, WCS, arrays; no index, jobs or HTTP)
    "engine": 1,
    # the image index (may use the engine's spectral axes), the cutout cache, catalog
    # readers, VOTable documents from templates
    "archive": 2, "cache": 2, "catalogs": 2, "votables": 2,
    # what a request means: IDs -> records -> plan -> cache -> product; manifests
    "products": 3,
    # UWS jobs, their store, runner and executors (Dask workers import only this far)
    "jobs": 4,
    # HTTP <-> typed requests and VO documents
    "protocols": 5,
    # the ways in: the application, its middleware and server processes, the web page,
    # the command line, the package's own lazy API
    "app": 6, "cors": 6, "request_timeouts": 6, "serving": 6, "web": 6, "cli": 6,
    "cutout_command": 6, "cutout_inputs": 6, "mosaic_commands": 6, "timeseries_command": 6,
    "products_command": 6,
    "timeseries_api": 6,
    "__init__": 6,
}
TOP = max(ROOMS.values())


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(relative.parts).removesuffix(".__init__")
        found[name] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The ``vo_service`` modules ``name`` imports (``from pkg import module`` names the
    module, not the package)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in MODULES else base)
    return {target for target in found
            if target == "vo_service" or target.startswith("vo_service.")}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Each import of ``graph`` (module -> modules it imports) that points up or sideways."""
    wrong = []
    for name, targets in graph.items():
        room = _room(name)
        for target in targets:
            target_room = _room(target)
            if target_room == room:
                continue
            rank, target_rank = ROOMS.get(room, TOP), ROOMS.get(target_room, TOP + 1)
            if target_rank > rank or (target_rank == rank and rank != TOP):
                wrong.append(f"{name} ({room}, {rank}) -> {target} ({target_room}, "
                             f"{target_rank})")
    return sorted(wrong)


def import_circles(graph: dict[str, set[str]]) -> list[str]:
    """Every circle found by a depth-first walk of ``graph``, as ``a -> b -> a``."""
    cycles = []
    done: set[str] = set()

    def visit(node: str, stack: list[str]) -> None:
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target in stack:
                cycles.append(" -> ".join(stack[stack.index(target):] + [target]))
            elif target not in done:
                visit(target, stack)
        stack.pop()
        done.add(node)

    for start in sorted(graph):
        if start not in done:
            visit(start, [])
    return cycles


def test_every_module_has_a_room() -> None:
    unknown = sorted(name for name in MODULES if _room(name) not in ROOMS)
    assert not unknown, f"add these to ROOMS (and DESIGN.md's layout): {unknown}"


def test_imports_point_down() -> None:
    wrong = upward_imports(GRAPH)
    assert not wrong, "imports that point up or sideways:\n" + "\n".join(wrong)


def test_jobs_never_import_protocols_or_the_web() -> None:
    """Job kinds and Dask workers run without the web application (DESIGN.md)."""
    wrong = sorted(f"{name} -> {target}" for name, targets in GRAPH.items()
                   if _room(name) == "jobs" for target in targets
                   if ROOMS.get(_room(target), TOP) >= ROOMS["protocols"])
    assert not wrong, "\n".join(wrong)


def test_no_import_circles() -> None:
    circles = import_circles(GRAPH)
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_the_checks_catch_what_they_look_for() -> None:
    """An upward or sideways import and a circle are reported; the top rank may meet."""
    assert upward_imports({"vo_service.engine.cutout": {"vo_service.protocols.dali"}})
    assert upward_imports({"vo_service.archive.index": {"vo_service.cache"}})
    assert upward_imports({"vo_service.jobs.batch": {"vo_service.nowhere"}})
    assert not upward_imports({"vo_service.app": {"vo_service.web.routes", "vo_service.cors"},
                               "vo_service.protocols.soda": {"vo_service.products.cutouts"}})
    assert import_circles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a -> b -> c -> a"]
    assert not import_circles({"a": {"b", "c"}, "b": {"c"}, "c": set()})
    assert _imports("vo_service.app", MODULES["vo_service.app"]) >= {
        "vo_service.protocols.soda", "vo_service.protocols.uws"}  # from pkg import module
