"""Validators: compare runtime outputs with the eager model and judge parity."""

from graphport.validators.compare import OutputDiff, compare_output
from graphport.validators.contract import check_contract
from graphport.validators.html import render_html, write_html
from graphport.validators.parity import validate_export
from graphport.validators.reference import load_reference
from graphport.validators.report import CaseResult, ParityReport

__all__ = [
    "CaseResult",
    "OutputDiff",
    "ParityReport",
    "check_contract",
    "compare_output",
    "load_reference",
    "render_html",
    "validate_export",
    "write_html",
]
