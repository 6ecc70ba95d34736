"""The web dashboard of a run: pass-rate distributions live, and control of the rollout fleet.

    paced dashboard --store redis://127.0.0.1:6379/0 --run demo          # serve() from the command line
    handle = start_in_thread(store, "demo", "127.0.0.1", 8000, token)    # beside the driver, during a run
    app = create_app(store, "demo", token)                               # the FastAPI app itself

app.py holds the API (and serves static/, the page); view.py what it keeps in memory between polls of
the store; schema.py the API's bodies; server.py the ways to serve it. docs/dashboard.md is the guide.
"""

from services.dashboard.app import create_app
from services.dashboard.server import DashboardServer, main, serve, start_in_thread

__all__ = ["DashboardServer", "create_app", "main", "serve", "start_in_thread"]
