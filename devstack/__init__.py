"""Local development stack helpers (dev/test only, never packaged into the Lambda)."""
