"""A Label Studio labeling config (XML) -> where predictions go: the RectangleLabels and
BrushLabels controls on an Image, and their label. Entities and DOCTYPEs are refused."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from ..errors import ValidationProblem

__all__ = ["DEFAULT_LABEL", "KINDS", "Target", "parse_label_config"]

#: the control kinds filled, in the order predictions list them
KINDS = ("rectanglelabels", "brushlabels")
DEFAULT_LABEL = "difference"


@dataclass(frozen=True)
class Target:
    """Where predictions go: a labels control, the Image it points at, and the label."""

    type: str  # "rectanglelabels" | "brushlabels"
    from_name: str
    to_name: str
    label: str
    field: str | None  # the task data field the Image shows ($candidate -> candidate)


def _config_problem(message: str, where: str = "label_config") -> ValidationProblem:
    return ValidationProblem.at([where], message, "label_config")


def parse_label_config(xml: str, reference_field: str = "reference",
                       candidate_field: str = "candidate", where: str = "label_config"
                       ) -> list[Target]:
    """The RectangleLabels and BrushLabels controls to fill, one of each kind at most.

    Of several controls of a kind, the one on the Image showing the candidate wins, then
    the reference's, then the first in the document. The label is the control's first
    ``<Label value>``, else ``difference``. No usable control is a 422.
    """
    if "<!doctype" in xml.lower() or "<!entity" in xml.lower():
        raise _config_problem("DOCTYPE and entity declarations are not allowed", where)
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise _config_problem(f"not well-formed XML ({exc})", where) from None
    images: dict[str, str | None] = {}
    controls: list[ET.Element] = []
    for el in root.iter():
        tag = el.tag.lower() if isinstance(el.tag, str) else ""
        if tag == "image" and el.get("name"):
            value = el.get("value") or ""
            images[el.get("name", "")] = value[1:] if value.startswith("$") else None
        elif tag in KINDS and el.get("name"):
            controls.append(el)
    rank = {candidate_field: 0, reference_field: 1}
    best: dict[str, tuple[int, Target]] = {}
    for el in controls:
        kind = el.tag.lower()
        to_names = [n.strip() for n in (el.get("toName") or el.get("toname") or "").split(",")]
        to_name = next((n for n in to_names if n in images), None)
        if to_name is None:
            continue
        labels = [c.get("value") for c in el.iter()
                  if isinstance(c.tag, str) and c.tag.lower() == "label" and c.get("value")]
        target = Target(kind, el.get("name", ""), to_name, labels[0] if labels else DEFAULT_LABEL,
                        images[to_name])
        score = rank.get(target.field or "", 2)
        if kind not in best or score < best[kind][0]:
            best[kind] = (score, target)
    if not best:
        found = sorted({el.tag for el in controls}) or ["none"]
        raise _config_problem(
            "no RectangleLabels or BrushLabels control pointing at an Image (controls with "
            f"toName found: {', '.join(found)}); add for example <RectangleLabels "
            f'name="difference" toName="{candidate_field}"><Label value="difference"/>'
            "</RectangleLabels>", where)
    return [best[k][1] for k in KINDS if k in best]
