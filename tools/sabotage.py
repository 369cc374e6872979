"""Prove that a chapter's proofs can fail: sabotage each from-scratch module, expect the chapter to.

For every public ``nn.Module`` class a chapter proves — defined in a cell tagged ``export``, the
cells ``tests/test_chapter_classes.py`` imports — insert — right after the last cell that defines
it — a cell that scales the class's output by 1.001 in training mode, execute the chapter, and
expect a cell to raise. A chapter that still runs to the end proves nothing about that class.

    python tools/sabotage.py chapters/batch_norm.ipynb [more notebooks]   # exit 1 if any survives
"""

import argparse
import re
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

CLASS_DEFINITION = re.compile(r"^class\s+(\w+)\s*[(:]", re.M)

SABOTAGE = """\
import torch as _torch

if isinstance({name}, type) and issubclass({name}, _torch.nn.Module):
    _original_forward_{name} = {name}.forward

    def _sabotaged_forward_{name}(self, *args, **kwargs):
        output = _original_forward_{name}(self, *args, **kwargs)
        return output * 1.001 if self.training else output

    {name}.forward = _sabotaged_forward_{name}
    print("sabotaged {name}")
else:
    raise SystemExit("{name} is not an nn.Module: nothing to sabotage")
"""


def defined_classes(notebook: nbformat.NotebookNode) -> dict[str, int]:
    """Each public class an ``export`` cell defines, with the index of the last cell defining it."""
    exported = {
        name
        for cell in notebook.cells
        if cell.cell_type == "code" and "export" in cell.metadata.get("tags", [])
        for name in CLASS_DEFINITION.findall(cell.source)
        if not name.startswith("_")
    }
    last = {}
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            for name in CLASS_DEFINITION.findall(cell.source):
                if name in exported:
                    last[name] = index
    return last


def is_module_class(notebook: nbformat.NotebookNode, name: str) -> bool:
    """Cheap static filter: autograd Functions, dataclasses and the like are not sabotaged."""
    pattern = re.compile(rf"^class\s+{name}\s*\((?P<bases>[^)]*)\)", re.M)
    for cell in notebook.cells:
        match = pattern.search(cell.source) if cell.cell_type == "code" else None
        if match and "Function" not in match.group("bases") and match.group("bases").strip():
            return True
    return False


def survives_sabotage(path: Path, name: str, index: int, timeout: int = 600) -> bool:
    """Execute ``path`` with ``name`` sabotaged after cell ``index``; True if nothing raised."""
    notebook = nbformat.read(path, as_version=4)
    notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(SABOTAGE.format(name=name)))
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute()
    except CellExecutionError as error:
        if f"{name} is not an nn.Module" in str(error):
            raise
        return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    arguments = parser.parse_args()
    survivors = []
    for path in arguments.notebooks:
        notebook = nbformat.read(path, as_version=4)
        if not defined_classes(notebook):
            print(f"{path.name}: no class in a cell tagged export; nothing to sabotage", flush=True)
        for name, index in sorted(defined_classes(notebook).items(), key=lambda item: item[1]):
            if not is_module_class(notebook, name):
                continue
            survived = survives_sabotage(path, name, index)
            print(f"{path.name}: {name} sabotaged -> {'SURVIVED' if survived else 'chapter failed'}",
                  flush=True)
            if survived:
                survivors.append(f"{path.name}:{name}")
    if survivors:
        print("no proof caught:", ", ".join(survivors))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
