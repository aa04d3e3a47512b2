"""Azure ML managed online endpoints: settings, deployment bundle (model + score.py + environment), SDK entities,
and the blue/green `AzureMLTarget`."""
