"""The LiteRT format (.tflite): registered so that ``--format litert`` is refused before
any work with the measured reason (export/litert.py)."""

from __future__ import annotations

from graphport.formats.base import Format, register_format


@register_format("litert")
class LiteRtFormat(Format):
    rank = 80
    summary = "litert (refused: litert-torch converts at fixed shapes only)"
    writes = (".tflite",)

    def check(self) -> None:
        from graphport.export.litert import require_litert  # rule 7 of formats/base.py

        require_litert()
