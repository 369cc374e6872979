"""The sabotage check must tell a chapter whose proof catches a broken class from one whose doesn't."""

import nbformat
import pytest
from sabotage import defined_classes, survives_sabotage

DEFINITION = """\
import torch
from torch import nn


class Doubler(nn.Module):
    def forward(self, x):
        return 2 * x


class DoublerFunction(torch.autograd.Function):
    pass
"""
PROOF = "x = torch.ones(3)\nassert torch.equal(Doubler()(x), 2 * x)"
PRINTOUT = "x = torch.ones(3)\nprint(torch.equal(Doubler()(x), 2 * x))"


def chapter(tmp_path, *sources):
    cells = [nbformat.v4.new_code_cell(source) for source in sources]
    cells[0].metadata["tags"] = ["export"]
    path = tmp_path / "chapter.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=cells), path)
    return path


def test_only_public_classes_of_export_cells_are_targets(tmp_path):
    path = chapter(tmp_path, DEFINITION, "class Unexported(torch.nn.Module):\n    pass", PROOF)
    assert defined_classes(nbformat.read(path, as_version=4)) == {"Doubler": 0, "DoublerFunction": 0}


@pytest.mark.parametrize("proof,survives", [(PROOF, False), (PRINTOUT, True)])
def test_an_asserting_proof_catches_the_sabotage_a_printout_does_not(tmp_path, proof, survives):
    path = chapter(tmp_path, DEFINITION, proof)
    assert survives_sabotage(path, "Doubler", 0) is survives
