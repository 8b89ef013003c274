"""The dashboard's confirmation, as a person answers it in the browser (Playwright)."""

from __future__ import annotations

from typing import Any


def confirm(page: Any, *says: str) -> None:
    """The confirmation the dashboard asks before Rollback, Unpin and Redeploy: it says each of
    `says` (the site, the release, the servers); confirmed."""
    from playwright.sync_api import expect

    dialog = page.locator("#confirm")
    expect(dialog).to_be_visible()
    for text in says:
        expect(dialog).to_contain_text(text)
    dialog.locator("button[value=confirm]").click()
    expect(dialog).to_be_hidden()
