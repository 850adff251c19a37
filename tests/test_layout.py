"""The package's layering: no import runs upward or in a circle.

Each module belongs to a layer; it may import modules of lower layers and of
its own package, never of a higher layer or a sibling package of its layer,
and the modules of one package import each other without a cycle. Read from
the source (every import statement, at the top or inside a function).
"""

import ast
from pathlib import Path

import pytest

SEQCLF = Path(__file__).resolve().parents[1] / 'seqclf'
# Lowest first. A package's modules share its layer.
LAYERS = [
    ['seqclf.errors'],
    ['seqclf.logs'],
    ['seqclf.kernels'],
    ['seqclf.nn', 'seqclf.data'],
    ['seqclf.nnx'],
    ['seqclf.training'],
    ['seqclf.config'],
    ['seqclf.configs'],
    ['seqclf.train', 'seqclf.sweep', 'seqclf.inference'],
    ['seqclf.export'],
    ['seqclf.cli'],
    ['seqclf', 'seqclf.__main__'],
]


def _module_name(path: Path) -> str:
  parts = path.relative_to(SEQCLF.parent).with_suffix('').parts
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _unit(module: str) -> str:
  """The layer entry ``module`` belongs to (its package, or itself)."""
  entries = [e for layer in LAYERS for e in layer]
  owner = max((e for e in entries if module == e or module.startswith(e + '.')),
              key=len)
  return owner


def _layer(module: str) -> int:
  return next(i for i, layer in enumerate(LAYERS) if _unit(module) in layer)


def _imports(path: Path) -> set[str]:
  """The seqclf modules ``path`` imports (``from seqclf.x import y`` counts
  ``seqclf.x.y`` where that is a module, else ``seqclf.x``)."""
  out = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      out |= {a.name for a in node.names if a.name.startswith('seqclf')}
    elif isinstance(node, ast.ImportFrom) and (node.module or '').startswith(
        'seqclf'):
      for alias in node.names:
        full = f'{node.module}.{alias.name}'
        is_module = (SEQCLF.parent / (full.replace('.', '/') + '.py')).exists() \
            or (SEQCLF.parent / full.replace('.', '/')).is_dir()
        out.add(full if is_module else node.module)
  return out


MODULES = {_module_name(p): p for p in SEQCLF.rglob('*.py')}
GRAPH = {name: _imports(path) - {name} for name, path in MODULES.items()}


@pytest.mark.parametrize('module', sorted(MODULES))
def test_no_import_runs_upward_or_sideways(module):
  for imported in GRAPH[module]:
    if _unit(imported) == _unit(module):
      continue
    assert _layer(imported) < _layer(module), (
        f'{module} (layer {_layer(module)}) imports {imported} (layer '
        f'{_layer(imported)})')


def test_no_import_cycle():
  done, path = set(), []

  def visit(module):
    if module in path:
      cycle = path[path.index(module):] + [module]
      pytest.fail('import cycle: ' + ' -> '.join(cycle))
    if module in done:
      return
    path.append(module)
    for imported in GRAPH.get(module, ()):
      if imported in MODULES:
        visit(imported)
    path.pop()
    done.add(module)

  for module in sorted(MODULES):
    visit(module)


def test_every_module_has_a_layer():
  for module in MODULES:
    assert _layer(module) >= 0


def test_kernels_import_nothing_of_seqclf_but_errors_and_themselves():
  for module, imported in GRAPH.items():
    if module.startswith('seqclf.kernels'):
      assert {i for i in imported if not i.startswith('seqclf.kernels')
              } <= {'seqclf.errors'}, module
