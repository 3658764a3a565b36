"""What the page tests share: the form controls of a page that nothing names."""

from __future__ import annotations

from html.parser import HTMLParser

CONTROLS = ("input", "select", "textarea")


class _Controls(HTMLParser):
    """The form controls a person fills in, and whether a ``<label>`` or ``aria-label``
    names each one."""

    def __init__(self) -> None:
        super().__init__()
        self.labels = 0
        self.unlabelled: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "label":
            self.labels += 1
        elif tag in CONTROLS and found.get("type") != "hidden" and not self._named(found):
            self.unlabelled.append(str(found.get("name")))

    def _named(self, attrs: dict[str, str | None]) -> bool:
        return self.labels > 0 or "aria-label" in attrs

    def handle_endtag(self, tag: str) -> None:
        if tag == "label":
            self.labels -= 1


def unlabelled_controls(html: str) -> list[str]:
    """Names of the controls in ``html`` that no wrapping label or aria-label names."""
    parser = _Controls()
    parser.feed(html)
    return parser.unlabelled
