"""What the receiver and the workers share: settings, models, the envelope, queue names, the CLI."""
