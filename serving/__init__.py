"""Serving: local HTTP endpoint, deployment targets (local, Azure ML), Spark batch scoring, feedback store."""
