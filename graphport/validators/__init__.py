"""Validators: compare runtime outputs with the eager model and judge parity."""

from graphport.validators.compare import OutputDiff, compare_output
from graphport.validators.parity import CaseResult, ParityReport, check_contract, validate_export

__all__ = [
    "CaseResult",
    "OutputDiff",
    "ParityReport",
    "check_contract",
    "compare_output",
    "validate_export",
]
