"""gradexp's recording inside other training frameworks (optional extras)."""
