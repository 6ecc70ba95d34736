"""The web dashboard of a run: pass-rate distributions live, and control of the rollout fleet.

    paced dashboard --store redis://127.0.0.1:6379/0 --run demo          # serve() from the command line
    handle = start_in_process(store_url, "demo", "127.0.0.1", 8000, token)  # beside the driver, during a run
    handle = start_in_thread(store, "demo", "127.0.0.1", 8000, token)    # in the caller's process (tests)
    app = create_app(store, "demo", token)                               # the FastAPI app itself

app.py builds the app from reads.py (the read endpoints), control.py (scale, pause) and guard.py (headers,
the token before the body, the 64 KB cap); view.py is what it keeps in memory between polls of the store,
answers.py the answers it shares between clients, schema.py the API's bodies; server.py and process.py
the ways to serve it. docs/dashboard.md is the guide.
"""

from services.dashboard.app import create_app
from services.dashboard.process import DashboardProcess, start_in_process
from services.dashboard.server import DashboardServer, main, serve, start_in_thread

__all__ = ["DashboardProcess", "DashboardServer", "create_app", "main", "serve", "start_in_process", "start_in_thread"]
