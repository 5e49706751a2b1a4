"""The `cedge` command: composes the agent, controller, simulator, demo and benchmark CLIs.

It lives apart from `agent/` and `controller/` because it is the one place allowed to import
both (the agent must never import the controller)."""
