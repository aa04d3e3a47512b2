"""Lifecycle controller: reads the registry, evaluates candidates, promotes, archives, deploys, rolls back."""
