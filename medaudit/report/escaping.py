"""Text from the user's files, made inert for every output format.

Paths, folder names, a model card's ``name`` and ``class_names``, metadata groups, layer names, and
anything else read from a JSON report are data, never markup. Every renderer passes them through one
of these helpers at the point where they enter the output:

* all formats (``printable``; ``one_line`` for error and warning lines also escapes newlines): C0/C1 control characters (except tab and newline), Unicode bidi
  controls, lone surrogates (from undecodable file names) and the XML non-characters U+FFFE/U+FFFF
  are shown as Python-style escapes (``\\x1b``, ``\\u202e``, ``\\udcff``): visible, no terminal
  escape sequences, no reordered text, and always encodable as UTF-8 and valid in XML 1.0.
* Markdown (``md_code``, ``md_text``): a user string is a code span, so nothing in it is HTML, a
  link, an image, an autolink, a mention, emphasis or a heading. The fence is one backtick longer
  than the longest backtick run inside, padded with a space where the text starts or ends with a
  backtick or a space; newlines and other line breaks become spaces; in a table cell every ``|`` is
  written ``\\|`` (GFM splits cells before it parses code spans, and drops that backslash again);
  strings longer than ``MD_LIMIT`` keep their head and tail around an ellipsis. ``md_text`` leaves
  plain words (letters and digits, joined by ``_ . , -`` inside a word and by single spaces;
  none starting ``www.``) as they are and code-spans the rest.
* Rich console (``rich_text``): a ``rich.text.Text``, which rich never parses for markup or
  ``:emoji:`` codes, so ``[/x]`` neither crashes nor styles anything.
* HTML (``report.html._e``), JUnit XML (``xml_text``) and matplotlib (``mpl_text``, ``$`` written
  ``\\$`` so it is no mathtext) build on ``printable``.
"""

from __future__ import annotations

import re
from typing import Any

from rich.text import Text

MD_LIMIT = 200  # characters of one user string in a Markdown comment (head … tail beyond that)

# C0 controls but tab and newline, DEL and C1, bidi embeddings/overrides/isolates and marks,
# lone surrogates, and the two XML 1.0 non-characters
_UNPRINTABLE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff\ufffe\uffff]"
)
_LINE_BREAKS = re.compile("[\n\t\u2028\u2029]+")
_BACKTICKS = re.compile("`+")
_WORD = r"[A-Za-z0-9]+(?:[_.,-][A-Za-z0-9]+)*"
_PLAIN = re.compile(rf"{_WORD}(?: {_WORD})*")
_WWW = re.compile(r"(?i)\bwww\.")  # GFM autolinks www.example.com without a scheme


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(value: Any) -> str:
    """``str(value)`` with control, bidi, surrogate and non-characters shown as escapes."""
    return _UNPRINTABLE.sub(_escape_char, str(value))


def one_line(value: Any) -> str:
    """``printable`` with line breaks shown as escapes too: an ``error:`` or ``warning:`` line
    quoting a user's string stays one line, and no fake ``error:`` line can follow it."""
    return printable(value).translate({0x0A: "\\n", 0x2028: "\\u2028", 0x2029: "\\u2029"})


def _shorten(text: str, limit: int) -> str:
    if limit <= 0 or len(text) <= limit:
        return text
    head = (limit - 1) // 2
    return text[:head] + "…" + text[len(text) - (limit - 1 - head) :]


def md_code(value: Any, *, table: bool = False, limit: int = MD_LIMIT) -> str:
    """A Markdown code span showing ``value`` literally (in a table cell if ``table``)."""
    text = _shorten(_LINE_BREAKS.sub(" ", printable(value)), limit)
    if not text:
        return "` `"
    fence = "`" * (max((len(run) for run in _BACKTICKS.findall(text)), default=0) + 1)
    if "`" in (text[0], text[-1]) or (text[0] == text[-1] == " " and text.strip(" ")):
        text = f" {text} "  # CommonMark strips one space from each end again
    if table:
        text = text.replace("|", "\\|")
    return f"{fence}{text}{fence}"


def md_text(value: Any, *, table: bool = False, limit: int = MD_LIMIT) -> str:
    """Plain words as they are (``pneumoniamnist``, ``test``), anything else as ``md_code``."""
    text = str(value)
    if len(text) <= limit and _PLAIN.fullmatch(text) and not _WWW.search(text):
        return text
    return md_code(text, table=table, limit=limit)


def rich_text(value: Any, style: str = "") -> Text:
    """A rich ``Text`` that shows ``value`` literally: no markup, no emoji codes, no control codes."""
    return Text(printable(value), style=style)


def xml_text(value: Any) -> str:
    """Text or attribute value valid in XML 1.0 (ElementTree escapes ``<&>"`` itself)."""
    return printable(value)


def mpl_text(value: Any) -> str:
    """A matplotlib label shown literally: no mathtext, no glyphs its fonts cannot take."""
    return printable(value).replace("\t", " ").replace("$", r"\$")
