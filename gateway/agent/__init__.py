"""The agent beside each backend replica: ``gateway agent`` (see ``agent.py``)."""
