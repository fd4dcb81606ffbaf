"""The packages of facegen_jax import one way: never a higher layer, never in a circle.

Parses every module with `ast` (nothing is imported). A module may import its own package and
any package of a lower layer; packages of one layer do not import each other unless the table
says so. Module-level imports between modules must not form a cycle. A facegen_jax import inside
a function is allowed only with a comment on the same line saying why (a heavy optional
dependency: `# dlib: optional heavy import`).
"""

import ast
import pathlib

PACKAGE = "facegen_jax"
ROOT = pathlib.Path(__file__).resolve().parents[1] / PACKAGE

# The one statement of the allowed order: package (or top-level module) -> (layer, packages of the
# same layer it may import). Lower layers first.
LAYERS = {
    "io": (0, ()),  # files, checkpoints, video, image conversions, the cache folder
    "entry": (0, ()),  # the command-line runner every tool shares
    "__init__": (0, ()),  # facegen_jax itself
    "landmarks": (1, ("io",)),
    "nets": (1, ("io",)),
    "models": (2, ()),
    "losses": (2, ()),
    "data": (2, ()),
    "train": (3, ()),
    "inference": (4, ()),
    "evaluation": (5, ()),  # may use inference; inference never imports evaluation
}


def _module_name(root: pathlib.Path, path: pathlib.Path) -> str:
  parts = (PACKAGE,) + path.relative_to(root).with_suffix("").parts
  return ".".join(parts[:-1]) if parts[-1] == "__init__" else ".".join(parts)


def find_modules(root: pathlib.Path = ROOT) -> dict:
  """Module name -> path, for every module of the package at `root`."""
  return {_module_name(root, p): p for p in sorted(root.rglob("*.py"))}


def _package(module: str) -> str:
  """facegen_jax.<package>.x -> <package>; facegen_jax.<module> -> <module>; facegen_jax -> __init__."""
  parts = module.split(".")
  return parts[1] if len(parts) > 1 else "__init__"


def imports_of(module: str, modules: dict):
  """(imported facegen_jax module, line, at module level?, the source line) for each import."""
  path = modules[module]
  source = path.read_text()
  lines = source.splitlines()
  tree = ast.parse(source, str(path))
  top_level = {id(node) for node in tree.body}
  is_package = path.name == "__init__.py"
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:  # relative import
        anchor = module.split(".") if is_package else module.split(".")[:-1]
        anchor = anchor[:len(anchor) - (node.level - 1)]
        base = ".".join(anchor + ([base] if base else []))
      # `from pkg import sub` imports module pkg.sub when it is one, else names of pkg.
      names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
    else:
      continue
    for name in names:
      if name == PACKAGE or name.startswith(PACKAGE + "."):
        while name not in modules and "." in name:  # the nearest module that exists
          name = name.rsplit(".", 1)[0]
        found.append((name, node.lineno, id(node) in top_level, lines[node.lineno - 1]))
  return found


def _where(modules, module, line):
  return f"{modules[module].relative_to(modules[PACKAGE].parents[1])}:{line}"


def upward_imports(modules: dict) -> list:
  bad = []
  for module in modules:
    own = _package(module)
    layer, same_layer_ok = LAYERS[own]
    for imported, line, _, _ in imports_of(module, modules):
      other = _package(imported)
      if other == own:
        continue
      other_layer = LAYERS[other][0]
      if other_layer > layer or (other_layer == layer and other not in same_layer_ok):
        bad.append(f"{_where(modules, module, line)} ({own}, layer {layer}) imports {imported} "
                   f"({other}, layer {other_layer})")
  return bad


def _reason_given(source_line: str) -> bool:
  """A comment on the line that says more than a pylint directive."""
  if "#" not in source_line:
    return False
  words = source_line.split("#", 1)[1].replace("#", " ").split()
  return any(not (w.startswith("pylint:") or w.startswith("disable=")) for w in words)


def unexplained_function_imports(modules: dict) -> list:
  return [f"{_where(modules, module, line)} imports {imported} inside a function without a reason on the line"
          for module in modules for imported, line, top, text in imports_of(module, modules)
          if not top and not _reason_given(text)]


def import_cycles(modules: dict) -> list:
  """Cycles of module-level imports between modules (depth-first search)."""
  graph = {m: sorted({i for i, _, top, _ in imports_of(m, modules) if top and i != m}) for m in modules}
  cycles, state, stack = [], {}, []

  def visit(m):
    state[m] = "open"
    stack.append(m)
    for n in graph[m]:
      if state.get(n) == "open":
        cycles.append(" -> ".join(stack[stack.index(n):] + [n]))
      elif n not in state:
        visit(n)
    stack.pop()
    state[m] = "done"

  for m in sorted(graph):
    if m not in state:
      visit(m)
  return cycles


MODULES = find_modules()


def test_every_package_has_a_layer():
  assert sorted({_package(m) for m in MODULES} - set(LAYERS)) == []


def test_no_import_of_a_higher_layer():
  bad = upward_imports(MODULES)
  assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def test_function_level_imports_say_why():
  bad = unexplained_function_imports(MODULES)
  assert not bad, "\n".join(bad)


def test_no_import_cycles():
  cycles = import_cycles(MODULES)
  assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_checks_catch_each_kind_of_offence(tmp_path):
  """On a small fake package: an upward import, a cycle, and an unexplained function-level import."""
  root = tmp_path / PACKAGE
  files = {
      "__init__.py": "",
      "io/__init__.py": "",
      "io/a.py": "from facegen_jax.train import t\n",  # upward (and, with train/t.py, a cycle)
      "train/__init__.py": "",
      "train/t.py": "import facegen_jax.io.a\n\ndef f():\n  from facegen_jax.io import a  # pylint: disable=x\n"
                    "\ndef g():\n  from facegen_jax.io import a  # av: optional heavy import\n",
  }
  for name, text in files.items():
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(text)
  modules = find_modules(root)
  assert [b.split(" ")[0] for b in upward_imports(modules)] == ["facegen_jax/io/a.py:1"]
  assert import_cycles(modules) == ["facegen_jax.io.a -> facegen_jax.train.t -> facegen_jax.io.a"]
  assert [b.split(" ")[0] for b in unexplained_function_imports(modules)] == ["facegen_jax/train/t.py:4"]
