"""Participants: the demo microservices the sagas call."""
