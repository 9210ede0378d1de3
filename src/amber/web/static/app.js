// Amber dashboard: actions over fetch (with the CSRF token), an in-page confirmation for
// destroying actions, and live progress of running operations by polling /api/operations.
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]').content;
const pollMs = Number(document.querySelector('meta[name="poll-ms"]').content) || 1000;
const watched = new Set();

function flash(text, ok) {
  const box = document.getElementById("flash");
  box.textContent = text;
  box.className = ok ? "ok" : "error";
  box.hidden = false;
}

function confirmInPage(text) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
  });
}

async function submitAction(form) {
  const body = new URLSearchParams(new FormData(form));
  if (form.dataset.confirm) {
    if (!(await confirmInPage(form.dataset.confirm))) {
      return;
    }
    body.set("confirm", "yes");
  }
  const response = await fetch("/actions/" + form.dataset.action, {
    method: "POST",
    headers: { "X-CSRF-Token": csrf, "Content-Type": "application/x-www-form-urlencoded" },
    body: body,
    credentials: "same-origin",
  });
  let answer;
  try {
    answer = await response.json();
  } catch (e) {
    answer = { ok: false, error: "the dashboard answered " + response.status };
  }
  if (!answer.ok) {
    flash(answer.error, false);
    return;
  }
  if (answer.location) {
    // The page that shows the result says what happened (after it loads).
    sessionStorage.setItem("amber-flash", answer.message);
    window.location.assign(answer.location);
    return;
  }
  flash(answer.message, true);
  if (answer.operation) {
    watched.add(answer.operation.id);
    poll();
  }
}

function progressText(op) {
  let text = op.phase || "starting";
  if (op.percent !== null && op.percent !== undefined) {
    text += " " + Math.round(op.percent) + "%";
  }
  return text;
}

function renderRunning(ops) {
  const running = ops.filter((op) => op.state === "running");
  const section = document.getElementById("running");
  const list = document.getElementById("running-list");
  list.replaceChildren(
    ...running.map((op) => {
      const item = document.createElement("li");
      item.dataset.op = op.id;
      const label = document.createElement("span");
      label.textContent = op.title + ": ";
      const meter = document.createElement("progress");
      meter.max = 100;
      if (op.percent !== null && op.percent !== undefined) {
        meter.value = op.percent;
      }
      const phase = document.createElement("span");
      phase.className = "phase";
      phase.textContent = " " + progressText(op);
      item.append(label, meter, phase);
      return item;
    })
  );
  section.hidden = running.length === 0;
}

function renderTable(ops) {
  const table = document.querySelector("#operations tbody");
  if (!table) {
    return;
  }
  for (const op of ops) {
    let row = table.querySelector('tr[data-op="' + op.id + '"]');
    if (!row) {
      row = document.createElement("tr");
      row.dataset.op = op.id;
      for (const cls of ["id", "title", "state", "progress", "started", "result"]) {
        const cell = document.createElement("td");
        cell.className = cls;
        row.append(cell);
      }
      table.prepend(row);
    }
    row.className = op.state;
    row.querySelector(".id").textContent = op.id;
    row.querySelector(".title").textContent = op.title;
    row.querySelector(".state").textContent = op.state;
    row.querySelector(".progress").textContent = progressText(op);
    row.querySelector(".started").textContent =
      new Date(op.started * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC";
    row.querySelector(".result").textContent = op.result || op.error;
  }
}

async function poll() {
  let ops;
  try {
    const response = await fetch("/api/operations", { credentials: "same-origin" });
    if (!response.ok) {
      return;
    }
    ops = await response.json();
  } catch (e) {
    return;
  }
  renderRunning(ops);
  renderTable(ops);
  for (const op of ops) {
    if (watched.has(op.id) && op.state !== "running") {
      watched.delete(op.id);
      flash(op.state === "succeeded" ? op.result : "failed: " + op.error, op.state === "succeeded");
    }
  }
}

document.addEventListener("submit", (event) => {
  const form = event.target.closest("form.action");
  if (form) {
    event.preventDefault();
    submitAction(form);
  }
});

document.addEventListener("DOMContentLoaded", () => {
  const message = sessionStorage.getItem("amber-flash");
  if (message) {
    sessionStorage.removeItem("amber-flash");
    flash(message, true);
  }
  if (!location.pathname.startsWith("/login")) {
    poll();
    setInterval(poll, pollMs);
  }
});
