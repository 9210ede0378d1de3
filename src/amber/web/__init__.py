"""The dashboard: one node's pool and targets, seen and steered from a browser.

An edge like `amber.csi`: it translates HTTP into calls of the engines below and holds no
engine of its own. `config` is read once at the edge that starts it (`amber dashboard`,
`amber node --dashboard-address`); `views` is the view model, the read functions that the HTML
pages and the JSON API (`/api/...`) share; `actions` is the one module that changes anything
(snapshot, back up, restore, clone, expand, delete), with `operations` running the long ones
(backups, restores) in background threads whose progress the pages poll; `security` decides
who may read and act (loopback by default, a bearer token or login cookie otherwise, a CSRF
token and an Origin check on every POST); `app` builds the FastAPI application and `server`
runs it with uvicorn.

FastAPI, Starlette, Jinja2 and uvicorn are imported only by `app` and `server`: the CLI's
other commands never load them (`amber.web.config` imports none of them).
"""
