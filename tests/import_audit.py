"""Which imports of the project's own modules sit inside functions, and whether each one earns it.

The rule (README, "Architecture"): modules import each other at module level; an import inside a function is kept
only where it defers a *heavy or optional* third-party library that the importing module does not already load —
torch on the ONNX Runtime robot path, MuJoCo on the robot, rclpy on a training machine, scipy behind
``vidplan --help``. An own-module import that defers nothing only hides the package's shape from the reader and from
import-linter's module-level view.

Static (AST only, nothing is imported): a module's *load set* is every third-party top-level package reached from it
through module-level imports of own modules (packages' ``__init__`` included; ``if TYPE_CHECKING:`` blocks left out).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

# Import cost ≥ ~0.5 s on the 2-core CI machine, or absent on some installs (robot, sim-only, training).
HEAVY = frozenset({
    "accelerate", "av", "cv2", "diffusers", "matplotlib", "mujoco", "onnx", "onnxruntime", "pandas", "pinocchio",
    "pyarrow", "rclpy", "scipy", "sentence_transformers", "tensorboard", "tensorrt", "torch", "transformers", "wandb",
})


@dataclass(frozen=True)
class FunctionImport:
    module: str  # the importing module, dotted
    function: str
    line: int
    target: str  # the own module imported, dotted
    deferred: frozenset[str]  # heavy libraries the target loads that the importing module does not


class ImportAudit:
    """Own-module imports of the packages under ``src`` (one folder per package, ament_python layout
    ``src/<pkg>/<pkg>/...``)."""

    def __init__(self, src: Path, heavy: frozenset[str] = HEAVY) -> None:
        self.roots = {p.name: p for p in sorted(src.iterdir()) if (p / p.name).is_dir()}
        self.heavy = heavy
        self._parsed: dict[str, ast.Module | None] = {}

    def file_of(self, mod: str) -> Path | None:
        parts = mod.split(".")
        if parts[0] not in self.roots:
            return None
        p = self.roots[parts[0]].joinpath(*parts)
        if (p / "__init__.py").exists():
            return p / "__init__.py"
        return p.with_suffix(".py") if p.with_suffix(".py").exists() else None

    def _tree(self, mod: str) -> ast.Module | None:
        if mod not in self._parsed:
            f = self.file_of(mod)
            self._parsed[mod] = ast.parse(f.read_text(), str(f)) if f else None
        return self._parsed[mod]

    def _absolute(self, mod: str, node: ast.ImportFrom) -> str:
        if node.level == 0:
            return node.module or ""
        pkg = mod.split(".")
        if self.file_of(mod) and self.file_of(mod).name != "__init__.py":  # type: ignore[union-attr]
            pkg = pkg[:-1]
        pkg = pkg[: len(pkg) - (node.level - 1)]
        return ".".join(pkg + ([node.module] if node.module else []))

    def _targets(self, mod: str, node: ast.Import | ast.ImportFrom) -> list[str]:
        if isinstance(node, ast.Import):
            return [a.name for a in node.names]
        base = self._absolute(mod, node)
        # ``from pkg import sub`` imports the submodule pkg.sub when there is one (pkg's __init__ runs either way:
        # load_set adds a module's parents)
        subs = [f"{base}.{a.name}" for a in node.names if self.file_of(f"{base}.{a.name}")]
        return subs + ([base] if len(subs) < len(node.names) else [])

    @staticmethod
    def _module_level(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
        out: list[ast.Import | ast.ImportFrom] = []

        def visit(node: ast.AST) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                    continue
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    out.append(child)
                elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                    continue
                else:
                    visit(child)

        visit(tree)
        return out

    def _with_parents(self, mod: str) -> list[str]:
        parts = mod.split(".")
        if parts[0] not in self.roots:
            return [mod]
        return [".".join(parts[: i + 1]) for i in range(len(parts))]

    def load_set(self, mod: str) -> tuple[frozenset[str], frozenset[str]]:
        """(own modules, heavy third-party packages) that importing ``mod`` executes at module level."""
        seen: set[str] = set()
        heavy: set[str] = set()
        stack = self._with_parents(mod)
        while stack:
            m = stack.pop()
            if m in seen:
                continue
            seen.add(m)
            top = m.split(".")[0]
            if top not in self.roots:
                if top in self.heavy:
                    heavy.add(top)
                continue
            tree = self._tree(m)
            if tree is None:
                continue
            for node in self._module_level(tree):
                for t in self._targets(m, node):
                    stack += self._with_parents(t)
        return frozenset(s for s in seen if s.split(".")[0] in self.roots), frozenset(heavy)

    def modules(self) -> list[str]:
        out = []
        for root in self.roots.values():
            for f in sorted((root / root.name).rglob("*.py")):
                rel = f.relative_to(root).with_suffix("")
                out.append(".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts))
        return out

    def function_imports(self) -> list[FunctionImport]:
        """Every import of an own module inside a function body, with what it defers."""
        found: dict[tuple[str, int, str], FunctionImport] = {}
        for mod in self.modules():
            tree = self._tree(mod)
            assert tree is not None
            _, mine = self.load_set(mod)
            for fn in ast.walk(tree):
                if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                for node in ast.walk(fn):
                    if not isinstance(node, (ast.Import, ast.ImportFrom)):
                        continue
                    for t in self._targets(mod, node):
                        key = (mod, node.lineno, t)
                        if t.split(".")[0] in self.roots and self.file_of(t) and key not in found:
                            found[key] = FunctionImport(mod, fn.name, node.lineno, t, self.load_set(t)[1] - mine)
        return sorted(found.values(), key=lambda f: (f.module, f.line, f.target))

    def unearned(self) -> list[FunctionImport]:
        """Function-level own imports that defer no heavy library: they belong at module level."""
        return [f for f in self.function_imports() if not f.deferred]
