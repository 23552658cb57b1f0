"""Tic-tac-toe: a move in one window shows in the other; a reload keeps seat and board."""

from __future__ import annotations

from playwright.sync_api import Locator, Page, expect

from tests.browser.conftest import Windows, screenshot


def cell(page: Page, i: int) -> Locator:
    return page.locator(f"#board .cell[data-cell='{i}']")


def test_moves_show_in_both_windows_and_survive_a_reload(windows: Windows) -> None:
    table = "main"  # this module's server is new: the table is empty
    alice = windows.open(f"/demos/game?user=alice&table={table}")
    expect(alice.locator("#game-status")).to_have_text("Waiting for a second player…")
    expect(alice.locator("#seat-X .name")).to_have_text("alice (you)")
    bob = windows.open(f"/demos/game?user=bob&table={table}")
    expect(bob.locator("#seat-O .name")).to_have_text("bob (you)")
    expect(alice.locator("#seat-O .name")).to_have_text("bob")
    expect(alice.locator("#game-status")).to_have_text("Your turn (X)")
    expect(bob.locator("#game-status")).to_have_text("alice's turn (X)")
    expect(alice.locator("#watching")).to_have_text("2")  # presence

    expect(cell(bob, 0)).to_be_disabled()  # not bob's turn: the page knows, and so does the server
    cell(alice, 4).click()
    expect(cell(bob, 4)).to_have_text("X")
    expect(bob.locator("#game-status")).to_have_text("Your turn (O)")
    cell(bob, 0).click()
    expect(cell(alice, 0)).to_have_text("O")

    # the server refuses an out-of-turn move even if a page sends it
    error = bob.evaluate(
        f"""() => window.livehub.client.rpc("game.move", {{table: "{table}", cell: 8}})
              .then(() => "accepted", (err) => err.message)"""
    )
    assert error == "not your turn"

    # reload: the state comes back from the server, the seat is kept
    bob.reload()
    expect(cell(bob, 4)).to_have_text("X")
    expect(cell(bob, 0)).to_have_text("O")
    expect(bob.locator("#seat-O .name")).to_have_text("bob (you)")

    for i, page in ((2, alice), (8, bob), (6, alice)):
        cell(page, i).click()
        expect(cell(alice if page is bob else bob, i)).not_to_have_text("")
    expect(alice.locator("#game-status")).to_have_text("alice wins!")
    expect(bob.locator("#board .cell.win")).to_have_count(3)
    screenshot(alice, "game")

    bob.click("#restart")
    expect(alice.locator("#board .cell.x")).to_have_count(0)
    expect(alice.locator("#seat-X .name")).to_have_text("bob")  # players swap marks
