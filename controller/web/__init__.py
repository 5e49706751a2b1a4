"""The operator console: a browser UI and JSON API served by the controller (issue 18).

Why inside the controller process: the console must show what the controller has stored the moment
it is stored, and operator actions must go through the controller's own dispatch path (signed
commands).  The web server runs in its own thread with its own event loop and its own read
connection to the store (SQLite WAL: readers never block the ingest writer); operator actions are
queued in the database and applied by the controller's dispatch thread (:mod:`controller.web.actions`).
"""
