"""Defences: output defences on the victim side (`output`)."""

from modelsteal.defenses.output import OUTPUT_MODES
from modelsteal.defenses.output import OutputMode
from modelsteal.defenses.output import parse_output

__all__ = ['OUTPUT_MODES', 'OutputMode', 'parse_output']
