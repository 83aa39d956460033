"""The optional packages ONNX files need, imported only when used: ``onnx`` writes them, ``onnxruntime`` runs them.

Neither is needed to train, evaluate, run a study or export TorchScript; ``pip install 'loclab[export]'`` adds both.
"""

from __future__ import annotations

from types import ModuleType

from loclab.errors import LoclabError


class ExportDependencyError(LoclabError, ImportError):
    """A package that ONNX export or ONNX inference needs is not installed; the message names the extra."""


def import_onnx() -> ModuleType:
    """The ``onnx`` package (to write ONNX files), or :class:`ExportDependencyError` saying how to install it."""
    try:
        import onnx
    except ImportError as err:
        raise _missing("onnx", "Writing an ONNX file", err) from None
    return onnx


def import_onnxruntime() -> ModuleType:
    """The ``onnxruntime`` package (to run ONNX files), or :class:`ExportDependencyError` saying how to install it."""
    try:
        import onnxruntime
    except ImportError as err:
        raise _missing("onnxruntime", "Running an ONNX file", err) from None
    return onnxruntime


def _missing(package: str, purpose: str, err: ImportError) -> ExportDependencyError:
    return ExportDependencyError(
        f"{purpose} needs the {package!r} package, which is not installed ({err}). Install it with "
        "`pip install 'loclab[export]'` (or `pip install -e '.[export]'` in a clone); TorchScript export and "
        "everything else in loclab work without it.")
