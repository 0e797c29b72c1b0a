"""What every feature package uses: error messages and input checks, file and memory guards, model folders.

No nodes live here."""
