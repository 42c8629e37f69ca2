"""The label across the offline provider's images, so nobody takes a placeholder for a photo.

A 5×7 pixel font for the few letters the label uses, drawn white on a dark band into raw RGB
rows; no imaging library needed.
"""

from __future__ import annotations

from collections.abc import Sequence

LABEL = ("OFFLINE", "PLACEHOLDER")
GLYPH_WIDTH = 5
GLYPH_HEIGHT = 7
# Glyph rows, top to bottom; "#" is ink.
GLYPHS: dict[str, tuple[str, ...]] = {
    " ": (".....",) * 7,
    "A": (".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "C": (".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."),
    "D": ("####.", "#...#", "#...#", "#...#", "#...#", "#...#", "####."),
    "E": ("#####", "#....", "#....", "####.", "#....", "#....", "#####"),
    "F": ("#####", "#....", "#....", "####.", "#....", "#....", "#...."),
    "H": ("#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "I": (".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."),
    "L": ("#....", "#....", "#....", "#....", "#....", "#....", "#####"),
    "N": ("#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#", "#...#"),
    "O": (".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "P": ("####.", "#...#", "#...#", "####.", "#....", "#....", "#...."),
    "R": ("####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"),
}
INK = b"\xff\xff\xff"
BAND = b"\x20\x20\x28"


def _scale(width: int, height: int, lines: Sequence[str]) -> int:
    """The largest whole zoom at which every line fits in 90 % of the width (0: none fits)."""
    longest = max(len(line) for line in lines)
    by_width = int(width * 0.9) // ((GLYPH_WIDTH + 1) * longest)
    by_height = int(height * 0.8) // ((GLYPH_HEIGHT + 2) * len(lines) + 2)
    return min(by_width, by_height)


def _put(row: bytearray, x: int, count: int, colour: bytes) -> None:
    row[x * 3 : (x + count) * 3] = colour * count


def draw_label(rows: list[bytearray], width: int, lines: Sequence[str] = LABEL) -> bool:
    """Draw `lines` centred on a dark band across `rows` (RGB, 3 bytes a pixel).

    Returns False, drawing nothing, when the image is too small for a legible label.
    """
    scale = _scale(width, len(rows), lines)
    if scale < 1:
        return False
    line_height = (GLYPH_HEIGHT + 2) * scale
    top = (len(rows) - line_height * len(lines)) // 2
    for y in range(top - scale, top + line_height * len(lines) + scale):
        _put(rows[y], 0, width, BAND)
    for index, line in enumerate(lines):
        left = (width - ((GLYPH_WIDTH + 1) * len(line) - 1) * scale) // 2
        _draw_line(rows, line, left, top + index * line_height + scale, scale)
    return True


def _draw_line(rows: list[bytearray], line: str, left: int, top: int, scale: int) -> None:
    for position, char in enumerate(line):
        glyph = GLYPHS.get(char, GLYPHS[" "])
        x0 = left + position * (GLYPH_WIDTH + 1) * scale
        for gy, pattern in enumerate(glyph):
            for gx, cell in enumerate(pattern):
                if cell != "#":
                    continue
                for dy in range(scale):
                    _put(rows[top + gy * scale + dy], x0 + gx * scale, scale, INK)
