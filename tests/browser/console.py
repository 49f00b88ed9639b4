"""Cockpit's web console in a real browser, logged in through cockpit-ws's login page.

Usage: console.py URL HOST USER SHOTS [--wrong-password] < PASSWORD

URL is cockpit-ws (http://127.0.0.1:PORT), HOST what the login page's "Connect to" field
takes ([USER@]HOST[:PORT]). Drives Debian's Chromium through Playwright: the login page, the
Overview, the Terminal (a command typed and its output seen). Screenshots go to SHOTS. Prints
one line per step; exits 0 when every step passed, 1 with the failing step otherwise.
"""

import re
import sys
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
TIMEOUT_MS = 60_000


def step(name):
    print(f"step: {name}", flush=True)


def frame_named(page, suffix):
    """The page's frame whose name ends with `suffix` (Cockpit names them `cockpit1:HOST/PATH`)."""
    for _ in range(600):
        for frame in page.frames:
            if frame.name.endswith(suffix):
                return frame
        page.wait_for_timeout(100)
    raise AssertionError(f"no frame named *{suffix}")


def main():
    url, host, user, shots = sys.argv[1:5]
    wrong = "--wrong-password" in sys.argv[5:]
    # On stdin: a password is never a command-line argument.
    password = sys.stdin.readline().rstrip("\n")
    shots = Path(shots)
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(TIMEOUT_MS)
        try:
            step("login page")
            page.goto(url + "/")
            page.fill("#login-user-input", user)
            page.fill("#login-password-input", password)
            page.click("#show-other-login-options")
            page.fill("#server-field", host)
            page.screenshot(path=shots / "01-login.png")
            page.click("#login-button")
            if wrong:
                step("wrong password refused")
                expect(page.locator("#login-error-message")).to_contain_text(
                    re.compile("Wrong user name or password|Authentication failed", re.I)
                )
                page.screenshot(path=shots / "02-wrong-password.png")
                print("ok", flush=True)
                return 0
            # An unknown host key: the login page shows its fingerprint; accept it.
            accept = page.locator("#login-button", has_text=re.compile("Accept", re.I))
            shell = page.locator("#nav-system, iframe[name^='cockpit1:']").first
            # Locators, not page scripts: the shell's Content-Security-Policy forbids eval.
            page.locator("#hostkey-fingerprint, iframe[name^='cockpit1:']").first.wait_for(
                state="attached"
            )
            if accept.count() > 0 and accept.is_visible():
                step("host key")
                expect(page.locator("#hostkey-fingerprint")).to_contain_text("SHA256:")
                page.screenshot(path=shots / "02-host-key.png")
                accept.click()
            step("overview")
            expect(shell).to_be_attached()
            overview = frame_named(page, "/system")
            expect(overview.locator("body")).to_contain_text("System information", timeout=TIMEOUT_MS)
            page.screenshot(path=shots / "03-overview.png")
            step("terminal")
            page.goto(page.url.split("/system")[0] + "/system/terminal")
            terminal = frame_named(page, "/system/terminal")
            # xterm keeps a text copy of the screen for screen readers.
            rows = terminal.locator(".xterm-accessibility-tree")
            expect(rows).to_contain_text(re.compile(r"[$#]"), timeout=TIMEOUT_MS)
            terminal.locator(".xterm-helper-textarea").focus()
            page.keyboard.type("echo ferry-$((6*7)) $(id -un)\n")
            expect(rows).to_contain_text(f"ferry-42 {user}", timeout=TIMEOUT_MS)
            page.screenshot(path=shots / "04-terminal.png")

            # Accounts: creating one is for administrators only.
            step("accounts, limited")
            base = page.url.split("/system")[0]
            page.goto(base + "/users")
            accounts = frame_named(page, "/users")
            expect(accounts.locator("body")).to_contain_text(user, timeout=TIMEOUT_MS)
            expect(accounts.locator("#accounts-create")).to_have_count(0)
            step("administrative access")
            page.get_by_role("button", name=re.compile("Limited access")).first.click()
            page.fill("#switch-to-admin-access-password", password)
            page.screenshot(path=shots / "05-admin-dialog.png")
            page.get_by_role("button", name="Authenticate").click()
            expect(page.get_by_text("Administrative access").first).to_be_visible(
                timeout=TIMEOUT_MS
            )
            step("accounts, administrative")
            expect(accounts.locator("#accounts-create")).to_be_visible(timeout=TIMEOUT_MS)
            page.screenshot(path=shots / "06-admin-accounts.png")
            print("ok", flush=True)
            return 0
        except Exception as e:  # the step and what the page showed
            page.screenshot(path=shots / "failed.png")
            print(f"failed: {type(e).__name__}: {e}", flush=True)
            return 1
        finally:
            browser.close()


if __name__ == "__main__":
    sys.exit(main())
