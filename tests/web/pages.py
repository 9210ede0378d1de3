"""Driving the dashboard's pages in the browser the way a person does: open, fill, click."""

from __future__ import annotations

from typing import Any

from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.web.conftest import Dashboard

WAIT = 60.0  # an upper bound for the page to react, never a pause
_SHOWN_FLASH = (
    "const f = document.getElementById('flash');"
    "return f && !f.hidden && f.getClientRects().length > 0 ? f.innerText.trim() : '';"
)


class Browser:
    """One dashboard in the shared headless Chromium."""

    def __init__(self, driver: WebDriver, dashboard: Dashboard) -> None:
        self.driver = driver
        self.dashboard = dashboard
        driver.get("about:blank")  # stop the previous test's page (it polls its dashboard)
        self.console_errors()  # and drop what it logged

    def wait(self) -> WebDriverWait[WebDriver]:
        return WebDriverWait(
            self.driver,
            WAIT,
            poll_frequency=0.05,
            ignored_exceptions=(StaleElementReferenceException, NoSuchElementException),
        )

    def open(self, path: str) -> None:
        """Load a page and check it raised no error in the console."""
        self.driver.get(self.dashboard.url.rstrip("/") + path)
        self.wait().until(lambda d: d.execute_script("return document.readyState") == "complete")
        errors = self.console_errors()
        assert errors == [], errors

    def console_errors(self) -> list[dict[str, Any]]:
        return [e for e in self.driver.get_log("browser") if e["level"] == "SEVERE"]

    def text(self, css: str) -> str:
        return str(self.driver.find_element(By.CSS_SELECTOR, css).text)

    def form(self, scope: str, action: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, f'{scope} form[data-action="{action}"]')

    def act(
        self, scope: str, action: str, values: dict[str, str] | None = None, confirm: bool = True
    ) -> str:
        """Fill and submit an action's form; answer the in-page confirmation if it asks;
        return the message the page shows."""
        self.driver.execute_script(
            "const f = document.getElementById('flash'); f.hidden = true; f.textContent = '';"
        )
        form = self.form(scope, action)
        asks = bool(form.get_attribute("data-confirm"))
        for name, value in (values or {}).items():
            field = form.find_element(By.NAME, name)
            if field.tag_name == "select":
                Select(field).select_by_visible_text(value)
            else:
                field.clear()
                field.send_keys(value)
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        if asks:
            dialog = self.driver.find_element(By.ID, "confirm")
            self.wait().until(lambda _: dialog.get_attribute("open") is not None)
            button = "confirm-ok" if confirm else "confirm-cancel"
            self.driver.find_element(By.ID, button).click()
            if not confirm:
                self.wait().until(lambda _: dialog.get_attribute("open") is None)
                return ""
        return self.flash()

    def flash(self) -> str:
        """The message the page shows once it shows one. Read in one script, inside the page:
        the page re-renders as the action ends, and an element found in one WebDriver call may
        belong to the old document by the next one."""
        self.wait().until(lambda d: d.execute_script(_SHOWN_FLASH) != "")
        return str(self.driver.execute_script(_SHOWN_FLASH))

    def flash_is_error(self) -> bool:
        return "error" in (self.driver.find_element(By.ID, "flash").get_attribute("class") or "")
